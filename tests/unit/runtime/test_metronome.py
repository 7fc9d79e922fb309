"""The loop's shared 20 ms beat: its own timer when nothing drives it, a driver's phase when one does.

Run on the replay's virtual-time loop, so every instant below is exact (no wall-clock tolerance)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge.replay.virtual import VirtualTimeLoop
from bridge.runtime.metronome import Metronome, for_loop


def run(coro_fn):  # type: ignore[no-untyped-def]  # a test helper: returns what the coroutine returns
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(coro_fn())


def test_without_a_driver_chores_run_every_period_from_when_they_were_added() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        m = Metronome(loop, 0.02)
        t0 = loop.time()
        seen: list[float] = []
        remove = m.add(lambda: seen.append(round(loop.time() - t0, 6)))
        await asyncio.sleep(0.105)
        remove()
        await asyncio.sleep(0.1)  # removed: nothing more runs, and no timer is left behind
        assert m._timer is None
        return seen

    assert run(main) == [0.02, 0.04, 0.06, 0.08, 0.1]


def _driven_then_stopped(say_so: bool) -> tuple[list[float], Metronome, int]:
    """Fallback beats, a driver's five beats at 47, 67, ... 127 ms, then the driver stops (saying so, or not)."""

    async def main() -> tuple[list[float], Metronome, int]:
        loop = asyncio.get_running_loop()
        m = Metronome(loop, 0.02)
        t0 = loop.time()
        seen: list[float] = []
        m.add(lambda: seen.append(round(loop.time() - t0, 6)))
        await asyncio.sleep(0.045)  # fallback beats at 20 and 40 ms
        for k in range(5):
            await asyncio.sleep(0.002 if k == 0 else 0.02)
            m.beat()
        armed = m._timer
        if say_so:
            m.undriven()  # the hub's last port detached
        await asyncio.sleep(0.545)  # until 672 ms
        return seen, m, 0 if armed is None else round((armed.when() - t0) * 1000)

    return run(main)


def test_a_driver_takes_over_the_phase_and_the_timer_stops_waking() -> None:
    seen, m, watchdog_ms = _driven_then_stopped(say_so=True)
    # 47 is only 7 ms after the fallback's 40: skipped, and the fallback is pushed back so the driver's phase wins.
    # While driven the timer is a watchdog one hold (5 periods) after the beat that found it due (67 ms): never
    # re-armed on a beat. A driver that says it stopped is followed by the fallback 5 periods after its last beat.
    assert seen[:6] == [0.02, 0.04, 0.067, 0.087, 0.107, 0.127]
    assert seen[6:9] == [0.227, 0.247, 0.267] and len(seen) == 6 + 23
    assert m.driven_beats == 4 and watchdog_ms == 167


def test_a_driver_that_stops_without_a_word_is_replaced_within_the_watchdog() -> None:
    seen, m, _ = _driven_then_stopped(say_so=False)
    # the watchdog at 167 ms finds the last beat 40 ms old and looks again a hold after it: no beat is missed for
    # longer than a hold (well under pjsip's 500 ms INVITE retransmission), then every period
    assert seen[5:9] == [0.127, 0.227, 0.247, 0.267]
    assert len(seen) == 6 + 23 and m.driven_beats == 4


def test_a_kept_driver_arms_no_watchdog_and_its_stop_is_followed_a_hold_later() -> None:
    async def main() -> tuple[list[float], list[bool]]:
        loop = asyncio.get_running_loop()
        m = Metronome(loop, 0.02)
        m.kept()  # the native ports' keeper wakes the loop once a hold, whatever the ports do
        t0 = loop.time()
        seen: list[float] = []
        m.add(lambda: seen.append(round(loop.time() - t0, 6)))
        armed = []
        await asyncio.sleep(0.005)
        for _ in range(5):  # the driver's beats at 5, 25, ... 85 ms
            m.beat()
            await asyncio.sleep(0.02)
        armed.append(m._timer is not None)  # the first chore's timer found the driver recent: not re-armed
        await asyncio.sleep(0.3)  # a keeper's hold of silence would be filled by its own wake-ups: none here
        m.undriven()
        await asyncio.sleep(0.045)
        armed.append(m._timer is not None)
        return seen, armed

    seen, armed = run(main)
    # no beat of its own while driven (not even 300 ms without one: a kept driver never stops without a word);
    # told it stopped, the fallback beats at once (the last beat is more than a hold old), then every period
    assert seen[:5] == [0.005, 0.025, 0.045, 0.065, 0.085] and armed == [False, True]
    assert seen[5:] == [0.405, 0.425, 0.445]


def test_a_kept_driver_stopped_right_after_a_beat_is_followed_a_hold_later_whatever_the_instant() -> None:
    """The hub's last port detaches right after its beat (a call ends): the fallback's timer then fires exactly a
    hold after that beat, where the time since it, in floating point, can come out a hair under the hold."""

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        m = Metronome(loop, 0.06)
        m.kept()
        seen: list[float] = []
        m.add(lambda: seen.append(loop.time()))
        late: list[float] = []
        for k in range(60):  # driver beats at instants of many roundings
            await asyncio.sleep(0.0173 + k * 1e-4)
            m.beat()
            last = loop.time()
            m.undriven()
            n = len(seen)
            await asyncio.sleep(0.5)
            followed = seen[n:]
            late.append(round(followed[0] - last, 6) if followed else float("inf"))
            assert len(followed) >= 2, (k, last)  # then every period until a driver beats again
        return late

    assert set(run(main)) == {0.12}  # a hold: two periods of a 60 ms beat


def test_driver_beats_closer_than_three_quarters_of_a_period_are_skipped() -> None:
    async def main() -> list[bool]:
        loop = asyncio.get_running_loop()
        m = Metronome(loop, 0.02)
        m.add(lambda: None)
        out = [m.beat()]
        await asyncio.sleep(0.01)
        out.append(m.beat())  # a clock catching up: two ticks 10 ms apart
        await asyncio.sleep(0.006)
        out.append(m.beat())  # 16 ms after the first
        return out

    assert run(main) == [True, False, True]


def test_a_media_beat_of_60_ms_is_driven_without_fallback_beats_and_a_late_beat_still_counts() -> None:
    async def main() -> tuple[list[float], Metronome]:
        loop = asyncio.get_running_loop()
        m = Metronome(loop, 0.02)
        m.set_period(0.06)  # a worker beating every 3 media ticks
        t0 = loop.time()
        seen: list[float] = []
        m.add(lambda: seen.append(round(loop.time() - t0, 6)))
        for gap in (0.01, 0.06, 0.06, 0.08, 0.04, 0.06):  # the 4th wake-up was 20 ms late, the 5th on time
            await asyncio.sleep(gap)
            m.beat()
        m.undriven()  # its last port detached
        await asyncio.sleep(0.35)  # the driver stops: the fallback takes over at the new period
        return seen, m

    seen, m = run(main)
    # No fallback beat between driven ones 60-80 ms apart; a beat 40 ms after a late one is not a clock
    # catching up (that gap stays 3/4 of a 20 ms tick) and runs. Then the fallback: two periods after the last
    # driven beat, not five, and every 60 ms after.
    assert seen == [0.01, 0.07, 0.13, 0.21, 0.25, 0.31, 0.43, 0.49, 0.55, 0.61]
    assert m.driven_beats == 6 and m.min_gap_s == pytest.approx(0.015)
    with pytest.raises(ValueError, match="period_s"):
        m.set_period(0)


def test_a_chore_that_raises_is_counted_and_keeps_its_place(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> tuple[int, int, int]:
        loop = asyncio.get_running_loop()
        m = Metronome(loop, 0.02)
        good = 0

        def bad() -> None:
            raise RuntimeError("boom")

        def ok() -> None:
            nonlocal good
            good += 1

        m.add(bad)
        m.add(ok)
        await asyncio.sleep(0.065)
        return good, m.errors, m.beats

    with caplog.at_level(logging.ERROR, logger="bridge.runtime.metronome"):
        good, errors, beats = run(main)
    assert (good, errors, beats) == (3, 3, 3)
    assert "boom" in caplog.text


def test_beat_without_chores_does_nothing_and_for_loop_gives_one_per_loop() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        m = for_loop()
        assert for_loop(loop) is m and len(m) == 0
        assert m.beat() is False and m.beats == 0
        with pytest.raises(ValueError, match="period_s"):
            Metronome(loop, 0)

    async def fresh() -> Metronome:
        return for_loop()

    first, second = run(fresh), run(fresh)
    assert first is not second  # a new loop gets its own
    run(main)


def test_periodic_chores_ride_on_the_beat_without_a_timer_of_their_own() -> None:
    async def main() -> tuple[list[float], list[float], int]:
        loop = asyncio.get_running_loop()
        m = Metronome(loop, 0.02)
        t0 = loop.time()
        each: list[float] = []
        second: list[float] = []
        m.add(lambda: each.append(loop.time()))
        stop = m.every(0.1, lambda: second.append(round(loop.time() - t0, 6)))
        timers = len(loop._scheduled)  # type: ignore[attr-defined]
        await asyncio.sleep(0.305)
        stop()
        await asyncio.sleep(0.1)  # removed: it runs no more
        return second, each, timers

    second, each, timers = run(main)
    assert second == [0.1, 0.2, 0.3]  # on the first beat a period after the last run
    assert len(each) == 20 and timers == 1  # the beat's own timer only
