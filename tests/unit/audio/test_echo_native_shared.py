"""The C echo guard's shared parts (``bridge/native/echo.c``): the FFT's twiddles are the process's, one table per
size, and the working arrays the calling thread's. Guards of different sizes, interleaved on one thread or run on
many threads at once, must each decide exactly as a guard run alone."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from bridge.audio.echo import GuardSettings
from bridge.audio.echo_native import NativeEchoGuard, native_echo
from bridge.audio.frames import SAMPLES_PER_FRAME

pytestmark = pytest.mark.skipif(native_echo().lib is None, reason=f"no C echo guard: {native_echo().why}")

FRAMES = 120
# (settings, the line's delay in samples, its gain): transforms of several sizes
CASES = (
    (GuardSettings(), 800, 0.2),
    (GuardSettings(max_delay_ms=1000.0, window_ms=1000.0), 3000, 0.3),
    (GuardSettings(max_delay_ms=100.0, window_ms=100.0), 400, 0.5),
    (GuardSettings(max_delay_ms=20.0, window_ms=200.0), 40, 0.1),
)


def lines(seed: int, delay: int, gain: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    agent = (rng.standard_normal(SAMPLES_PER_FRAME * FRAMES) * 3000).astype("<i2")
    caller = (rng.standard_normal(SAMPLES_PER_FRAME * 30) * 2000).astype("<i2")
    line = np.concatenate((np.zeros(delay), agent[:-delay] * gain)).astype("<i2")
    line[SAMPLES_PER_FRAME * 70 : SAMPLES_PER_FRAME * 100] += caller
    return agent, line


class Run:
    """One guard over its line, a frame at a time, recording everything it says."""

    def __init__(self, case: int) -> None:
        settings, delay, gain = CASES[case]
        self.guard = NativeEchoGuard(settings)
        self.agent, self.line = lines(case, delay, gain)
        self.said: list[object] = []

    def step(self, i: int) -> None:
        part = slice(i * SAMPLES_PER_FRAME, (i + 1) * SAMPLES_PER_FRAME)
        heard = self.line[part].tobytes()
        self.guard.played(self.agent[part].tobytes())
        self.guard.heard(heard)
        self.said.append(self.guard.temper(heard))
        if i % 10 == 0:
            self.said += [self.guard.judge(), self.guard.estimate(), self.guard.estimate(window=8 * SAMPLES_PER_FRAME)]

    def all(self) -> list[object]:
        for i in range(FRAMES):
            self.step(i)
        return self.said


@pytest.fixture(scope="module")
def alone() -> list[list[object]]:
    return [Run(case).all() for case in range(len(CASES))]


def test_interleaved_sizes_on_one_thread_decide_as_alone(alone: list[list[object]]) -> None:
    runs = [Run(case) for case in (2, 3, 0, 1)]  # the smallest first: the thread's scratch grows mid-way
    for i in range(FRAMES):
        for run in runs:
            run.step(i)
    for case, run in zip((2, 3, 0, 1), runs, strict=True):
        assert run.said == alone[case], case


def test_guards_on_many_threads_decide_as_alone(alone: list[list[object]]) -> None:
    cases = [case for case in range(len(CASES)) for _ in range(3)]
    got: dict[int, list[object]] = {}
    start = threading.Barrier(len(cases))

    def work(k: int, case: int) -> None:
        run = Run(case)
        start.wait()
        got[k] = run.all()

    threads = [threading.Thread(target=work, args=(k, case)) for k, case in enumerate(cases)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, case in enumerate(cases):
        assert got[k] == alone[case], (k, case)


def test_one_guard_fed_from_two_threads_decides_as_on_one(alone: list[list[object]]) -> None:
    run = Run(0)
    for i in range(FRAMES):  # each frame from another thread: each borrows its own scratch
        t = threading.Thread(target=run.step, args=(i,))
        t.start()
        t.join()
    assert run.said == alone[0]
