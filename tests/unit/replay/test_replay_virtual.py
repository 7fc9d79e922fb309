"""Virtual time: sleeps and timeouts take no wall time, timers fire in order, a deadlock is reported."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from bridge.replay import virtual
from bridge.replay.virtual import VirtualTimeLoop, VirtualTimeStall

T = TypeVar("T")


def run(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(coro_fn())


def test_an_hour_of_sleeping_takes_no_time() -> None:
    waits: list[float | None] = []  # every timeout the loop asked the real selector to wait for

    async def main() -> float:
        loop = asyncio.get_running_loop()
        real = loop._selector._real  # type: ignore[attr-defined]  # the _VirtualSelector's real one
        select = real.select
        real.select = lambda timeout=None: (waits.append(timeout), select(timeout))[1]
        t0 = loop.time()
        for _ in range(3600):
            await asyncio.sleep(1.0)
        return loop.time() - t0

    assert run(main) == pytest.approx(3600.0)
    assert waits and set(waits) == {0}  # it polled, and never waited on the real clock


def test_timers_fire_in_order_at_their_virtual_time() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        seen: list[tuple[str, float]] = []
        done = asyncio.Event()
        loop.call_later(0.5, lambda: seen.append(("b", loop.time())))
        loop.call_later(0.2, lambda: seen.append(("a", loop.time())))
        loop.call_later(0.9, done.set)
        await done.wait()
        return seen

    assert run(main) == [("a", pytest.approx(0.2)), ("b", pytest.approx(0.5))]


def test_wait_for_times_out_in_virtual_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.Event().wait(), 30.0)
        return loop.time() - t0

    assert run(main) == pytest.approx(30.0)


def test_threadsafe_calls_still_wake_the_loop() -> None:
    async def main() -> str:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str] = loop.create_future()
        loop.run_in_executor(None, lambda: loop.call_soon_threadsafe(fut.set_result, "woken"))
        return await fut

    assert run(main) == "woken"


def test_a_deadlock_is_reported_not_hung(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(virtual, "STALL_S", 0.05)

    async def main() -> None:
        await asyncio.Event().wait()  # nothing will ever set it, and no timer is due

    with pytest.raises(VirtualTimeStall, match="no task is ready and no timer is set"):
        run(main)
