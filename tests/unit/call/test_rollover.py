"""Rollover in virtual time with fake sessions: when the next session is prepared, what it is told, a failed
preparation, and the retirement of a replaced session."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
from fakes.session import FakeSession

from bridge import events as ev
from bridge.call.rollover import RETIRE_DRAIN_S, ROLLOVER_MARGIN_S, Rollover
from bridge.errors import ConnectError
from bridge.replay.virtual import VirtualTimeLoop

T = TypeVar("T")


def virtual(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main())


def rollover(
    cap: float | None, opens: list[FakeSession | ConnectError]
) -> tuple[Rollover[FakeSession], list[ev.Report]]:
    reports: list[ev.Report] = []

    async def open_session(history: tuple[ev.AddText, ...]) -> FakeSession:
        await asyncio.sleep(0.2)  # a connect and a session.updated
        step = opens.pop(0)
        if isinstance(step, ConnectError):
            raise step
        step.history = history
        return step

    loop_time = lambda: asyncio.get_running_loop().time()  # noqa: E731  # the clock of the running (virtual) loop
    return Rollover(cap, open_session, reports.append, summary=lambda: "SUMMARY", clock=loop_time, name="c1"), reports


async def ticks(roll: Rollover[FakeSession], until_s: float) -> None:
    """Tick every 20 ms until ``until_s`` (virtual)."""
    loop = asyncio.get_running_loop()
    while loop.time() < until_s:
        roll.tick()
        await asyncio.sleep(0.02)


def test_the_next_session_is_prepared_one_margin_before_the_cap_and_told_the_summary() -> None:
    nxt = FakeSession("s2")

    async def main() -> tuple[float, Rollover[FakeSession], list[ev.Report]]:
        roll, reports = rollover(cap=10.0, opens=[nxt])
        margin = min(ROLLOVER_MARGIN_S, 0.3 * 10.0)
        await ticks(roll, 10.0 - margin - 0.1)
        assert not roll.ready and reports == []  # not yet
        await ticks(roll, 10.0 - margin + 0.5)
        return asyncio.get_running_loop().time(), roll, reports

    _, roll, reports = virtual(main)
    assert roll.ready and reports == [ev.RolloverReady()]
    assert nxt.history == (ev.AddText("SUMMARY", ev.Role.SYSTEM),) and nxt.sent == []  # it starts from the summary
    assert roll.take() is nxt and not roll.ready and roll.take() is None


def test_no_cap_no_rollover() -> None:
    async def main() -> Rollover[FakeSession]:
        roll, _ = rollover(cap=None, opens=[])  # opening one would fail: nothing left to open
        await ticks(roll, 30.0)
        return roll

    assert not virtual(main).ready


def test_a_failed_preparation_is_reported_and_tried_again_when_the_session_would_be_due_again() -> None:
    nxt = FakeSession("s2")

    async def main() -> tuple[list[float], list[ev.Report]]:
        roll, reports = rollover(cap=10.0, opens=[ConnectError(ev.ErrorClass.NETWORK, "refused", retryable=True), nxt])
        ready_at: list[float] = []
        loop = asyncio.get_running_loop()
        while not roll.ready:
            roll.tick()
            await asyncio.sleep(0.02)
        ready_at.append(loop.time())
        return ready_at, reports

    (ready_at,), reports = virtual(main)
    assert reports == [ev.RolloverFailed("refused"), ev.RolloverReady()]
    # first try at 7 s (cap 10 s - margin 3 s) fails at 7.2 s, where the age restarts: the next try starts 7 s later
    # (after the cap: recovery covers the cap then) and is ready 0.2 s on
    assert 14.4 <= ready_at < 14.5


def test_a_replaced_session_stays_open_for_the_transcripts_it_owes_then_closes() -> None:
    old = FakeSession("s1")
    kept: list[ev.Event] = []

    async def main() -> tuple[float, list[ev.Report]]:
        roll, reports = rollover(cap=10.0, opens=[])
        roll.retire(old, {"item_1", "item_2"}, kept.append)
        await asyncio.sleep(0.5)
        old.say(ev.CallerTranscript("item_1", "I want", final=False))
        old.say(ev.AudioChunk("r9", "item_9", b"\0\0"))  # nothing else it says is used
        old.say(ev.CallerTranscript("item_1", "I want a refund", final=True))
        await asyncio.sleep(0.5)
        assert old.closed_at is None  # item_2 is still owed
        old.say(ev.CallerTranscriptFailed("item_2", "no speech"))
        await asyncio.sleep(0)
        await asyncio.gather(*roll.stop())
        return asyncio.get_running_loop().time(), reports

    now, reports = virtual(main)
    assert [type(e).__name__ for e in kept] == ["CallerTranscript", "CallerTranscript", "CallerTranscriptFailed"]
    assert old.closed_at == now == 1.0 and old.sink is None and reports == []


def test_a_replaced_session_that_never_transcribes_is_closed_after_the_drain_and_the_turns_reported_lost() -> None:
    old, idle = FakeSession("s1"), FakeSession("s0")

    async def main() -> list[ev.Report]:
        roll, reports = rollover(cap=10.0, opens=[])
        roll.retire(idle, set(), lambda e: None)  # owes nothing: closed at once
        roll.retire(old, {"item_1"}, lambda e: None)
        await asyncio.sleep(RETIRE_DRAIN_S + 1)
        return reports

    reports = virtual(main)
    assert idle.closed_at == 0.0 and old.closed_at == RETIRE_DRAIN_S
    assert reports == [ev.CallerTurnLost(1, replaced=True)]


def test_stop_cancels_a_preparation_and_closes_what_is_retiring() -> None:
    old = FakeSession("s1")

    async def main() -> Rollover[FakeSession]:
        roll, _ = rollover(cap=1.0, opens=[FakeSession("s2")])
        await ticks(roll, 0.75)  # due at 0.7 s (a cap of 1 s, a margin of 0.3 s): preparing now (0.2 s to open)
        roll.retire(old, {"item_1"}, lambda e: None)
        await asyncio.sleep(0.1)  # retiring: waiting for item_1's transcript
        await asyncio.gather(*roll.stop(), return_exceptions=True)
        await asyncio.sleep(1.0)
        return roll

    roll = virtual(main)
    assert not roll.ready  # the preparation was cancelled before its session came
    assert (
        old.closed_at == pytest.approx(0.86) and old.sink is None
    )  # closed when the call stopped, not after the drain
