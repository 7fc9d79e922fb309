"""``bench calls`` CPU accounting: a process that is gone is left out, not counted as zero CPU; steal is reported."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.calls import _cpu_by_pid, cpu_seconds, machine_busy


@pytest.mark.slow  # a real process burns real CPU time
def test_cpu_of_a_process_that_exited_is_absent_not_zero() -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\ninput()\n"
    proc = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while cpu_seconds(proc.pid) < 0.3:  # it burns 0.3 s of CPU, then waits for a line
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        alive = _cpu_by_pid([proc.pid])
        assert alive[proc.pid] >= 0.3
    finally:
        proc.communicate(b"\n", timeout=10)
    # Gone: absent from the sample (the old accounting read 0 and turned the window's CPU negative).
    assert _cpu_by_pid([proc.pid]) == {}
    assert cpu_seconds(proc.pid) == 0.0


def test_machine_busy_counts_steal_as_busy_and_reports_it() -> None:
    # cpu  user nice system idle iowait irq softirq steal guest guest_nice
    stat = "cpu  100 0 50 800 30 0 5 15 0 0\ncpu0 1 2 3 4\n"
    busy, steal, total = machine_busy(stat)
    assert (busy, steal, total) == (170.0, 15.0, 1000.0)  # idle and iowait are the only time not busy
    busy, steal, total = machine_busy("cpu  100 0 50 800\n")  # an old kernel: no steal column
    assert (busy, steal, total) == (150.0, 0.0, 950.0)
    busy, steal, total = machine_busy()  # this machine's own counters
    assert 0 <= steal <= busy <= total


def test_unanswered_calls_are_scored_as_missing_and_say_why() -> None:
    """A call not up at the caller costs its whole window, and the step says what was missing (a set-up failure
    and a media stall look alike in the late count)."""
    from bench.calls import FRAMES_PER_S, Bench, Step

    step = Step("bridge", calls=3, processes=1, window_s=12.0)
    up = {"uri": "sip:4000@127.0.0.1:5070", "answered": True, "status": 200, "why": ""}
    up |= {"jb_lost": 3, "jb_empty": 1, "jb_discard": 0}
    rows = [
        up,
        {"uri": "sip:4000@127.0.0.1:5070", "answered": False, "status": None, "why": "not answered"},
        {"uri": "sip:4000@127.0.0.1:5070", "answered": False, "status": 200, "why": "no audio stream yet"},
    ]
    Bench._score_callers(step, rows)
    per_call = round(12.0 * FRAMES_PER_S)
    assert step.answered == 1
    assert step.out_late_or_missing == 2 + 2 * per_call  # (3 lost + 1 empty) / 2, then two whole windows
    assert step.unanswered_why == {"None: not answered": 1, "200: no audio stream yet": 1}
    assert step.late_by_target == {"5070": 2}


def test_late_frames_through_the_front_are_counted_by_the_worker_that_answered() -> None:
    """Every front call is placed to the same address: the answering Contact names the worker."""
    from bench.calls import Bench, Step

    step = Step("front", calls=2, processes=2, window_s=12.0)
    rows = [
        {"uri": "sip:4000@127.0.0.1:5060", "worker": "127.0.0.1:5062", "answered": True, "status": 200, "why": ""}
        | {"jb_lost": 4, "jb_empty": 2, "jb_discard": 0},
        {"uri": "sip:4000@127.0.0.1:5060", "worker": "", "answered": True, "status": 200, "why": ""}
        | {"jb_lost": 1, "jb_empty": 1, "jb_discard": 0},
    ]
    Bench._score_callers(step, rows)
    assert step.late_by_target == {"5062": 3, "5060": 1}  # no Contact known: the address called


@pytest.mark.parametrize(
    ("direct_passes", "front_passes", "ratio", "lower", "upper", "met"),
    [
        ((16, 32), (16, 32), 1.0, True, False, True),  # both passed every step: at least 1.0
        ((16, 32), (16,), 0.5, False, True, False),  # the direct path's real capacity is higher: at most 0.5
        ((16, 32, 40), (16, 32), 0.8, False, True, False),
        ((16,), (16,), 1.0, False, False, True),  # both failed at 32: a measured ratio
    ],
)
def test_the_fronts_ratio_says_when_it_is_only_a_bound(
    direct_passes: tuple[int, ...], front_passes: tuple[int, ...], ratio: float, lower: bool, upper: bool, met: bool
) -> None:
    from bench.calls import Step, _front_summary, max_clean

    ladder = sorted({16, 32, *direct_passes})
    largest = ladder[-1]

    def steps(path: str, passes: tuple[int, ...]) -> list[Step]:
        out = []
        for calls in ladder:
            s = Step(path, calls=calls, processes=calls // 4, window_s=12.0, expected_frames=600 * calls)
            s.answered = calls if calls in passes else calls - 1
            out.append(s)
        return out

    direct = max_clean(steps("bridge", direct_passes))
    summary = _front_summary(steps("front", front_passes), direct, largest)
    assert summary["front_ratio"] == ratio
    assert (summary["front_ratio_is_lower_bound"], summary["front_ratio_is_upper_bound"]) == (lower, upper)
    assert summary["goal_front_ratio_met"] is met


def test_an_upper_bound_at_or_over_the_goal_leaves_the_goal_undetermined() -> None:
    from bench.calls import Step, _front_summary

    front = [Step("front", calls=c, processes=c // 4, window_s=12.0, expected_frames=600 * c) for c in (36, 40)]
    front[0].answered, front[1].answered = 36, 39
    summary = _front_summary(front, 40, 40)  # the direct path passed 40, its largest step
    assert summary["front_ratio"] == 0.9 and summary["front_ratio_is_upper_bound"]
    assert summary["goal_front_ratio_met"] is None
