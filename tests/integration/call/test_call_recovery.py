"""Calls survive lost Realtime sessions and the service's session cap (real sockets to the emulator, fake phone leg).

The SIP-level versions (real pjsua2 calls) are in tests/integration/bridge/.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest
from fakes.leg import FakeLeg, wait_until

from bridge import events as ev
from bridge.call.session import CallOptions, CallReport, CallSession, Connector
from bridge.dialplan import Dialplan
from bridge.emulator import EmulatorServer
from bridge.emulator.session import SessionRecord
from bridge.realtime.client import RealtimeClient
from bridge.realtime.credentials import MintingSource
from bridge.realtime.dialects import BETA, GA, Dialect

PLAN = Dialplan(name="support", match=("100",), dialect="ga", greeting="Greet the caller briefly.")


def connector(emulator: EmulatorServer, dialect: Dialect, queries: list[str]) -> tuple[list[str], Connector]:
    """Connection n uses ``queries[n]`` (faults), later ones the last entry."""
    used: list[str] = []

    async def connect() -> RealtimeClient:
        query = queries[min(len(used), len(queries) - 1)]
        used.append(query)
        client = RealtimeClient(dialect, f"{emulator.base_url}?{query}", "sk-test-recovery")
        await client.connect()
        return client

    return used, connect


def _texts_sent(record: SessionRecord) -> list[str]:
    """The texts of the conversation items the bridge created in one emulator session (summaries, mostly)."""
    return [
        c.get("text", "")
        for e in record.received
        if e["type"] == "conversation.item.create"
        for c in e["item"].get("content", [])
    ]


def _count(session: CallSession, kind: str) -> int:
    return sum(1 for _, k, _ in session.report.timeline if k == kind)


async def converse(
    session: CallSession, leg: FakeLeg, turns: int, before_hangup: Callable[[], bool] | None = None
) -> CallReport:
    """The greeting, ``turns`` caller turns each answered, then the hang-up (once ``before_hangup`` holds, if given)."""
    task = asyncio.create_task(session.run())
    await wait_until(lambda: session.report.answered, what="answer")
    for i in range(turns + 1):
        # The greeting, then the reply to each turn, finished (however many sessions it took) and played out.
        # Counting replies, not just "no response open": the next one may still be unread on the socket.
        await wait_until(
            lambda i=i: (
                _count(session, "response_done") > i
                and session.playout.idle
                and session.playback.response_id is None
                and session.client is not None
            ),
            20,
            f"agent quiet before turn {i}",
        )
        if i < turns:
            leg.say(1.2)
            await wait_until(lambda i=i: _count(session, "speech_stopped") > i, 20, f"caller turn {i}")
    await asyncio.sleep(0.3)
    if before_hangup is not None:
        try:
            await wait_until(before_hangup, 10, "what the test waits for before the hang-up")
        except AssertionError as e:
            leg.stop()
            await asyncio.wait_for(task, 10)
            raise AssertionError(f"{e}: {session.report.timeline}") from None
    leg.stop()
    return await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("dialect", [BETA, GA], ids=lambda d: d.name)
async def test_a_drop_mid_answer_is_recovered_with_context(emulator: EmulatorServer, dialect: Dialect) -> None:
    used, connect = connector(
        emulator, dialect, ["speed=4&transcript_delay_ms=0&fault_after_deltas=3&drop_mid_response=2", "speed=4"]
    )
    leg = FakeLeg("drop-1")
    session = CallSession(leg, PLAN, dialect, connect)
    report = await converse(session, leg, turns=2)
    assert report.reconnects == 1 and len(used) == 2
    assert "RECOVERING" in report.phases and report.phases[-1] == "ENDED"
    assert report.end_reason.startswith("caller hung up")
    (gap,) = report.latency_ms["recovery_gap"]
    assert gap <= 1000
    # the new session got the summary with the caller's first turn, then was asked to resume the cut answer
    second = emulator.sessions[1]
    texts = _texts_sent(second)
    assert any("reconnected" in t and report.caller_transcript[0] in t for t in texts), texts
    creates = [e for e in second.received if e["type"] == "response.create"]
    assert "cut off" in json.dumps(creates[0])
    # and the conversation went on: the second caller turn was answered on the new session
    assert len(report.caller_transcript) == 2 and len(report.agent_transcript) >= 3


async def test_twenty_drops_across_concurrent_calls(emulator: EmulatorServer) -> None:
    """4 concurrent calls, 5 consecutive mid-response drops each: every call survives, every gap <= 1 s."""
    faults = (
        ["speed=4&transcript_delay_ms=0&fault_after_deltas=3&drop_mid_response=2"]
        + ["speed=4&transcript_delay_ms=0&fault_after_deltas=3&drop_mid_response=1"] * 4
        + ["speed=4"]
    )
    calls = []
    for i in range(4):
        used, connect = connector(emulator, GA if i % 2 else BETA, faults)
        leg = FakeLeg(f"drops-{i}")
        session = CallSession(leg, PLAN, GA if i % 2 else BETA, connect)
        calls.append((used, session, converse(session, leg, turns=2)))
    reports = await asyncio.gather(*(c[2] for c in calls))
    gaps = [g for r in reports for g in r.latency_ms["recovery_gap"]]
    assert len(gaps) == 20 and sum(r.reconnects for r in reports) == 20
    assert max(gaps) <= 1000, gaps
    for report in reports:
        assert report.end_reason.startswith("caller hung up"), report.end_reason
        assert len(report.caller_transcript) == 2


@pytest.mark.parametrize("dialect", [BETA, GA], ids=lambda d: d.name)
async def test_session_cap_rolls_over_without_a_gap(emulator: EmulatorServer, dialect: Dialect) -> None:
    # A 6 s cap: its margin (30 %, 1.8 s) holds a whole turn and answer (about 1.3 s here), so a turn boundary always
    # comes before the cap (at 4 s, a margin of 1.2 s, the cap could come first by the turns' phase alone).
    _, connect = connector(emulator, dialect, ["speed=4&session_max_s=6"])
    leg = FakeLeg("rollover")
    session = CallSession(leg, PLAN, dialect, connect, CallOptions(max_session_s=6.0))
    report = await converse(session, leg, turns=4)
    assert report.rollovers >= 1, report.timeline
    assert report.reconnects == 0 and "RECOVERING" not in report.phases  # handed over before the cap, no loss
    assert len(report.caller_transcript) == 4 and len(report.agent_transcript) >= 5, report.timeline
    assert leg.disconnected.is_set() and report.end_reason.startswith("caller hung up")
    # the next session was prepared with the summary before it took over
    assert any("new session" in t for t in _texts_sent(emulator.sessions[1]))


async def test_a_cap_that_cuts_an_answer_hands_it_to_the_ready_session(emulator: EmulatorServer) -> None:
    """The greeting outlasts the session cap: the next session is ready, but no turn boundary came. The cut answer
    goes on in the next session (the summary, then a response to resume it), with no recovery."""
    emulator.queue_next(count=4, annotations={"greeting": {"text": "A long welcome.", "duration_ms": 6000}})
    _, connect = connector(emulator, GA, ["speed=1&session_max_s=2"])
    leg = FakeLeg("cap-cut")
    session = CallSession(leg, PLAN, GA, connect, CallOptions(max_session_s=2.0))
    task = asyncio.create_task(session.run())
    await wait_until(lambda: session.report.rollovers >= 1, 10, "the rollover")
    await wait_until(lambda: _count(session, "response_started") >= 2, 5, "the resumed answer")
    leg.stop()
    report = await asyncio.wait_for(task, 10)
    notes = [(k, text) for _, k, text in report.timeline]
    swap = next(i for i, (k, text) in enumerate(notes) if k == "rollover")
    assert "the next one was ready" in notes[swap][1], notes  # the cap, not a turn boundary
    assert report.reconnects == 0 and "RECOVERING" not in report.phases
    second = emulator.sessions[1]
    kinds = [e["type"] for e in second.received]
    assert kinds.index("conversation.item.create") < kinds.index("response.create"), kinds  # summary, then resume
    (resume,) = [e for e in second.received if e["type"] == "response.create"]
    assert "cut off" in resume["response"]["instructions"]


async def test_an_expired_credential_at_reconnect_is_reissued_and_the_call_goes_on() -> None:
    """Minted secrets live 1 s at the service; our clock runs 10 s behind, so after a drop the cached secret is
    already expired there: the reconnect is refused (auth), the source is invalidated, a fresh secret connects."""
    key = "sk-test-long-lived-EXPIRY"
    async with EmulatorServer("127.0.0.1", 0, api_key=key, client_secret_ttl_s=1) as emulator:
        source = MintingSource(GA, emulator.base_url, key, clock=lambda: time.time() - 10)

        async def connect() -> RealtimeClient:
            client = RealtimeClient(GA, f"{emulator.base_url}?speed=4&drop_after_s=1.5", source)
            await client.connect()
            return client

        leg = FakeLeg("expiry")
        session = CallSession(leg, PLAN, GA, connect, CallOptions(credentials=source))
        report = await converse(session, leg, turns=2)
    assert source.invalidations >= 1 and source.issued >= 2, source.stats()
    refused = [e for e in report.timeline if e[1] == "reconnect_failed"]
    assert refused and "auth" in refused[0][2], report.timeline
    assert report.reconnects >= 1 and report.end_reason.startswith("caller hung up")
    assert max(report.latency_ms["recovery_gap"]) <= 1000
    assert len(report.caller_transcript) == 2  # the conversation went on after the re-issue


def _caller_transcript_ids(report: ev.Report, into: list[str]) -> None:
    if isinstance(report, ev.CallerSaid):
        into.append(report.item_id)


@pytest.mark.parametrize("dialect", [BETA, GA], ids=lambda d: d.name)
async def test_a_rollover_keeps_the_transcripts_the_old_session_still_owes(
    emulator: EmulatorServer, dialect: Dialect
) -> None:
    """The service transcribes a turn after committing it, here later than its answer takes to play (1.5 s against
    some 0.8 s), so the swap at that turn boundary comes first: the replaced session stays open until those
    transcripts arrive. The bridge rolls over as if the cap were 6 s (from 4.2 s, at the next turn boundary); the
    service's own cap is later, so a boundary missed under load is followed by the next one, never by the cap closing
    the session first (whose transcripts still owed are then lost: the next test's case)."""
    _, connect = connector(emulator, dialect, ["speed=4&session_max_s=12&transcript_delay_ms=6000"])
    leg = FakeLeg("late-transcripts")
    heard: list[str] = []
    session = CallSession(
        leg,
        PLAN,
        dialect,
        connect,
        CallOptions(max_session_s=6.0, listeners=[lambda r: _caller_transcript_ids(r, heard)]),
    )
    # the caller stays on until every turn's transcript is in (one owed at the hang-up is another case)
    report = await converse(session, leg, turns=4, before_hangup=lambda: len(heard) >= 4)
    assert report.rollovers >= 1 and report.reconnects == 0, report.timeline
    first = emulator.sessions[0]
    owed = [t["item_id"] for t in first.transcripts]  # the turns committed in the first session
    swap = next(t for t, kind, _ in report.timeline if kind == "rollover")
    late = [t for t, kind, _ in report.timeline if kind == "caller_transcript" and t > swap]
    assert owed and set(owed) <= set(heard), (owed, heard, report.timeline)
    assert late, report.timeline  # (one of them did come after the swap: the case at hand)
    assert first.closed  # and then it was closed
    assert "caller_turn_lost" not in {kind for _, kind, _ in report.timeline}


async def test_a_cap_right_after_the_callers_turn_asks_them_to_repeat_it(emulator: EmulatorServer) -> None:
    """The cap closes the session after the caller's turn was committed there, before its transcript or answer
    came: the next session cannot know what was said, so it asks the caller to say it again (no dead air, no
    answer to the wrong question), and the call goes on there."""
    slow = "speed=4&session_max_s=2.5&response_latency_ms=40000&transcript_delay_ms=40000"
    _, connect = connector(emulator, GA, [slow, "speed=4"])
    leg = FakeLeg("cap-after-turn")
    plan = Dialplan(name="support", match=("100",), dialect="ga")  # no greeting: the caller speaks first
    session = CallSession(leg, plan, GA, connect, CallOptions(max_session_s=2.5))
    task = asyncio.create_task(session.run())
    await wait_until(lambda: session.report.answered, what="answer")
    leg.say(0.6)
    await wait_until(lambda: _count(session, "speech_stopped") >= 1, 10, "the caller's turn")
    await wait_until(lambda: _count(session, "response_done") >= 1, 10, "the answer in the next session")
    leg.stop()
    report = await asyncio.wait_for(task, 10)
    kinds = [kind for _, kind, _ in report.timeline]
    assert "rollover" in kinds and "caller_turn_lost" in kinds, report.timeline
    assert report.reconnects == 0 and "RECOVERING" not in report.phases
    assert report.caller_transcript == []
    (ask,) = [e for e in emulator.sessions[1].received if e["type"] == "response.create"]
    assert "repeat" in ask["response"]["instructions"], ask


async def test_a_drop_before_the_answer_began_answers_the_callers_turn(emulator: EmulatorServer) -> None:
    """The socket drops after the caller's turn was committed and transcribed, before the answer began: the new
    session gets the turn in its summary and is asked to answer it."""
    slow = "speed=4&response_latency_ms=40000&transcript_delay_ms=0&drop_after_s=1.5"
    used, connect = connector(emulator, GA, [slow, "speed=4"])
    leg = FakeLeg("drop-thinking")
    plan = Dialplan(name="support", match=("100",), dialect="ga")
    session = CallSession(leg, plan, GA, connect)
    task = asyncio.create_task(session.run())
    await wait_until(lambda: session.report.answered, what="answer")
    leg.say(0.6)
    await wait_until(lambda: _count(session, "response_done") >= 1, 10, "the answer after the drop")
    leg.stop()
    report = await asyncio.wait_for(task, 10)
    assert report.reconnects == 1 and len(used) == 2
    assert report.phases[report.phases.index("RECOVERING") + 1] == "THINKING", report.phases
    assert len(report.caller_transcript) == 1 and report.agent_transcript, report.timeline
    second = emulator.sessions[1]
    texts = _texts_sent(second)
    assert any(report.caller_transcript[0] in t for t in texts), texts  # the turn, in the summary
    (ask,) = [e for e in second.received if e["type"] == "response.create"]
    assert "Answer their last turn" in ask["response"]["instructions"], ask
