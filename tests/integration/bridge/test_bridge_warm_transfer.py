"""A warm transfer (``transfer: {mode: warm}``, bridge/call/warm.py) with real SIP user agents on every leg.

Two calls at once on one worker (four call slots: two callers, two humans), the emulator as the model:

* **completed**: the caller (pjsua2 softphone) asks for a human; after the agent's line the caller hears the hold
  audio while the worker calls the human (``callbridge phone listen`` playing a 700 Hz tone). The human answers and
  hears the agent's briefing in the agent's voice (the emulator's 500 Hz) while the caller still hears the hold;
  then caller and human are joined in pjsua2's conference bridge, so the human hears the caller's 1020 Hz tone and
  the caller the human's 700 Hz tone (each checked by frequency); the record steps ringing, briefing and ends
  ``transferred (warm)`` with outcome completed, and the caller's hang-up ends the human's leg.
* **busy**: the human is SIPp answering 486 Busy Here; the hold stops, the model gets the system note and answers,
  the caller hears the agent again (500 Hz), and the record has outcome busy with the 486.

Then, on the same stack, a caller who hangs up while the human's phone (a listener that lets it ring) rings: the
human's leg is cancelled too, and the record has outcome caller_hung_up.

A transfer, once decided, happens: a caller who plays a tone over the agent's transfer line (a long line, paced at
real time) cuts the line, hears the hold audio at once, and is joined with the human (then hears the human's tone);
over SIPp's 486 the agent comes back and says so. The timeline has each step, in order.

A joined transfer owns its legs' media (bridge/sip/rtpguard.py, ``MediaClaims``): while caller and human talk, two
more calls come and go on the same worker, one after the other, from another loopback address (127.0.0.2: their
media guards admit only it), and both directions of the transfer's audio go on during and after them.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _bridge_helpers import (
    LOCALHOST,
    RATE,
    SILENCE_MS,
    BridgeStack,
    active_regions,
    assert_tone,
    band_dbfs,
    call,
    dbfs,
    finish,
    free_port,
    read_pcm_wav,
    run,
    segment,
    silence,
    softphone_args,
    speech,
    start,
    stop,
    timeline,
    tone,
    wait_sip_ready,
    write_pcm_wav,
)

from bridge.devkit.ports import can_bind

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).parent / "scenarios"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)"),
]

CALLER_HZ, HUMAN_HZ, LINE_HZ = 1020.0, 700.0, 500.0
LINE_MS = 800
WARM, BUSY, GONE, UNANSWERED, DECLINED = "3201", "3202", "3203", "3204", "3205"
OVER_OK, OVER_BUSY = "3206", "3207"
ASK = "Can I talk to a human agent, please?"


def warm_plan(name: str, number: str, target: str, ring_timeout_s: float = 5, brief: bool = True) -> dict[str, Any]:
    vad = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": SILENCE_MS}
    return {
        "name": name,
        "match": [number],
        "dialect": "ga",
        "transfer": {"mode": "warm", "target": target, "ring_timeout_s": ring_timeout_s, "brief": brief},
        "profile": {
            "instructions": "Transfer to a human on request.",
            "audio_format": "pcm16",
            "turn_detection": vad,
            "tools": ["transfer_to_human", "end_call"],
        },
    }


def asks_for_a_human(stack: BridgeStack, calls: int, line_ms: float = LINE_MS, speed: float | None = None) -> None:
    """The next ``calls`` sessions: the agent speaks at 500 Hz for ``line_ms`` and hands over when it hears ASK
    (``speed`` 1: its audio comes at real time, so a long line is still being said when the caller talks over it)."""
    pace = {} if speed is None else {"speed": speed}
    stack.emu.queue_next(
        count=calls,
        settings={"tone_hz": LINE_HZ, "min_reply_ms": line_ms, "max_reply_ms": line_ms, **pace},
        annotations=[
            {"hears": ASK, "reply": {"tool_call": {"name": "transfer_to_human", "arguments": {"reason": "x"}}}}
        ],
    )


def kinds_at(report: dict[str, Any], kind: str) -> list[float]:
    return [t for t, _ in timeline(report, kind)]


async def test_warm_transfer_joins_caller_and_human_or_brings_the_agent_back_when_busy(tmp_path: Path) -> None:
    human_port, busy_port, slow_port = free_port(), free_port(), free_port()
    plans = [
        warm_plan("warm-ok", WARM, f"sip:agent@{LOCALHOST}:{human_port}"),
        warm_plan("warm-busy", BUSY, f"sip:busy@{LOCALHOST}:{busy_port}"),
        warm_plan("warm-gone", GONE, f"sip:slow@{LOCALHOST}:{slow_port}"),
    ]
    human_play, human_wav = tmp_path / "human-play.wav", tmp_path / "human.wav"
    write_pcm_wav(human_play, tone(HUMAN_HZ, 1.0, -10.0))
    caller_play, caller_wav = tmp_path / "caller.wav", tmp_path / "caller-heard.wav"
    # the ask (0.3-1.5 s); the join comes at about 3 s; the caller's tone from 5 s on, for the human to hear
    write_pcm_wav(caller_play, silence(0.3), speech(0.0, 1.2), silence(3.5), tone(CALLER_HZ, 2.5, -10.0))
    busy_play, busy_wav = tmp_path / "busy-caller.wav", tmp_path / "busy-heard.wav"
    write_pcm_wav(busy_play, silence(0.3), speech(0.0, 1.2), silence(6.0))

    sipp = await start(
        str(SIPP), "-sf", str(SCENARIOS / "uas_busy.xml"), "-i", LOCALHOST, "-p", str(busy_port), "-m", "1",
        "-timeout", "40s", "-timeout_error", "-nostdin", cwd=tmp_path,
    )  # fmt: skip
    human = await start(
        sys.executable, "-m", "bridge", "phone", "listen", "--port", str(human_port), "--record", str(human_wav),
        "--play", str(human_play), "--loop", "--duration", "40", "--calls", "1", "--json",
    )  # fmt: skip
    slow = await start(  # the human who lets it ring: the caller hangs up first
        sys.executable, "-m", "bridge", "phone", "listen", "--port", str(slow_port), "--answer-after", "30",
        "--duration", "40", "--calls", "1", "--json",
    )  # fmt: skip
    try:
        await wait_sip_ready(human_port, proc=human)
        await wait_sip_ready(slow_port, proc=slow)
        async with BridgeStack(tmp_path, extra_plans=plans) as stack:
            asks_for_a_human(stack, calls=2)
            before = len(stack.emu.sessions)
            warm, busy = await asyncio.gather(
                call(stack.uri(WARM), play=caller_play, record=caller_wav, hangup_after=7.8),
                call(stack.uri(BUSY), play=busy_play, record=busy_wav, hangup_after=6.5),
            )
            assert warm.returncode == 0 and warm.report is not None, warm.describe()
            assert busy.returncode == 0 and busy.report is not None, busy.describe()
            ok_report = await stack.report(warm.report["call_id"])
            busy_report = await stack.report(busy.report["call_id"])
            sessions = stack.emu.sessions[before:]
            # then a caller who hangs up while the human's phone rings (call slots: two calls at a time)
            asks_for_a_human(stack, calls=1)
            gone = await call(stack.uri(GONE), play=busy_play, hangup_after=5.0)
            assert gone.returncode == 0 and gone.report is not None, gone.describe()
            gone_report = await stack.report(gone.report["call_id"])
        human_done = await finish(human, timeout=10)
        sipp_done = await finish(sipp, timeout=10)
        slow_done = await finish(slow, timeout=10)
    finally:
        for proc in (human, sipp, slow):
            if proc.returncode is None:
                await stop(proc)

    # -- completed: the record, then what each side heard ------------------------------------------------------
    assert ok_report["end_reason"] == "transferred (warm)", ok_report["end_reason"]
    assert ok_report["transfer"]["outcome"] == "completed" and ok_report["transfer"]["sip_code"] == 200
    (t_done,) = kinds_at(ok_report, "transfer_outcome")
    assert kinds_at(ok_report, "transfer")[0] <= kinds_at(ok_report, "hold_started")[0] <= t_done
    assert [s for _, s in timeline(ok_report, "ended")] and timeline(ok_report, "transfer_outcome")[0][1] == (
        "completed (200)"
    )
    assert [s for _, s in timeline(ok_report, "transfer_step")] == ["ringing", "briefing"]
    (t_brief,) = kinds_at(ok_report, "transfer_step")[1:]
    briefing = [t for t in kinds_at(ok_report, "response_started") if t_brief <= t <= t_done]
    assert briefing, "no briefing response between the human's answer and the join"
    # the human heard the agent's briefing (its voice: 500 Hz), then the caller's tone (not the hold)
    assert human_done.report is not None, human_done.describe()
    (answered,) = human_done.report["calls"]
    assert answered["answered"] is True  # ...and the leg ended with the caller's hang-up (the listener exited)
    heard, _ = read_pcm_wav(human_wav)
    regions = active_regions(heard, RATE, floor_dbfs=-45.0)
    assert len(regions) >= 2, f"the human heard {regions}"
    first, longest = regions[0], max(regions, key=lambda r: r.seconds)
    assert first.seconds >= LINE_MS / 1000 - 0.2 and first.end_s <= longest.start_s, regions
    assert_tone(segment(heard, RATE, first.start_s + 0.05, first.end_s - 0.05), RATE, LINE_HZ)
    assert longest.seconds >= 1.5, regions
    assert_tone(segment(heard, RATE, longest.start_s + 0.05, longest.end_s - 0.05), RATE, CALLER_HZ)
    # the caller heard the hold during the briefing, not the briefing: no 500 Hz tone in that window
    caller_heard, _ = read_pcm_wav(caller_wav)
    during = segment(caller_heard, RATE, briefing[0] / 1000 + 0.1, t_done / 1000 - 0.1)
    assert len(during) > RATE // 2 and dbfs(during) > -45.0, "the caller heard no hold audio during the briefing"
    assert float(np.median(band_dbfs(during, RATE, LINE_HZ))) < dbfs(during) - 10.0, "the caller heard the briefing"
    # the caller heard the human's tone after the join
    after = segment(caller_heard, RATE, t_done / 1000 + 0.5, 7.3)
    assert_tone(after, RATE, HUMAN_HZ)

    # -- busy: the typed outcome, the agent back with the note ---------------------------------------------------
    assert sipp_done.returncode == 0, sipp_done.stdout[-2000:] + sipp_done.stderr[-2000:]
    assert busy_report["transfer"]["outcome"] == "busy" and busy_report["transfer"]["sip_code"] == 486
    assert busy_report["end_reason"] != "transferred (warm)"
    (t_busy,) = kinds_at(busy_report, "transfer_outcome")
    order = [kind for _, kind, _ in busy_report["timeline"]]
    assert order.index("transfer") < order.index("hold_started") < order.index("hold_ended")
    assert order.index("hold_ended") < order.index("transfer_outcome")  # the hold stops, then the outcome
    back = [t for t in kinds_at(busy_report, "response_started") if t > t_busy]
    assert back, "the agent did not come back after the busy human"
    (noted,) = [
        s
        for s in sessions
        if any(
            "busy" in (c.get("text") or "")
            for e in s.received
            if e.get("type") == "conversation.item.create" and e["item"].get("type") == "message"
            for c in e["item"].get("content", [])
        )
    ]
    sent = [e for e in noted.received if e.get("type") != "input_audio_buffer.append"]
    at = next(i for i, e in enumerate(sent) if e.get("type") == "conversation.item.create" and "busy" in str(e))
    assert [e.get("type") for e in sent[at + 1 : at + 2]] == ["response.create"], sent[at:]  # the agent answers
    # the caller heard the agent's answer (500 Hz) after the hold
    busy_heard, _ = read_pcm_wav(busy_wav)
    assert_tone(segment(busy_heard, RATE, back[0] / 1000 + 0.1, back[0] / 1000 + 0.1 + LINE_MS / 1000 - 0.2), RATE,
                LINE_HZ)  # fmt: skip

    # -- the caller hangs up while the human's phone rings: both legs end ------------------------------------------
    assert gone_report["transfer"]["outcome"] == "caller_hung_up", gone_report["transfer"]
    assert kinds_at(gone_report, "transfer_outcome")
    assert slow_done.report is not None, slow_done.describe()  # the listener exited: its one call has ended
    (rang,) = slow_done.report["calls"]
    assert rang["answered"] is False and rang["hangup_by"] == "remote", rang


async def test_no_answer_and_a_decline_each_bring_the_agent_back_with_their_outcome(tmp_path: Path) -> None:
    """Two calls at once: one human lets it ring past the plan's ring_timeout_s (the bridge CANCELs), the other is
    SIPp answering 603 Decline. Each caller is taken off hold, the model gets the outcome's note and answers, and the
    caller hears the agent (500 Hz) again; the record has the typed outcome."""
    slow_port, decline_port = free_port(), free_port()
    plans = [
        warm_plan("warm-unanswered", UNANSWERED, f"sip:slow@{LOCALHOST}:{slow_port}", ring_timeout_s=2),
        warm_plan("warm-declined", DECLINED, f"sip:no@{LOCALHOST}:{decline_port}"),
    ]
    play = tmp_path / "caller.wav"
    write_pcm_wav(play, silence(0.3), speech(0.0, 1.2), silence(8.0))
    heard = {n: tmp_path / f"{n}-heard.wav" for n in (UNANSWERED, DECLINED)}
    sipp = await start(
        str(SIPP), "-sf", str(SCENARIOS / "uas_decline.xml"), "-i", LOCALHOST, "-p", str(decline_port), "-m", "1",
        "-timeout", "40s", "-timeout_error", "-nostdin", cwd=tmp_path,
    )  # fmt: skip
    slow = await start(
        sys.executable, "-m", "bridge", "phone", "listen", "--port", str(slow_port), "--answer-after", "30",
        "--duration", "40", "--calls", "1", "--json",
    )  # fmt: skip
    try:
        await wait_sip_ready(slow_port, proc=slow)
        async with BridgeStack(tmp_path, extra_plans=plans) as stack:
            asks_for_a_human(stack, calls=2)
            calls = await asyncio.gather(
                *(call(stack.uri(n), play=play, record=heard[n], hangup_after=8.5) for n in (UNANSWERED, DECLINED))
            )
            reports = {}
            for number, placed in zip((UNANSWERED, DECLINED), calls, strict=True):
                assert placed.returncode == 0 and placed.report is not None, placed.describe()
                reports[number] = await stack.report(placed.report["call_id"])
        sipp_done = await finish(sipp, timeout=10)
        slow_done = await finish(slow, timeout=10)
    finally:
        for proc in (sipp, slow):
            if proc.returncode is None:
                await stop(proc)

    assert sipp_done.returncode == 0, sipp_done.stdout[-2000:] + sipp_done.stderr[-2000:]
    assert slow_done.report is not None, slow_done.describe()
    (rang,) = slow_done.report["calls"]
    assert rang["answered"] is False, rang  # cancelled at the ring timeout
    expected = {UNANSWERED: ("no_answer", 0), DECLINED: ("declined", 603)}
    for number, report in reports.items():
        outcome, code = expected[number]
        assert (report["transfer"]["outcome"], report["transfer"]["sip_code"]) == (outcome, code), report["transfer"]
        assert report["end_reason"] != "transferred (warm)"
        order = [kind for _, kind, _ in report["timeline"]]
        assert order.index("hold_started") < order.index("hold_ended") < order.index("transfer_outcome")
        (t_out,) = kinds_at(report, "transfer_outcome")
        back = [t for t in kinds_at(report, "response_started") if t > t_out]
        assert back, f"{outcome}: the agent did not come back"
        caller_heard, _ = read_pcm_wav(heard[number])
        start_s = back[0] / 1000 + 0.1
        assert_tone(segment(caller_heard, RATE, start_s, start_s + LINE_MS / 1000 - 0.2), RATE, LINE_HZ)


OVER_LINE_MS, OVER_AT_S = 4000, 3.2  # the transfer line (from about 2.2 s) and the caller's tone over it


def steps(report: dict[str, Any]) -> list[tuple[float, str]]:
    """The transfer's steps in the timeline, in order (each transfer step by its name)."""
    kinds = {"transfer_decided", "barge_in", "transfer_line_interrupted", "transfer", "hold_started", "hold_ended",
             "transfer_outcome"}  # fmt: skip
    return [(float(t), s if k == "transfer_step" else k) for t, k, s in report["timeline"]
            if k in kinds or k == "transfer_step"]  # fmt: skip


async def test_a_caller_talking_over_the_transfer_line_is_still_transferred_or_told_the_human_is_busy(
    tmp_path: Path,
) -> None:
    """Two calls at once, each caller playing a 1020 Hz tone over the agent's 4 s transfer line: one human answers
    after ringing 2 s (no briefing: the join follows the answer), the other is SIPp ringing 2 s, then 486."""
    human_port, busy_port = free_port(), free_port()
    plans = [
        warm_plan("warm-over-ok", OVER_OK, f"sip:agent@{LOCALHOST}:{human_port}", brief=False),
        warm_plan("warm-over-busy", OVER_BUSY, f"sip:busy@{LOCALHOST}:{busy_port}"),
    ]
    human_play = tmp_path / "human-play.wav"
    write_pcm_wav(human_play, tone(HUMAN_HZ, 1.0, -10.0))
    play = tmp_path / "caller.wav"
    write_pcm_wav(play, silence(0.3), speech(0.0, 1.2), silence(OVER_AT_S - 1.5), tone(CALLER_HZ, 1.0, -10.0),
                  silence(8.0))  # fmt: skip
    heard = {n: tmp_path / f"{n}-heard.wav" for n in (OVER_OK, OVER_BUSY)}
    sipp = await start(
        str(SIPP), "-sf", str(SCENARIOS / "uas_busy_after_ringing.xml"), "-i", LOCALHOST, "-p", str(busy_port),
        "-m", "1", "-timeout", "40s", "-timeout_error", "-nostdin", cwd=tmp_path,
    )  # fmt: skip
    human = await start(
        sys.executable, "-m", "bridge", "phone", "listen", "--port", str(human_port), "--play", str(human_play),
        "--loop", "--answer-after", "2", "--duration", "40", "--calls", "1", "--json",
    )  # fmt: skip
    try:
        await wait_sip_ready(human_port, proc=human)
        async with BridgeStack(tmp_path, extra_plans=plans) as stack:
            asks_for_a_human(stack, calls=2, line_ms=OVER_LINE_MS, speed=1.0)
            placed = await asyncio.gather(
                *(call(stack.uri(n), play=play, record=heard[n], hangup_after=10.5) for n in (OVER_OK, OVER_BUSY))
            )
            reports = {}
            for number, done in zip((OVER_OK, OVER_BUSY), placed, strict=True):
                assert done.returncode == 0 and done.report is not None, done.describe()
                reports[number] = await stack.report(done.report["call_id"])
        human_done = await finish(human, timeout=10)
        sipp_done = await finish(sipp, timeout=10)
    finally:
        for proc in (human, sipp):
            if proc.returncode is None:
                await stop(proc)

    for number, report in reports.items():
        # the decision, the interruption and each step of the transfer, in order
        order = [k for _, k in steps(report)]
        assert order[:6] == ["transfer_decided", "barge_in", "transfer_line_interrupted", "transfer", "hold_started",
                             "ringing"], (number, order)  # fmt: skip
        assert order[-2:] == ["hold_ended", "transfer_outcome"], (number, order)
        assert report["barge_ins"] >= 1
        t_over = next(t for t, k in steps(report) if k == "transfer_line_interrupted")
        assert t_over / 1000 >= OVER_AT_S - 0.1, (number, t_over)  # the caller's tone cut the line
        # from the hold on the caller heard the hold audio, none of the agent's line (500 Hz)
        t_held, t_back = (next(t for t, k in steps(report) if k == kind) / 1000 for kind in ("hold_started",
                                                                                             "hold_ended"))  # fmt: skip
        caller_heard, _ = read_pcm_wav(heard[number])
        during = segment(caller_heard, RATE, t_held + 0.2, t_back - 0.1)
        assert len(during) > RATE // 4 and dbfs(during) > -45.0, f"{number}: no hold audio while held"
        assert float(np.median(band_dbfs(during, RATE, LINE_HZ))) < dbfs(during) - 10.0, f"{number}: heard the line"

    # -- the human answered: caller and human joined, the caller hears the human's tone ----------------------------
    ok = reports[OVER_OK]
    assert ok["end_reason"] == "transferred (warm)", ok["end_reason"]
    assert ok["transfer"]["outcome"] == "completed" and ok["transfer"]["sip_code"] == 200
    assert human_done.report is not None, human_done.describe()
    (answered,) = human_done.report["calls"]
    assert answered["answered"] is True
    (t_done,) = kinds_at(ok, "transfer_outcome")
    caller_heard, _ = read_pcm_wav(heard[OVER_OK])
    assert_tone(segment(caller_heard, RATE, t_done / 1000 + 0.5, t_done / 1000 + 2.5), RATE, HUMAN_HZ)

    # -- the human is busy: off hold, the agent comes back and says so ---------------------------------------------
    assert sipp_done.returncode == 0, sipp_done.stdout[-2000:] + sipp_done.stderr[-2000:]
    busy = reports[OVER_BUSY]
    assert busy["transfer"]["outcome"] == "busy" and busy["transfer"]["sip_code"] == 486
    assert busy["end_reason"] != "transferred (warm)"
    (t_busy,) = kinds_at(busy, "transfer_outcome")
    back = [t for t in kinds_at(busy, "response_started") if t > t_busy]
    assert back, "the agent did not come back after the busy human"
    busy_heard, _ = read_pcm_wav(heard[OVER_BUSY])
    assert_tone(segment(busy_heard, RATE, back[0] / 1000 + 0.2, back[0] / 1000 + 1.5), RATE, LINE_HZ)


OTHER_HOST = "127.0.0.2"  # the other calls' address: their media guards admit only it (and their offers' c=)


def assert_tone_throughout(x: Any, start_s: float, end_s: float, hz: float, what: str) -> None:
    """Every second of ``x`` from ``start_s`` to ``end_s`` is the tone ``hz``, above -45 dBFS."""
    assert end_s - start_s >= 2.0, f"{what}: only {end_s - start_s:.1f} s to check"
    at = start_s
    while at + 1.0 <= end_s:
        chunk = segment(x, RATE, at, at + 1.0)
        assert len(chunk) == RATE and dbfs(chunk) > -45.0, f"{what}: silence at {at:.1f}-{at + 1.0:.1f} s"
        assert_tone(chunk, RATE, hz)
        at += 1.0


@pytest.mark.skipif(not can_bind(OTHER_HOST), reason=f"{OTHER_HOST} is not usable here")
async def test_a_joined_transfer_keeps_both_directions_while_other_calls_come_and_go(tmp_path: Path) -> None:
    human_port = free_port()
    plans = [warm_plan("warm-held", WARM, f"sip:agent@{LOCALHOST}:{human_port}")]
    human_play, human_wav = tmp_path / "human-play.wav", tmp_path / "human.wav"
    write_pcm_wav(human_play, tone(HUMAN_HZ, 1.0, -10.0))
    caller_play, caller_wav = tmp_path / "caller.wav", tmp_path / "caller-heard.wav"
    # the ask, then the caller's tone from 3 s on, to the hang-up (the join comes at about 3 s)
    write_pcm_wav(caller_play, silence(0.3), speech(0.0, 1.2), silence(1.5), tone(CALLER_HZ, 30.0, -10.0))
    other_play = tmp_path / "other.wav"
    write_pcm_wav(other_play, silence(3.0))
    human = await start(
        sys.executable, "-m", "bridge", "phone", "listen", "--port", str(human_port), "--record", str(human_wav),
        "--play", str(human_play), "--loop", "--duration", "60", "--calls", "1", "--json",
    )  # fmt: skip
    try:
        await wait_sip_ready(human_port, proc=human)
        async with BridgeStack(tmp_path, extra_plans=plans) as stack:
            asks_for_a_human(stack, calls=1)
            before = len(stack.emu.sessions)
            began = time.monotonic()
            held = asyncio.create_task(call(stack.uri(WARM), play=caller_play, record=caller_wav, hangup_after=22.0))
            session = await stack.emu.wait_for_session(before, within_s=20)
            while session.types_sent().count("response.done") < 2:  # the transfer line, then the briefing
                assert not held.done(), "the call ended before the briefing"
                await asyncio.sleep(0.05)
            others = []  # the human's leg is up: the other calls come while it is (the join follows the briefing)
            for _ in range(2):  # one after the other: each new call's INVITE and guard, then its end
                args = softphone_args(stack.uri("3101"), play=other_play, hangup_after=2.5)
                other = await run(*args, "--host", OTHER_HOST, timeout=60)
                assert other.returncode == 0 and other.report is not None, other.describe()
                others.append(other)
            others_done = time.monotonic() - began
            assert not held.done(), "the transferred call ended before the other calls had come and gone"
            warm = await held
            assert warm.returncode == 0 and warm.report is not None, warm.describe()
            report = await stack.report(warm.report["call_id"])
        human_done = await finish(human, timeout=10)
    finally:
        if human.returncode is None:
            await stop(human)

    assert report["transfer"]["outcome"] == "completed", report["transfer"]
    (t_join,) = kinds_at(report, "transfer_outcome")
    joined = t_join / 1000
    assert human_done.report is not None, human_done.describe()
    # the caller heard the human (700 Hz) from the join to its hang-up, through both other calls and after them
    # (the caller's recording starts at its answer, a little after `began`: the windows start late, end early)
    caller_heard, _ = read_pcm_wav(caller_wav)
    end_s = len(caller_heard) / RATE
    assert others_done + 2.0 < end_s, f"the other calls ended at {others_done:.1f} s of {end_s:.1f}"
    assert_tone_throughout(caller_heard, joined + 0.5, end_s - 0.5, HUMAN_HZ, "the caller")
    # the human heard the briefing (LINE_MS), then the caller's 1020 Hz to the end of its recording, past both other
    # calls: the longest stretch of what it heard, every second of it after the briefing
    heard, _ = read_pcm_wav(human_wav)
    longest = max(active_regions(heard, RATE, floor_dbfs=-45.0), key=lambda r: r.seconds)
    assert longest.end_s >= len(heard) / RATE - 0.5 and longest.seconds >= others_done - joined + 2.0, longest
    after_briefing = longest.start_s + LINE_MS / 1000 + 0.7
    assert_tone_throughout(heard, after_briefing, longest.end_s - 0.2, CALLER_HZ, "the human")
