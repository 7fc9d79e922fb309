"""The echo guard in C (``bridge/native/echo.c``) against the Python guard on the same frames: every frame sent on,
every verdict and every path the same (the C guard is what calls run where it builds)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from bridge.audio import echo_native
from bridge.audio.echo import EchoGuard, Guard
from bridge.audio.echo_native import NativeEchoGuard, make_guard, native_echo
from bridge.audio.g711 import ulaw_decode, ulaw_encode
from bridge.audio.line import EchoingLine, LineEcho
from tests.unit.audio.test_echo import AGENT, CALLER, SILENT, frames, tone

pytestmark = pytest.mark.skipif(native_echo().lib is None, reason=f"no C echo guard: {native_echo().why}")


def both_on(agent: bytes, echo: LineEcho | None, caller: bytes = b"", caller_at: int = 0, drop_at: int = -1) -> int:
    """Play ``agent`` to both guards over one line (``echo`` None: a line that returns nothing but the caller),
    the caller saying ``caller`` from frame ``caller_at``; at frame ``drop_at`` two frames of silence are queued
    and taken back. Asserts that both send on the same audio and judge alike; returns the frames compared."""
    py, c = EchoGuard(), NativeEchoGuard()
    line = EchoingLine(echo) if echo is not None else None
    said = frames(caller)
    played = frames(agent)
    for i, out in enumerate(played):
        own = said[i - caller_at] if 0 <= i - caller_at < len(said) else SILENT
        back = ulaw_decode(ulaw_encode(line.step(out, own))) if line is not None else own
        for guard in (py, c):
            if i == drop_at:
                guard.played(SILENT)
                guard.played(SILENT)
                guard.unplayed(2)
            guard.played(out)
            guard.heard(back)
        a, b = np.frombuffer(py.temper(back), "<i2"), np.frombuffer(c.temper(back), "<i2")
        # the same decisions; the samples the same but for the last bit's rounding
        assert np.max(np.abs(a.astype(np.int32) - b), initial=0) <= 1, i
        if i % 3 == 0:
            va, vb = py.judge(), c.judge()
            assert (va.echo, va.speaking) == (vb.echo, vb.speaking), i
            assert (va.path is None) == (vb.path is None), i
            if va.path is not None and vb.path is not None:
                assert va.path.lag == vb.path.lag and va.path.level_db == pytest.approx(vb.path.level_db, abs=1e-6)
            assert va.residual_dbfs == pytest.approx(vb.residual_dbfs, abs=1e-6)
        held_py, held_c = py.path, c.path
        assert (held_py is None) == (held_c is None), i
        if held_py is not None and held_c is not None:
            assert held_py.lag == held_c.lag, i
            assert held_py.taps == pytest.approx(held_c.taps, abs=1e-9)
    assert py.counters() == c.counters()  # the same searches, full and coarse, on the same frames
    return len(played)


@pytest.mark.parametrize(("level", "delay", "noise"), [(-20, 20, None), (-14, 120, -55.0), (-10, 250, -55.0)])
def test_speech_with_a_caller_over_it(level: float, delay: float, noise: float | None) -> None:
    assert both_on(AGENT + AGENT, LineEcho(level, delay, noise), CALLER, caller_at=120) > 200


def test_a_tone_after_speech_and_frames_taken_back() -> None:
    assert both_on(AGENT[: 60 * 320] + tone(600, 1.5), LineEcho(-14, 120, None), drop_at=30) > 100


def test_a_soft_caller_on_a_line_without_echo() -> None:
    """The bench's case: no path is ever learnt; the search backs off, the level test and its exception decide."""
    assert both_on(tone(400, 4.0, -6.0), None, CALLER, caller_at=50) > 150


def test_the_bench_line_skips_the_full_search_in_both() -> None:
    """``bench calls``' case: an agent tone, the caller's speech over it, no echo. Both guards look coarsely, find
    no candidate and skip the full search, on the same frames."""
    py, c = EchoGuard(), NativeEchoGuard()
    said = frames(CALLER * 3)
    for i, out in enumerate(frames(tone(440, 6.0, -12.0))):
        back = said[i - 10] if 0 <= i - 10 < len(said) else SILENT
        for guard in (py, c):
            guard.played(out)
            guard.heard(back)
        assert py.temper(back) == c.temper(back), i
    tempered, full, skipped = c.counters()
    assert py.counters() == (tempered, full, skipped) and tempered == 300
    assert skipped >= 8 and full <= skipped // 4


def test_a_caller_who_stops_over_an_echoing_line() -> None:
    """The search backed off while the caller talks over the agent, then sought at once when the return falls."""
    talk = (np.random.default_rng(3).standard_normal(150 * 160) * 3000).astype("<i2").tobytes()  # never pauses
    assert both_on(AGENT + AGENT, LineEcho(-14, 120, -55.0), talk, caller_at=0) > 200


def test_estimate_alike_over_any_window() -> None:
    py, c = EchoGuard(), NativeEchoGuard()
    line = EchoingLine(LineEcho(-14, 80, -55.0))
    for out in frames(AGENT)[:80]:
        back = line.step(out, SILENT)
        for guard in (py, c):
            guard.played(out)
            guard.heard(back)
    for window in (None, 1280, 160):
        a, b = py.estimate(window=window), c.estimate(window=window)
        assert a is not None and b is not None and a.lag == b.lag == 640
        assert a.coherence == pytest.approx(b.coherence, abs=1e-9)
    with pytest.raises(ValueError, match=r"window must be 1\.\.2400 samples, got 9999"):
        c.estimate(window=9999)


def test_a_call_gets_the_c_guard_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    guard: Guard = make_guard(max_delay_ms=300.0)
    assert isinstance(guard, NativeEchoGuard) and guard.max_lag == 2400
    monkeypatch.setenv("CALLBRIDGE_NATIVE_AUDIO", "0")
    echo_native.native_echo.cache_clear()
    try:
        assert native_echo().why == "turned off by CALLBRIDGE_NATIVE_AUDIO=0"
        assert isinstance(make_guard(), EchoGuard)
    finally:
        echo_native.native_echo.cache_clear()


def onsets_on(agent: bytes, echo: LineEcho, caller: bytes = b"", caller_at: int = 0) -> list[int]:
    """The frames at which the C guard, hearing a line where the native uplink does (``cbe_uplink``), tells of the
    caller's onset over the agent by the call's rule (bridge/call/echo.py: two frames passed whole and loud) and
    then judges its window not echo (what the loop does when told: ``EchoGuarding._onset``)."""
    from bridge.call.echo import PASSED_DB, PASSED_FRAMES

    guard = NativeEchoGuard()
    hook = guard.c_uplink(True, (PASSED_FRAMES, PASSED_DB))
    assert hook is not None
    uplink = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p)(hook[0])
    out = ctypes.create_string_buffer(320)
    line, said, told = EchoingLine(echo), frames(caller), []
    for i, sent in enumerate(frames(agent)):
        own = said[i - caller_at] if 0 <= i - caller_at < len(said) else SILENT
        back = ulaw_decode(ulaw_encode(line.step(sent, own)))
        guard.played(sent)
        if uplink(hook[1], back, len(back) // 2, ctypes.addressof(out)) == 1 and not guard.judge().echo:
            told.append(i)
    return told


@pytest.mark.parametrize(("level", "delay"), [(-14, 120), (-10, 250), (-6, 160)])
def test_the_uplink_tells_of_the_callers_onset_over_the_agent_and_never_of_its_echo(level: float, delay: float) -> None:
    echo = LineEcho(level, delay, -55.0)
    assert onsets_on(AGENT + AGENT, echo) == []  # the agent's echo alone, a whole answer long
    told = onsets_on(AGENT + AGENT, echo, CALLER, caller_at=120)
    assert told and 120 <= told[0] <= 120 + 5, told  # within 100 ms of the caller's first frame


def test_the_uplink_tells_of_no_onset_while_the_agent_is_silent() -> None:
    silent = SILENT * (len(CALLER) // len(SILENT) + 40)
    assert onsets_on(silent, LineEcho(-14, 120, -55.0), CALLER, caller_at=20) == []
