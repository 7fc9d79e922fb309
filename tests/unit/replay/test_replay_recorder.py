"""Call recording (stereo WAV + aligned event log) and turning a recording back into a script."""

from __future__ import annotations

import json
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fakes.leg import SilentLeg

from bridge import events as ev
from bridge.call.recorder import AUDIO_FILE, EVENTS_FILE, RecordingLeg, read_recording
from bridge.replay.direct import DirectOptions, replay_direct, run_direct
from bridge.replay.from_recording import caller_segments, script_from_recording, split_dialects
from bridge.replay.script import load_script

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = REPO / "call_scripts"
FRAME = 320


class Source:
    def __init__(self) -> None:
        self.n = 0

    def pop_frame(self) -> bytes:
        self.n += 1
        return np.full(160, 1000 + self.n, dtype="<i2").tobytes()


def test_stereo_recording_is_frame_aligned_with_the_events(tmp_path: Path) -> None:
    now = [100.0]
    leg = SilentLeg()
    rec = RecordingLeg(leg, tmp_path / "rec", consent=True, clock=lambda: now[0], meta={"dialplan": "support"})
    got: list[bytes] = []
    rec.start_media(Source(), lambda pcm, t: got.append(pcm))
    assert leg.media is not None
    outbound, on_frame = leg.media
    # the media clock thread pulls agent frames; the loop thread delivers caller frames
    for i in range(50):
        worker = threading.Thread(target=outbound.pop_frame)
        worker.start()
        worker.join()
        on_frame(np.full(160, -(i + 1), dtype="<i2").tobytes(), 0.0)
        now[0] += 0.02
        if i == 24:
            rec.listener(ev.CallerSpeechStarted(500))
    rec.hangup()
    assert leg.hung_up and len(got) == 50  # the session still gets every caller frame
    assert rec.uplink_offload((1, 2)) is None  # recording: caller frames must reach the tap, not bypass it
    rec.listener(ev.CallEnded("caller hung up", "completed", ev.EndedBy.CALLER))  # closes the recording
    caller, agent, header, notes = read_recording(tmp_path / "rec")
    c, a = np.frombuffer(caller, "<i2"), np.frombuffer(agent, "<i2")
    assert len(c) == len(a) == 50 * 160
    assert c[24 * 160] == -25 and a[24 * 160] == 1025  # frame 24 of both sides at the same sample
    assert header["kind"] == "recording" and header["channels"] == ["caller", "agent"]
    assert header["dialplan"] == "support" and header["sample_rate"] == 8000
    speech = next(n for n in notes if n["kind"] == "speech_started")
    assert speech == {
        "t_ms": pytest.approx(500.0),
        "kind": "speech_started",
        "summary": "at 500 ms",
        "audio_start_ms": 500,
    }
    assert ev.decode(speech) == ev.CallerSpeechStarted(500)  # a note is the report it keeps
    # (500 ms = the position of frame 25 in audio.wav)
    assert notes[-2:] == [
        {"t_ms": pytest.approx(1000.0), "kind": "leg_hangup", "summary": "the bridge hung up"},
        {
            "t_ms": pytest.approx(1000.0),
            "kind": "ended",
            "summary": "caller hung up",
            "reason": "caller hung up",
            "outcome": "completed",
            "ended_by": "caller",
        },
    ]
    with wave.open(str(tmp_path / "rec" / AUDIO_FILE)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)


def test_without_consent_nothing_is_recorded(tmp_path: Path) -> None:
    leg = SilentLeg()
    rec = RecordingLeg(leg, tmp_path / "rec", consent=False)
    source, sink = Source(), (lambda pcm, t: None)
    rec.start_media(source, sink)
    assert leg.media == (source, sink)  # not even wrapped
    assert rec.uplink_offload((1, 2)) == "offload" and leg.offload_asked == (1, 2)  # the wrapped leg's own
    rec.listener(ev.CallEnded("caller hung up", "completed", ev.EndedBy.CALLER))
    assert rec.close() is None
    assert not (tmp_path / "rec").exists()


def test_caller_segments_follow_the_vad() -> None:
    from bridge.audio.wav import read_wav

    speech = read_wav(SCRIPTS / "barge_in" / "q1_returns.wav")
    pcm = bytes(16000) + speech + bytes(24000) + speech
    segments = caller_segments(pcm)
    assert len(segments) == 2
    assert 1000 <= segments[0][0] <= 1200 and segments[1][0] > segments[0][1] + 1500


def test_dialect_only_fields_move_to_overrides() -> None:
    plan = {"name": "x", "match": ["1"], "profile": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 6000}}}
    base, overrides = split_dialects(plan)
    assert "idle_timeout_ms" not in base["profile"]["turn_detection"]
    assert overrides == {"ga": {"profile": {"turn_detection": {"idle_timeout_ms": 6000}}}}


@pytest.mark.parametrize(
    ("name", "dialect"),
    [("barge_in", "ga"), ("dtmf_menu", "beta"), ("transfer", "ga"), ("network_drop", "beta")],
)
def test_a_recorded_call_becomes_a_script_with_the_same_verdict(tmp_path: Path, name: str, dialect: str) -> None:
    original = load_script(SCRIPTS / name)
    [before] = replay_direct([original], ["beta", "ga"])
    run_direct(original, dialect, DirectOptions(record_dir=tmp_path / "recordings"))
    recording = tmp_path / "recordings" / f"{name}-{dialect}"
    assert (recording / AUDIO_FILE).exists() and (recording / EVENTS_FILE).exists()
    path = script_from_recording(recording, tmp_path / "scripts" / f"rec_{name}")
    data = yaml.safe_load(path.read_text())
    assert data["name"] == f"rec_{name}"
    spoken = [t for t in original.turns if t.say]
    assert len([t for t in data["turns"] if "say" in t]) == len(spoken)
    recorded = load_script(path.parent)
    [after] = replay_direct([recorded], ["beta", "ga"])
    assert (after.verdict, after.reasons) == (before.verdict, [])
    assert after.verdict == "same"
    # the recorded script reproduces what the bridge did
    for d in ("beta", "ga"):
        a, b = before.runs[d].report, after.runs[d].report
        assert a["caller_transcript"] == b["caller_transcript"]
        assert [c["name"] for c in a["tool_calls"]] == [c["name"] for c in b["tool_calls"]]
        assert a["barge_ins"] == b["barge_ins"] and a["dtmf"] == b["dtmf"] and a["reconnects"] == b["reconnects"]
        assert before.runs[d].ended_by == after.runs[d].ended_by


def test_from_recording_refuses_to_overwrite(tmp_path: Path) -> None:
    original = load_script(SCRIPTS / "question_answer")
    run_direct(original, "beta", DirectOptions(record_dir=tmp_path))
    out = tmp_path / "script"
    script_from_recording(tmp_path / "question_answer-beta", out)
    from bridge.errors import ConfigError

    with pytest.raises(ConfigError, match="pass --force"):
        script_from_recording(tmp_path / "question_answer-beta", out)
    script_from_recording(tmp_path / "question_answer-beta", out, overwrite=True)
    header = json.loads((tmp_path / "question_answer-beta" / EVENTS_FILE).read_text().splitlines()[0])
    assert header["dialplan"]["name"] == "support" and header["dialect"] == "beta"


def test_a_secret_the_recording_masked_is_the_named_plans(tmp_path: Path) -> None:
    from bridge.call.recorder import recorded_plan
    from bridge.dialplan import load_dialplan
    from bridge.replay.from_recording import HEADER_ONLY, plan_reference

    plans = tmp_path / "plans"
    plans.mkdir()
    data = yaml.safe_load((SCRIPTS.parent / "dialplans" / "orders.yaml").read_text())
    data["orchestrator"]["url"] = "http://127.0.0.1:9000/turn?token=s3cret"
    (plans / "orders.yaml").write_text(yaml.safe_dump(data))
    header = recorded_plan(load_dialplan(plans / "orders.yaml").model_dump(mode="json", exclude={"source_file"}))
    assert "s3cret" not in json.dumps(header) and "token=****" in json.dumps(header)
    recorded = {k: v for k, v in header.items() if k not in HEADER_ONLY}
    assert plan_reference(recorded, "ga", plans) == ("orders", {})  # not the masked URL as an override
    recorded["orchestrator"] = {**recorded["orchestrator"], "timeout_ms": 900}  # what the call really ran with
    assert plan_reference(recorded, "ga", plans) == ("orders", {"ga": {"orchestrator": {"timeout_ms": 900}}})


def test_a_script_that_would_not_load_leaves_nothing_behind(tmp_path: Path) -> None:
    run_direct(load_script(SCRIPTS / "question_answer"), "ga", DirectOptions(record_dir=tmp_path))
    from bridge.errors import ConfigError

    out = tmp_path / "scripts" / "new"
    with pytest.raises(ConfigError) as refused:  # a dialplan nobody has: the script does not load
        script_from_recording(tmp_path / "question_answer-ga", out, dialplan="nowhere")
    assert refused.value.source == str(out / "script.yaml") and refused.value.field == "dialplan"
    assert list((tmp_path / "scripts").iterdir()) == []  # no script.yaml, no turn audio, no draft
    old = tmp_path / "kept"
    script_from_recording(tmp_path / "question_answer-ga", old)
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    with pytest.raises(ConfigError):
        script_from_recording(tmp_path / "question_answer-ga", old, dialplan="nowhere", overwrite=True)
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before  # a refused --force keeps the old script


class Ring:
    """A native port's ring as the playout buffer sees it: the frames it holds before the wire."""

    def __init__(self) -> None:
        self.held = 3
        self.flushed = 0

    def flush_out(self) -> int:
        self.flushed, self.held = self.held, 0
        return self.flushed

    def depth(self) -> int:
        return self.held

    def drop_newest(self, frames: int) -> int:
        return 0

    def top_up(self) -> None: ...


def test_a_barge_in_on_a_recorded_call_still_flushes_the_media_ports_ring(tmp_path: Path) -> None:
    from bridge.audio.playout import PlayoutBuffer

    leg = SilentLeg()
    rec = RecordingLeg(leg, tmp_path / "rec", consent=True)
    playout = PlayoutBuffer()
    rec.start_media(playout, lambda pcm, t: None)
    assert leg.media is not None
    outbound = leg.media[0]
    ring = Ring()
    outbound.set_downstream(ring)  # what the native port does with the source it is given
    playout.push("item_1", np.full(160 * 10, 500, dtype="<i2").tobytes())
    assert outbound.pop_frame() != bytes(FRAME)  # the agent's audio, taken for the ring
    ring.held = 1  # the frame taken is in the ring, not sent yet
    playout.flush()
    assert ring.flushed == 1  # the frames queued in C are dropped at the barge-in, recorded or not
    assert not rec.agent  # ... and the recording forgets them: never sent, never heard
    assert outbound.pop_frame() == bytes(FRAME)  # silence after the barge-in
    leg.media[1](np.full(160, 7, dtype="<i2").tobytes(), 0.0)  # the tick that sends it
    rec.listener(ev.CallEnded("caller hung up", "completed", ev.EndedBy.CALLER))
    caller, agent, _, _ = read_recording(tmp_path / "rec")
    assert len(caller) == len(agent) == FRAME and agent == bytes(FRAME)  # the flushed frame is not in it


def test_a_beats_block_is_recorded_as_its_frames_and_a_flush_takes_the_unsent_ones_back(
    tmp_path: Path, new_playout: Callable[..., Any]
) -> None:
    """The native port takes a beat's frames in one block: the recording keeps them frame by frame beside the
    caller's ticks, and a barge-in's flush takes out the ones the port still held (with either playout)."""
    from bridge.call.leg import pop_block

    leg = SilentLeg()
    rec = RecordingLeg(leg, tmp_path / "rec", consent=True)
    playout = new_playout()
    rec.start_media(playout, lambda pcm, t: None)
    assert leg.media is not None
    outbound, on_frame = leg.media
    ring = Ring()
    outbound.set_downstream(ring)
    agent = np.arange(1, 160 * 10 + 1, dtype="<i2").tobytes()
    playout.push("item_1", agent)
    assert pop_block(outbound, 3) == agent[: 3 * FRAME]  # one call: three frames for the port's ring
    assert list(rec.agent) == [agent[k * FRAME : (k + 1) * FRAME] for k in range(3)]
    on_frame(np.full(160, 7, dtype="<i2").tobytes(), 0.0)  # the tick that sends the first
    ring.held = 2  # the other two wait in the port
    assert playout.flush().played_ms == 20
    assert not rec.agent and ring.flushed == 2
    rec.listener(ev.CallEnded("caller hung up", "completed", ev.EndedBy.CALLER))
    caller, recorded, _, _ = read_recording(tmp_path / "rec")
    assert len(caller) == FRAME and recorded == agent[:FRAME]


def test_the_recording_is_on_disk_and_playable_while_the_call_goes_on(tmp_path: Path) -> None:
    from bridge.call.recorder import CHUNK_TICKS

    now = [0.0]
    leg = SilentLeg()
    rec = RecordingLeg(leg, tmp_path / "rec", consent=True, clock=lambda: now[0], pause_on_keys=True)
    rec.start_media(Source(), lambda pcm, t: None)
    assert leg.media is not None
    outbound, on_frame = leg.media
    tone = np.full(160, 3000, dtype="<i2").tobytes()

    def ticks(n: int) -> None:
        for _ in range(n):
            outbound.pop_frame()
            on_frame(tone, now[0])
            now[0] += 0.02

    ticks(CHUNK_TICKS * 2 + 10)  # 2.2 s: two chunks written, 10 frames in memory
    rec.listener(ev.KeyPressed("4", ev.DtmfSource.RFC4733))  # PCI pause: silence from here
    ticks(CHUNK_TICKS)
    assert rec.held_bytes < 64 * 1024  # a chunk at most, whatever the length
    deadline = time.monotonic() + 5
    frames = 0
    while True:  # the writer thread has the chunks: the file plays now, before the call ends
        if (tmp_path / "rec" / AUDIO_FILE).exists():
            try:
                with wave.open(str(tmp_path / "rec" / AUDIO_FILE)) as w:
                    frames = w.getnframes()
            except (EOFError, wave.Error):
                pass  # created a moment ago, its header not written yet: look again
        if frames >= CHUNK_TICKS * 3 * 160 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert frames == CHUNK_TICKS * 3 * 160
    events = (tmp_path / "rec" / EVENTS_FILE).read_text().splitlines()
    assert json.loads(events[0])["kind"] == "recording" and json.loads(events[-1])["kind"] == "dtmf"
    now[0] += 3.0  # the pause ends 3 s after the last key
    ticks(10)
    rec.listener(ev.CallEnded("caller hung up", ev.CallOutcome.COMPLETED, ev.EndedBy.CALLER))
    caller, agent, _, _ = read_recording(tmp_path / "rec")
    c, a = np.frombuffer(caller, "<i2").reshape(-1, 160), np.frombuffer(agent, "<i2").reshape(-1, 160)
    assert len(c) == len(a) == CHUNK_TICKS * 3 + 20  # one frame per tick on both channels
    paused = slice(CHUNK_TICKS * 2 + 10, CHUNK_TICKS * 3 + 10)
    assert (c[: CHUNK_TICKS * 2 + 10] == 3000).all() and (c[paused] == 0).all() and (a[paused] == 0).all()
    assert (c[-10:] == 3000).all() and (a[-10:] != 0).all()  # recording again after the pause


def test_a_dead_workers_recording_is_finished_playable_up_to_its_last_whole_frame(tmp_path: Path) -> None:
    from bridge.call.recorder import finish_recording, wav_header

    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / AUDIO_FILE).write_bytes(wav_header(640) + bytes(640) + bytes(6))  # a second chunk cut short by the kill
    (rec / EVENTS_FILE).write_text('{"kind": "recording"}\n{"t_ms": 10, "kind": "barge_in", "summary": ""}\n{"t_m')
    assert finish_recording(rec, "worker died")
    caller, agent, header, notes = read_recording(rec)
    assert len(caller) == len(agent) == 320 + 2  # every whole stereo sample on disk, the cut one left out
    assert header == {"kind": "recording"}
    assert [n["kind"] for n in notes] == ["barge_in", "ended"]
    assert notes[-1] == {
        "t_ms": pytest.approx(20.1),
        **ev.as_json(ev.CallEnded("worker died", ev.CallOutcome.FAILED, ev.EndedBy.FAULT)),
    }
    assert notes[-1]["outcome"] == "failed" and notes[-1]["ended_by"] == "fault"
    assert not finish_recording(tmp_path / "none", "worker died")


def _unannotated(tmp_path: Path) -> Path:
    """question_answer without what the emulator hears or answers: it transcribes a placeholder
    ("[caller speech 1.9 s]") and echoes it back."""
    import shutil

    target = tmp_path / "unannotated"
    shutil.copytree(SCRIPTS / "question_answer", target)
    data = yaml.safe_load((target / "script.yaml").read_text())
    for turn in data["turns"]:
        turn.pop("hears", None)
        turn.pop("reply", None)
    data["expect"] = {}
    (target / "script.yaml").write_text(yaml.safe_dump(data))
    return target


def test_keywords_come_from_real_speech_only_and_the_plan_is_named(tmp_path: Path) -> None:
    run = run_direct(load_script(_unannotated(tmp_path)), "ga", DirectOptions(record_dir=tmp_path / "rec"))
    caller_lines, agent_lines = run.report["caller_transcript"], run.report["agent_transcript"]
    assert caller_lines and all(line.startswith("[caller speech ") for line in caller_lines)  # placeholders only
    assert any("[caller speech " in line for line in agent_lines)  # the echo of one
    path = script_from_recording(tmp_path / "rec" / "unannotated-ga", tmp_path / "script")
    data = yaml.safe_load(path.read_text())
    expect = data["expect"]
    assert "caller_keywords" not in expect  # the caller said nothing but a placeholder
    real = [line for line in agent_lines if "[" not in line]
    assert expect["agent_keywords"] and all(any(w in line for line in real) for w in expect["agent_keywords"])
    assert not [w for w in expect["agent_keywords"] if w.lower() in ("caller", "speech", "heard")]
    # the plan by its name, not pasted
    assert data["dialplan"] == "support" and "dialect_overrides" not in data
    assert "instructions" not in path.read_text() and "transfer_target" not in path.read_text()
    assert load_script(path.parent).plan("ga").name == "support"


def test_accidental_expectations_are_left_out_unless_asked(tmp_path: Path) -> None:
    run_direct(load_script(SCRIPTS / "question_answer"), "beta", DirectOptions(record_dir=tmp_path / "rec"))
    recording = tmp_path / "rec" / "question_answer-beta"
    lean = yaml.safe_load(script_from_recording(recording, tmp_path / "lean").read_text())["expect"]
    assert set(lean) == {"caller_keywords", "agent_keywords", "ended_by"}, lean  # what the call did
    kept = yaml.safe_load(script_from_recording(recording, tmp_path / "kept", keep_expectations=True).read_text())
    assert {k: kept["expect"][k] for k in ("tool_calls", "barge_ins", "max_errors", "end_reason")} == {
        "tool_calls": [],
        "barge_ins": 0,
        "max_errors": 0,
        "end_reason": "caller hung up",
    }
    assert kept["expect"]["phases_visited"] == ["LISTENING", "THINKING", "SPEAKING"]


def test_what_the_recorded_call_set_apart_from_the_named_plan_is_an_override_of_its_dialect(tmp_path: Path) -> None:
    run_direct(load_script(SCRIPTS / "idle_timeout"), "ga", DirectOptions(record_dir=tmp_path / "rec"))
    path = script_from_recording(tmp_path / "rec" / "idle_timeout-ga", tmp_path / "script")
    data = yaml.safe_load(path.read_text())
    assert data["dialplan"] == "support"
    assert data["dialect_overrides"] == {"ga": {"profile": {"turn_detection": {"idle_timeout_ms": 6000}}}}
    [result] = replay_direct([load_script(path.parent)], ["beta", "ga"])
    assert "GA: IdleTimeout x1 (beta had none)" in result.differences  # the recorded GA-only behaviour replays


@pytest.mark.parametrize("name", ["question_answer", "idle_timeout"])
def test_a_script_from_a_recording_replays_its_own_keywords(tmp_path: Path, name: str) -> None:
    """Recorded in GA on the support rollout's safe variant (gpt-realtime-2.1: a preamble, then the answer, as two
    message items of one response; idle_timeout: GA's idle timeout prompts the caller): the script written from the
    recording expects keywords, and its replay says every one of them, in both dialects."""
    run_direct(load_script(SCRIPTS / name).on_safe_variant(), "ga", DirectOptions(record_dir=tmp_path / "rec"))
    path = script_from_recording(tmp_path / "rec" / f"{name}-ga", tmp_path / "script")
    data = yaml.safe_load(path.read_text())
    expect = data["expect"]
    assert expect["caller_keywords"] and expect["agent_keywords"], expect
    [result] = replay_direct([load_script(path.parent).on_safe_variant()], ["beta", "ga"])
    for dialect, run in result.runs.items():
        checks = {c.name: c for c in run.checks}
        for key in ("caller_keywords", "agent_keywords"):
            assert checks[key].ok and checks[key].detail == f"found {expect[key]}", (dialect, checks[key])
        assert run.ok, (dialect, [c for c in run.checks if not c.ok])
    assert result.verdict in {"same", "differs"}, result.reasons  # idle_timeout: GA's own prompt differs, as recorded
    replies = [turn["reply"]["text"] for turn in data["turns"] if "reply" in turn]
    assert replies and "Let me check that for you." not in replies  # the answer, not the recorded model's preamble
