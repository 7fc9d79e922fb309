"""The echo guard on synthetic lines: the agent's own audio returned 10-20 dB down and 20-250 ms late (with and
without line noise, through G.711) is echo; a caller's voice over it is the caller."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.echo import MAX_SEEK_FRAMES, EchoGuard, EchoPath, GuardSettings, dbfs, pcm
from bridge.audio.frames import BYTES_PER_FRAME_PCM16, SAMPLES_PER_FRAME
from bridge.audio.g711 import ulaw_decode, ulaw_encode
from bridge.audio.line import EchoingLine, LineEcho
from bridge.audio.wav import read_wav

SCRIPTS = Path(__file__).resolve().parents[3] / "call_scripts"
AGENT = read_wav(SCRIPTS / "barge_in" / "q1_returns.wav")  # the agent's speech (any voice the caller did not make)
CALLER = read_wav(SCRIPTS / "barge_in" / "q2_canada.wav")
SILENT = bytes(BYTES_PER_FRAME_PCM16)


def frames(audio: bytes) -> list[bytes]:
    step = BYTES_PER_FRAME_PCM16
    return [audio[i : i + step] for i in range(0, len(audio) - step + 1, step)]


def tone(hz: float, seconds: float, dbfs_peak: float = -12.0) -> bytes:
    t = np.arange(round(8000 * seconds)) / 8000.0
    return np.round(32767 * 10 ** (dbfs_peak / 20) * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def run_line(
    guard: EchoGuard, agent: bytes, line: EchoingLine, caller: bytes = b"", caller_at: int = 0
) -> Iterator[int]:
    """Play ``agent`` to a caller on ``line`` (who says ``caller`` from frame ``caller_at``); yield after each
    frame the bridge heard, with its index."""
    said = frames(caller)
    for i, heard in enumerate(frames(agent)):
        guard.played(heard)
        own = said[i - caller_at] if 0 <= i - caller_at < len(said) else SILENT
        back = ulaw_decode(ulaw_encode(line.step(heard, own)))  # the line is G.711 (ITU-T G.711 µ-law)
        guard.heard(back)
        yield i


CASES = [(level, delay, noise) for level in (-20, -14, -10) for delay in (20, 120, 250) for noise in (None, -55.0)]


@pytest.mark.parametrize(("level", "delay", "noise"), CASES)
def test_returned_agent_speech_is_echo(level: float, delay: float, noise: float | None) -> None:
    guard = EchoGuard()
    line = EchoingLine(LineEcho(level, delay, noise))
    verdicts = [guard.judge() for i in run_line(guard, AGENT, line) if i >= 10 and i % 8 == 0]
    assert verdicts and all(v.echo for v in verdicts), [(v.inbound_dbfs, v.residual_dbfs) for v in verdicts]
    # the path is found: the delay to within a sample's rounding, the level to within 1.5 dB (G.711's noise)
    path = max((v.path for v in verdicts if v.path is not None), key=lambda p: p.coherence)
    assert abs(path.delay_ms - delay) <= 0.5
    assert abs(path.level_db - level) <= 1.5
    # the service would have heard it: the returned audio alone crosses the guard's speech level
    assert max(v.inbound_dbfs for v in verdicts) > guard.speech_dbfs


@pytest.mark.parametrize(("level", "delay", "noise"), [(-14, 120, None), (-10, 250, -55.0), (-20, 20, -55.0)])
def test_returned_agent_tone_is_echo(level: float, delay: float, noise: float | None) -> None:
    guard = EchoGuard()
    line = EchoingLine(LineEcho(level, delay, noise))
    verdicts = [guard.judge() for i in run_line(guard, tone(600, 2.0), line) if i >= 10 and i % 5 == 0]
    assert all(v.echo for v in verdicts), [(v.inbound_dbfs, v.residual_dbfs) for v in verdicts]


@pytest.mark.parametrize(("level", "delay", "noise"), [(-20, 20, None), (-14, 120, None), (-10, 250, -55.0)])
def test_caller_over_the_agent_is_speech(level: float, delay: float, noise: float | None) -> None:
    guard = EchoGuard()
    line = EchoingLine(LineEcho(level, delay, noise))
    seen: dict[int, bool] = {}
    for i in run_line(guard, AGENT + AGENT, line, CALLER, caller_at=40):
        if i >= 20:
            seen[i] = guard.judge().caller
    assert not any(caller for i, caller in seen.items() if i < 40)  # the echo alone, before the caller speaks
    # the caller's first syllable: judged the caller within 150 ms of it (the service's VAD is not faster)
    onset = 40 + next(k for k, f in enumerate(frames(CALLER)) if dbfs(pcm(f)) > -40.0)
    assert any(seen[i] for i in range(onset, onset + 8)), onset


def test_a_caller_tone_over_loud_echo_is_speech() -> None:
    guard = EchoGuard()
    line = EchoingLine(LineEcho(-10, 60, -55.0))
    verdicts = [guard.judge() for i in run_line(guard, AGENT, line, tone(440, 1.0, -22.0), caller_at=60) if i > 66]
    assert verdicts and all(v.caller for v in verdicts[:10])


def test_nothing_played_nothing_to_explain() -> None:
    guard = EchoGuard()
    for f in frames(CALLER)[:40]:
        guard.played(SILENT)
        guard.heard(f)
    v = guard.judge()
    assert v.caller and v.path is None


def test_temper_takes_the_echo_out_and_keeps_the_caller() -> None:
    guard = EchoGuard()
    line = EchoingLine(LineEcho(-14, 120, -60.0))
    sent: list[bytes] = []
    agent, caller_at = AGENT + AGENT, 150
    said = frames(CALLER)
    for i, heard in enumerate(frames(agent)):
        guard.played(heard)
        own = said[i - caller_at] if 0 <= i - caller_at < len(said) else SILENT
        back = line.step(heard, own)
        guard.heard(back)
        sent.append(guard.temper(back))
    out = np.frombuffer(b"".join(sent), dtype="<i2").astype(np.float64)
    echo_only = out[40 * SAMPLES_PER_FRAME : caller_at * SAMPLES_PER_FRAME]
    assert dbfs(echo_only) < -55.0  # the echo alone (about -34 dBFS on the line) is gone
    talk = out[caller_at * SAMPLES_PER_FRAME : (caller_at + len(said)) * SAMPLES_PER_FRAME]
    assert dbfs(talk) > -30.0  # the caller's voice (about -22 dBFS) still goes through
    assert guard.path is not None and abs(guard.path.delay_ms - 120) <= 0.5


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=re.escape("max_delay_ms must be 20..1000, got 5")):
        EchoGuard(GuardSettings(max_delay_ms=5))
    with pytest.raises(ValueError, match=re.escape("echo level_db must be -60..0, got 3")):
        LineEcho(3, 100)


def test_frames_dropped_unsent_are_forgotten() -> None:
    """A media port's queue dropped frames it had taken (silence taken back, a flush): the reference is what was
    sent, so the echo of what followed is still found at the line's delay."""
    guard = EchoGuard()
    line = EchoingLine(LineEcho(-14, 120, None))
    agent = frames(AGENT)
    for i, heard in enumerate(agent[:60]):
        if i == 30:  # two frames of silence taken, then taken back before they were sent
            guard.played(SILENT)
            guard.played(SILENT)
            guard.unplayed(2)
        guard.played(heard)
        guard.heard(line.step(heard, SILENT))
    path = guard.estimate()
    assert path is not None and abs(path.delay_ms - 120) <= 0.5 and guard.judge().echo


def test_a_held_lag_is_kept_on_a_tone_that_fits_many() -> None:
    """A tone fits every lag a period apart: the guard keeps the lag it learnt from speech instead of jumping
    between them (a wrong one would leave the tone's echo in at its start and end)."""
    guard = EchoGuard()
    line = EchoingLine(LineEcho(-14, 120, None))
    for heard in frames(AGENT)[:60] + frames(tone(600, 1.5)):
        guard.played(heard)
        back = line.step(heard, SILENT)
        guard.heard(back)
        guard.temper(back)
    assert guard.path is not None and abs(guard.path.delay_ms - 120) <= 0.5


def test_a_soft_caller_on_a_line_without_echo_is_heard_over_the_agent() -> None:
    """No echo comes back, so no path is ever learnt; a caller 14 dB softer than the agent is not its echo (the
    level test alone would take them for it): the search finds them unlike the agent, and they pass as they are."""
    guard = EchoGuard()
    agent = tone(400, 4.0, -6.0)
    caller = frames(tone(300, 1.5, -20.0))
    sent: list[bytes] = []
    for i, heard in enumerate(frames(agent)):
        guard.played(heard)
        back = caller[i - 50] if 0 <= i - 50 < len(caller) else SILENT
        guard.heard(back)
        sent.append(guard.temper(back))
    talk = np.frombuffer(b"".join(sent[55 : 50 + len(caller)]), dtype="<i2").astype(np.float64)
    assert guard.path is None
    assert dbfs(talk) > -25.0  # the caller's -23 dBFS, not 30 dB less


def test_a_search_that_finds_nothing_is_tried_less_often(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller talking over the agent on a line without echo: the path search (an FFT over the delay range) is
    tried half as often each time, down to once per MAX_SEEK_FRAMES (1.28 s), while the return keeps its level; and
    each time a coarse look finds no candidate, so the full search never runs."""
    guard = EchoGuard()
    searches: list[int] = []
    real = guard._seek

    def counted(n: int, hint: int | None, window: int) -> EchoPath | None:
        searches.append(guard._in.total // SAMPLES_PER_FRAME)
        return real(n, hint, window)

    monkeypatch.setattr(guard, "_seek", counted)
    rng = np.random.default_rng(5)
    for heard in frames(tone(400, 6.0, -6.0)):
        caller = (rng.standard_normal(SAMPLES_PER_FRAME) * 2000).astype("<i2").tobytes()  # never pauses
        guard.played(heard)
        guard.heard(caller)
        guard.temper(caller)
    gaps = np.diff(searches)
    assert guard.path is None and max(gaps) == MAX_SEEK_FRAMES and len(searches) <= 300 // MAX_SEEK_FRAMES + 6
    assert guard.counters() == (300, 0, len(searches))


def test_the_echo_left_when_the_caller_stops_is_sought_at_once() -> None:
    """An echoing line, the caller talking over the agent (no path learnt, the search backed off): when the caller
    stops, the return falls to the echo's level and the path is sought at once over the newest samples: the echo
    alone is taken out within 160 ms."""
    guard = EchoGuard()
    line = EchoingLine(LineEcho(-14, 120, None))
    rng = np.random.default_rng(3)
    stop, backs, sent = 150, [], []
    for i, played in enumerate(frames(AGENT + AGENT)[:260]):
        own = (rng.standard_normal(SAMPLES_PER_FRAME) * 3000).astype("<i2").tobytes() if i < stop else SILENT
        back = line.step(played, own)
        guard.played(played)
        guard.heard(back)
        backs.append(back)
        sent.append(guard.temper(back))
    assert guard.path is not None and abs(guard.path.delay_ms - 120) <= 0.5
    after = range(stop + 8, len(sent))
    assert all(dbfs(pcm(sent[i])) <= dbfs(pcm(backs[i])) - 20.0 for i in after if dbfs(pcm(backs[i])) > -60.0)
