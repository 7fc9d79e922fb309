"""The echo guard: tells the caller's voice from the agent's own audio coming back down the line.

A telephone line has no echo canceller for the bridge's benefit: a 2-to-4-wire hybrid or a speakerphone returns
what the caller was played about 10-25 dB down and 20-250 ms late (ITU-T G.168 models the path the same way: a
pure delay, then a short dispersive filter, then the echo return loss). The bridge is the only party that knows
exactly what it played, so it keeps that as a reference and explains what comes back by it.

Pure: PCM16 8 kHz frames in, numbers out (numpy only). Two streams, each counted in samples from the start of the
call's media: :meth:`EchoGuard.played` gets every frame the caller was sent (silence included, so the two streams
stay aligned sample for sample), :meth:`EchoGuard.heard` every frame that came back. The constant offset between
the two counts (the jitter buffer, frames a media port holds ahead) is simply part of the echo path's delay.

The path, per call:

* the delay is the lag that maximises the normalised cross-correlation between the inbound window and the
  reference, searched over ``0..max_delay_ms`` with one FFT;
* around that lag a short FIR (:data:`TAPS` taps) is fitted by least squares, which absorbs sub-sample delay,
  the line's filtering and G.711's companding; its gain is the echo's level (``level_db``);
* the residual (inbound minus the reference through the path) is the caller, plus line noise.

:meth:`EchoGuard.judge` decides whether inbound audio over a window is echo or the caller: the caller is there
when, for :data:`MIN_SPEECH_FRAMES` frames in a row, the residual is above ``speech_dbfs`` and not at least
``erle_db`` below the inbound level (what the path explains). :meth:`EchoGuard.temper` is the per-frame version
for audio on its way to a service that decides turns by itself: the residual, with frames that the path explains
attenuated by ``suppress_db``. Until a path is learnt (the call's first agent audio), it uses the level test of line
echo cancellers (Geigel's: inbound audio more than :data:`GEIGEL_DB` below the loudest the agent played over the
delay range is echo). A frame the held path leaves unexplained, yet no louder than the agent's loudest through the
path's loss (plus :data:`MOVED_DB`), is attenuated too, and the path is sought again at once over the newest
samples: a jitter buffer that adapted, or a frame lost on the way, moves it by 20 ms or more. The media port tells
the reference of the silence it sent on its own (``skipped``), so the two streams stay aligned frame for frame.
The held path (re-estimated while the agent speaks and the return is coherent)
serves :meth:`temper`; :meth:`judge` fits the window afresh.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np
from numpy.typing import NDArray

from bridge.audio import level
from bridge.audio.frames import SAMPLE_RATE, SAMPLES_PER_FRAME

Samples = NDArray[np.float64]

TAPS: Final = 12  # the fitted filter: 1.5 ms at 8 kHz, from LEAD samples before the found lag
LEAD: Final = 3
MIN_SPEECH_FRAMES: Final = 3  # 60 ms of residual speech in a row: the caller (the service's VAD needs as much)
REFERENCE_DBFS: Final = -50.0  # a reference quieter than this over the window: the agent is silent, nothing to explain
MAX_LEVEL_DB: Final = 0.0  # a path louder than what was played is not an echo path
HINT_KEPT: Final = 0.97  # a held lag whose correlation is this close to the best one is kept
TIED: Final = 1e-9  # lags whose correlations are this close count as tied (rounding alone tells them apart)
QUIET_DBFS: Final = -60.0  # inbound audio quieter than this over the window teaches nothing about the path
COHERENT: Final = 0.8  # a normalised correlation this high: the return is echo alone (the path may be learnt from it)
FOREIGN: Final = 0.5  # no path held and the latest search explained less than this: the return is not the agent's
RE_ESTIMATE_FRAMES: Final = 12  # a held path is refreshed this often (frames)
SEEK_FRAMES: Final = 2  # ...and sought this often while none is held
# a search that finds nothing coherent (the caller talking over the agent, a line that returns no echo) is tried
# half as often each time, down to once per LEVEL_SEEK_FRAMES; the level test serves meanwhile. With no path held it
# backs off further, to once per MAX_SEEK_FRAMES (1.28 s), while the return over the newest SHORT_WINDOW stays within
# GEIGEL_DB of its level over that search's window (the caller still talking over the agent): a return that falls
# below it (the caller stopped, the agent's echo may be alone now) is sought again at once over the newest samples,
# and a barge-in judged echo (judge) brings the wait back to SEEK_FRAMES. A quiet frame of the return (below
# QUIET_DBFS) teaches nothing: a search due then waits for the next frame that is not
LEVEL_SEEK_FRAMES: Final = 16
MAX_SEEK_FRAMES: Final = 64
_AT_ONCE: Final = 1 << 30  # _since_estimate: estimate on the next frame
# with no path held, a due search first looks at both streams summed in blocks of COARSE samples (a quarter of the
# FFT's length): a return whose best normalised correlation there is below COARSE_NONE is unlike anything the agent
# played (a caller talking over the agent on a line without echo), taken as such (foreign) without the full search.
# An echo the full search would learn (coherence COHERENT) correlates far above it at that resolution
COARSE: Final = 4
COARSE_NONE: Final = 0.3
SHORT_WINDOW: Final = 8 * SAMPLES_PER_FRAME  # 160 ms: a window the path has not moved inside
GEIGEL_DB: Final = 6.0  # no path learnt yet: inbound audio this far below what was played is taken for its echo
MOVED_DB: Final = 3.0  # a frame the path leaves unexplained, no louder than its echo could be plus this: echo
_KEEP_S: Final = 2.0  # each stream keeps this much history


def dbfs(x: Samples) -> float:
    """The RMS level of ``x`` (:func:`bridge.audio.level.dbfs`, floor :data:`~bridge.audio.level.QUIET`); -120 for
    no samples."""
    return level.dbfs(level.rms(x), level.QUIET) if len(x) else -120.0


def pcm(frame: bytes) -> Samples:
    return np.frombuffer(frame, dtype="<i2").astype(np.float64)


@dataclass(frozen=True, slots=True)
class EchoPath:
    """The line's echo path: the reference's delay to the return, its level, and how well it explains it."""

    delay_ms: float
    level_db: float  # the echo's level relative to the reference (echo return loss, negative)
    coherence: float  # normalised cross-correlation at the delay, 0..1
    taps: tuple[float, ...]  # the fitted FIR, starting LEAD samples before the delay

    @property
    def lag(self) -> int:
        return round(self.delay_ms * SAMPLE_RATE / 1000.0)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :meth:`EchoGuard.judge` found over its window."""

    echo: bool  # True: the inbound audio is explained by the agent's own (or is quiet); False: the caller spoke
    inbound_dbfs: float
    residual_dbfs: float  # the loudest run of residual frames (what is left once the echo is taken out)
    path: EchoPath | None  # None: the agent was silent over the window, nothing to explain
    speaking: bool = False  # the window's newest frame is the caller's (residual speech), whatever came before

    @property
    def caller(self) -> bool:
        return not self.echo


def spans(max_delay_ms: float, window_ms: float) -> tuple[int, int]:
    """The delay range and the judged window in samples (the window in whole frames); ``ValueError`` if out of
    range."""
    if not 20.0 <= max_delay_ms <= 1000.0:
        raise ValueError(f"max_delay_ms must be 20..1000, got {max_delay_ms:g}")
    if not 100.0 <= window_ms <= 1000.0:
        raise ValueError(f"window_ms must be 100..1000, got {window_ms:g}")
    window = round(window_ms * SAMPLE_RATE / 1000.0) // SAMPLES_PER_FRAME * SAMPLES_PER_FRAME
    return round(max_delay_ms * SAMPLE_RATE / 1000.0), window


@dataclass(frozen=True)
class GuardSettings:
    """A guard's settings, the same for both guards (a dialplan's ``echo`` section sets the first, third, fourth
    and fifth): how late the echo may come back, the window judged, the residual level that is speech, the echo
    return loss enhancement that makes a frame echo, and how far a suppressed frame is turned down."""

    max_delay_ms: float = 600.0
    window_ms: float = 300.0
    speech_dbfs: float = -40.0
    erle_db: float = 10.0
    suppress_db: float = 30.0

    def __post_init__(self) -> None:
        spans(self.max_delay_ms, self.window_ms)  # out of range: ValueError naming the setting

    @property
    def suppress(self) -> float:
        """The gain of a suppressed frame."""
        return float(10.0 ** (-self.suppress_db / 20.0))


GUARD_DEFAULTS: Final = GuardSettings()


class Guard(Protocol):
    """What a call needs of a guard: :class:`EchoGuard`, or its C twin (:mod:`bridge.audio.echo_native`)."""

    speech_dbfs: float

    @property
    def path(self) -> EchoPath | None: ...

    def played(self, frame: bytes) -> None: ...

    def unplayed(self, frames: int) -> None: ...

    def heard(self, frame: bytes) -> None: ...

    def estimate(self, n: int | None = None, hint: int | None = None, window: int | None = None) -> EchoPath | None: ...

    def judge(self) -> Verdict: ...

    def temper(self, frame: bytes) -> bytes: ...

    def counters(self) -> tuple[int, int, int]:
        """Frames tempered, full path searches :meth:`temper` ran, and its coarse looks that found no candidate
        (:data:`COARSE_NONE`: the full search skipped)."""
        ...

    def c_uplink(self, temper: bool, onset: tuple[int, float] | None = None) -> tuple[int, int] | None:
        """Where the native uplink sends the caller's frames itself (``bridge/native/cport.c``): the C function
        (``cbe_uplink``) and guard it hands each frame to first, tempering if ``temper`` and telling of the
        caller's onset by ``onset``'s rule (frames in a row, dB); None if this guard cannot be run there."""
        ...

    def c_played(self) -> tuple[int, int] | None:
        """Where a native media port sends the caller's frames itself: the C function (``cbe_played``) and guard
        it hands each frame it sends to, as :meth:`played`; None if this guard cannot be fed there."""
        ...


class _Ring:
    """The last ``size`` samples of a stream, with the count of all samples ever added. The samples sit in a
    buffer twice that long, newest at ``_end``: an add is a copy of the new samples (the held ones move back to the
    front once per ``size`` samples added), never a shift of the whole history."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data = np.zeros(2 * size, dtype=np.float64)
        self._end = size  # the held samples are _data[_end - size : _end]
        self.total = 0

    @property
    def buf(self) -> Samples:
        """The held samples, oldest first (zeros where none were added yet)."""
        return self._data[self._end - self.size : self._end]

    def add(self, x: Samples) -> None:
        n, size = len(x), self.size
        if n >= size:
            self._data[:size], self._end = x[-size:], size
        else:
            if self._end + n > len(self._data):
                self._data[:size], self._end = self.buf, size
            self._data[self._end : self._end + n] = x
            self._end += n
        self.total += n

    def drop_newest(self, n: int) -> None:
        """Forget the newest ``n`` samples (they were never sent)."""
        n = min(n, self.size, self.total)
        if n > 0:
            if self._end - n < self.size:  # no room below the held samples: move them to the back
                self._data[self.size :], self._end = self.buf, 2 * self.size
            self._end -= n
            self._data[self._end - self.size : self._end - self.size + n] = 0.0
            self.total -= n

    def span(self, start: int, end: int) -> Samples:
        """Samples ``start..end`` of the stream (absolute counts); zeros where not (or no longer) held."""
        first = self.total - self.size
        if start >= first and end <= self.total:  # all held: a copy of the slice
            base = self._end - self.size - first
            return self._data[base + start : base + end].copy()
        out = np.zeros(max(0, end - start), dtype=np.float64)
        lo, hi = max(start, first), min(end, self.total)
        if hi > lo:
            out[lo - start : hi - start] = self.buf[lo - first : hi - first]
        return out


class EchoGuard:
    """One call's echo guard (see the module doc). ``played`` may be called from the media clock thread (it only
    appends); everything else runs on the call's loop."""

    def __init__(self, settings: GuardSettings = GUARD_DEFAULTS) -> None:
        self.max_lag, self.window = spans(settings.max_delay_ms, settings.window_ms)
        self.speech_dbfs, self.erle_db, self.suppress = settings.speech_dbfs, settings.erle_db, settings.suppress
        keep = round(_KEEP_S * SAMPLE_RATE)
        self._ref, self._in = _Ring(keep + self.max_lag), _Ring(keep)
        self._pending: deque[bytes] = deque()  # reference frames from the clock thread, not yet in the ring
        self.path: EchoPath | None = None  # the held path (refreshed by temper while the return is coherent)
        self._since_estimate = _AT_ONCE
        self._seek_every = SEEK_FRAMES  # frames between searches while no path holds (see MAX_SEEK_FRAMES)
        self._sought_db = -120.0  # the return's level over the latest search's window
        self._foreign = False  # no path held, and the latest search found the return unlike the agent's audio
        self._broken = False  # the held path stopped explaining the return: seek it again at once
        self._moved = False  # a frame the held path left unexplained: sought again at once, the path kept meanwhile
        self._counts = [0, 0, 0]  # see counters

    def c_uplink(self, temper: bool, onset: tuple[int, float] | None = None) -> tuple[int, int] | None:
        return None  # Python: the caller's frames stay on the loop

    def c_played(self) -> tuple[int, int] | None:
        return None  # Python: the reference is fed on the loop

    def counters(self) -> tuple[int, int, int]:
        c = self._counts
        return c[0], c[1], c[2]

    # -- the two streams ---------------------------------------------------------------------------------------
    def played(self, frame: bytes) -> None:
        """A frame the caller was sent (any thread: one atomic append)."""
        self._pending.append(frame)

    def unplayed(self, frames: int) -> None:
        """The newest ``frames`` frames handed to :meth:`played` were dropped before they were sent (a media
        port's queue flushed, or silence it had queued taken back): forget them."""
        self._drain()
        self._ref.drop_newest(frames * SAMPLES_PER_FRAME)

    def heard(self, frame: bytes) -> None:
        """A frame that came back from the caller's line."""
        self._drain()
        self._in.add(pcm(frame))

    def _drain(self) -> None:
        while self._pending:
            self._ref.add(pcm(self._pending.popleft()))

    # -- the path ----------------------------------------------------------------------------------------------
    def _segments(self, n: int, window: int | None = None) -> tuple[Samples, Samples]:
        """The inbound window ending at sample ``n`` and the reference that could explain it (``max_lag`` +
        ``LEAD`` earlier samples and ``TAPS`` later ones included)."""
        end = n
        start = end - (window or self.window)
        ref = self._ref.span(start - self.max_lag - TAPS, end + LEAD)
        return self._in.span(start, end), ref

    def estimate(self, n: int | None = None, hint: int | None = None, window: int | None = None) -> EchoPath | None:
        """The echo path over the window ending at inbound sample ``n`` (default: the latest); None when the
        reference was silent over it. ``hint``: a lag kept when it explains the window about as well as the best
        one (a periodic reference, a held tone, fits many lags equally: the path must not jump between them)."""
        self._drain()
        x, ref = self._segments(self._in.total if n is None else n, window)
        if dbfs(ref) < REFERENCE_DBFS or dbfs(x) < QUIET_DBFS:
            return None  # the agent silent, or nothing came back: nothing to learn the path from
        w, base = len(x), self.max_lag + TAPS  # ref[base + i] is played at the instant of x[i]
        # cross-correlation of x against every lag 0..max_lag, by FFT; normalised by each lagged window's energy.
        # The sums wanted (at base - lag, for x[i] against ref[base - lag + i]) never reach past the reference's
        # end, so a transform as long as the reference holds them without wrapping around
        size = 1 << int(np.ceil(np.log2(len(ref))))
        xc = np.fft.irfft(np.fft.rfft(ref, size) * np.conj(np.fft.rfft(x, size)), size)
        lags = np.arange(self.max_lag + 1)
        starts = base - lags
        energy = np.concatenate(([0.0], np.cumsum(ref * ref)))
        lagged = energy[starts + w] - energy[starts]
        # a lag whose reference window is (nearly) silent explains nothing; FFT rounding must not make it a peak
        norm = np.sqrt(np.maximum(lagged, 1e-3 * float(lagged.max())) * float(np.dot(x, x))) + 1e-9
        ncc = np.abs(xc[starts]) / norm
        lag = int(lags[int(np.argmax(ncc >= float(ncc.max()) * (1.0 - TIED)))])  # the first of the best
        if hint is not None and 0 <= hint <= self.max_lag and ncc[hint] >= HINT_KEPT * ncc[lag]:
            lag = hint
        taps = self._fit(x, ref, base - lag)
        gain = float(np.sqrt(np.sum(np.square(taps))))
        level = 20.0 * float(np.log10(max(gain, 1e-6)))
        left = x - self._through(ref, base - lag, w, taps)
        # how much of the inbound audio the path explains, as a correlation: sqrt(1 - residual / inbound energy)
        coherence = float(np.sqrt(max(0.0, 1.0 - float(np.dot(left, left)) / float(np.dot(x, x)))))
        return EchoPath(lag * 1000.0 / SAMPLE_RATE, level, coherence, tuple(taps.tolist()))

    @staticmethod
    def _through(ref: Samples, start: int, w: int, taps: Samples) -> Samples:
        """``_matrix(ref, start, w) @ taps`` as a convolution (the reference through the path's filter)."""
        through: Samples = np.convolve(ref[start + LEAD - TAPS + 1 : start + LEAD + w], taps, "valid")
        return through

    @staticmethod
    def _matrix(ref: Samples, start: int, w: int) -> Samples:
        """Column k: the reference delayed so that column LEAD is ``ref[start : start + w]``."""
        return np.stack([ref[start + LEAD - k : start + LEAD - k + w] for k in range(TAPS)], axis=1)

    def _fit(self, x: Samples, ref: Samples, start: int) -> Samples:
        # row k: _matrix's column k
        rows = np.lib.stride_tricks.sliding_window_view(ref[start + LEAD - TAPS + 1 : start + LEAD + len(x)], len(x))
        at = np.ascontiguousarray(rows[::-1])
        # least squares by the normal equations (12 x 12), lightly regularised for a band-limited reference
        gram = at @ at.T
        gram += np.eye(TAPS) * (1e-3 * float(np.trace(gram)) / TAPS + 1e-9)
        return np.asarray(np.linalg.solve(gram, at @ x), dtype=np.float64)

    def _residual(self, x: Samples, ref: Samples, path: EchoPath) -> Samples:
        start = self.max_lag + TAPS - path.lag
        residual: Samples = x - self._through(ref, start, len(x), np.asarray(path.taps))
        return residual

    # -- the decisions -----------------------------------------------------------------------------------------
    def judge(self) -> Verdict:
        """Is the inbound audio of the latest window the caller, or the agent's own coming back? A window the
        path does not explain is judged again over its newest :data:`SHORT_WINDOW` samples: the path may have
        moved inside it (a media port that sent silence of its own, a jitter buffer that adapted)."""
        verdict = self._judge(self.window)
        if verdict.caller and verdict.path is not None:
            again = self._judge(SHORT_WINDOW)
            if again.echo:
                verdict = again
        if verdict.echo and verdict.path is not None and (self.path is None or self._broken):
            self._seek_every = SEEK_FRAMES  # the agent's echo, and no path holds: sought again soon (temper)
        return verdict

    def _judge(self, window: int) -> Verdict:
        self._drain()
        n = self._in.total
        x, ref = self._segments(n, window)
        path = self.estimate(n, None if self.path is None else self.path.lag, window)
        # the agent silent over the window: nothing to explain, the inbound audio is judged as it is
        residual = x if path is None else self._residual(x, ref, path)
        frames = len(x) // SAMPLES_PER_FRAME
        run, loudest, caller, speech = 0, -120.0, False, False
        for i in range(frames):
            part = slice(i * SAMPLES_PER_FRAME, (i + 1) * SAMPLES_PER_FRAME)
            r_db, x_db = dbfs(residual[part]), dbfs(x[part])
            speech = r_db > self.speech_dbfs and x_db - r_db < self.erle_db
            run = run + 1 if speech else 0
            if speech:
                loudest = max(loudest, r_db)
            caller = caller or run >= MIN_SPEECH_FRAMES
        return Verdict(not caller, dbfs(x), loudest if caller else dbfs(residual), path, speech)

    def temper(self, frame: bytes) -> bytes:
        """``frame`` (just :meth:`heard`) as it should reach a service that decides turns itself: the residual
        once a path is known, attenuated where the path explains it (the agent's echo alone)."""
        self._counts[0] += 1
        self._since_estimate += 1
        n = self._in.total
        seeking = self.path is None or self._broken  # no path that holds: sought every _seek_every frames
        if self._seek_every > LEVEL_SEEK_FRAMES and dbfs(self._in.span(n - SHORT_WINDOW, n)) < (
            self._sought_db - GEIGEL_DB
        ):
            # the return fell: the caller may have stopped, leaving the agent's echo alone; sought at once over the
            # newest samples (the older ones hold the caller's last words)
            self._seek_every, self._since_estimate, self._moved = LEVEL_SEEK_FRAMES, _AT_ONCE, True
        x = pcm(frame)
        # while sought, a quiet frame of the return teaches nothing new: the search waits for the next one that is not
        due = (
            self._since_estimate >= self._seek_every and dbfs(x) >= QUIET_DBFS
            if seeking
            else (self._since_estimate >= RE_ESTIMATE_FRAMES)
        )
        if due:
            self._since_estimate = 0
            # a path that stopped holding (or may have moved) is sought again over the newest samples only
            fresh = self._broken or self._moved
            window = SHORT_WINDOW if fresh else self.window
            found = self._seek(n, None if self.path is None or fresh else self.path.lag, window)
            self._sought_db = dbfs(self._in.span(n - window, n))
            self._moved = False
            # learnt only from echo alone: coherent, and no louder than what was played (a line has no gain)
            self._foreign = found is not None and found.coherence < FOREIGN
            if found is not None and found.coherence >= COHERENT and found.level_db <= MAX_LEVEL_DB:
                self.path, self._broken, self._seek_every = found, False, SEEK_FRAMES
            elif seeking:  # nothing to learn from (None: the agent or the line silent): soon again once there is
                most = MAX_SEEK_FRAMES if self.path is None else LEVEL_SEEK_FRAMES
                self._seek_every = SEEK_FRAMES if found is None else min(2 * self._seek_every, most)
        path = self.path
        if path is None and self._foreign:
            return frame  # the level test's exception (_by_level): nothing to look at
        ref = self._ref.span(n - len(x) - self.max_lag - TAPS, n + LEAD)
        if path is None:
            return self._by_level(frame, x, ref)
        echo = self._through(ref, self.max_lag + TAPS - path.lag, len(x), np.asarray(path.taps))
        if dbfs(echo) < REFERENCE_DBFS + path.level_db:
            return frame  # the agent was silent a path's delay ago: nothing to take out
        residual = x - echo
        x_db, r_db = dbfs(x), dbfs(residual)
        echo_ceiling = self._ref_peak(ref) + path.level_db + MOVED_DB  # the loudest the agent's echo can be now
        if r_db >= x_db:
            # taking the estimate out adds to the frame: the path does not hold here (never send more); seek it.
            # Meanwhile a frame no louder than the echo can be is taken for it
            if not self._broken:
                self._broken, self._since_estimate, self._seek_every = True, _AT_ONCE, SEEK_FRAMES
            if x_db < echo_ceiling:
                out_x: bytes = np.clip(np.round(x * self.suppress), -32768, 32767).astype("<i2").tobytes()
                return out_x
            return frame
        if x_db - r_db >= self.erle_db:
            residual *= self.suppress  # the path explains the frame: the agent's echo alone
        elif x_db < echo_ceiling:
            # not explained, yet no louder than the agent's echo can be over the path's loss: the path moved (a
            # jitter buffer that adapted, a frame lost), or the caller's first syllable. Attenuated, and the path
            # sought again at once over the newest samples: a moved path is found there, the caller's voice (which
            # soon rises above the echo's level) is not a path
            residual *= self.suppress
            if not self._moved:
                self._moved, self._since_estimate = True, _AT_ONCE
        out: bytes = np.clip(np.round(residual), -32768, 32767).astype("<i2").tobytes()
        return out

    def _seek(self, n: int, hint: int | None, window: int) -> EchoPath | None:
        """:meth:`estimate` for :meth:`temper`, where no path is held after a coarse look (:data:`COARSE`) that
        finds no candidate: the return unlike the agent's audio, as the full search would have found it."""
        if self.path is None:
            coarse = self._coarse(n, window)
            if coarse is None:
                return None
            if coarse[1] < COARSE_NONE:
                self._counts[2] += 1
                return EchoPath(coarse[0] * 1000.0 / SAMPLE_RATE, -120.0, coarse[1], (0.0,) * TAPS)
        self._counts[1] += 1
        return self.estimate(n, hint, window)

    def _coarse(self, n: int, window: int) -> tuple[int, float] | None:
        """The best lag (a multiple of :data:`COARSE`) and its normalised correlation over the window ending at
        ``n``, both streams summed in blocks of :data:`COARSE` samples; None where :meth:`estimate` finds nothing."""
        x, ref = self._segments(n, window)
        if dbfs(ref) < REFERENCE_DBFS or dbfs(x) < QUIET_DBFS:
            return None
        base = self.max_lag + TAPS
        skip = base % COARSE  # block t of the reference starts at sample skip + COARSE t: lag COARSE j is block b - j
        xd = x[: len(x) // COARSE * COARSE].reshape(-1, COARSE).sum(axis=1)
        rd = ref[skip : skip + (len(ref) - skip) // COARSE * COARSE].reshape(-1, COARSE).sum(axis=1)
        b, w = (base - skip) // COARSE, len(xd)
        size = 1 << int(np.ceil(np.log2(len(rd))))
        xc = np.fft.irfft(np.fft.rfft(rd, size) * np.conj(np.fft.rfft(xd, size)), size)
        starts = b - np.arange(self.max_lag // COARSE + 1)
        energy = np.concatenate(([0.0], np.cumsum(rd * rd)))
        lagged = energy[starts + w] - energy[starts]
        norm = np.sqrt(np.maximum(lagged, 1e-3 * float(lagged.max())) * float(np.dot(xd, xd))) + 1e-9
        ncc = np.abs(xc[starts]) / norm
        best = int(np.argmax(ncc))
        return COARSE * best, float(ncc[best])

    def _ref_peak(self, ref: Samples) -> float:
        """The loudest 20 ms of what was played over the span whose echo could be in the frame now."""
        whole = len(ref) // SAMPLES_PER_FRAME * SAMPLES_PER_FRAME
        frames = ref[len(ref) - whole :].reshape(-1, SAMPLES_PER_FRAME)
        peak = float(np.sqrt(np.max(np.mean(frames * frames, axis=1)))) if len(frames) else 0.0
        return level.dbfs(peak, level.QUIET)

    def _by_level(self, frame: bytes, x: Samples, ref: Samples) -> bytes:
        """No path to take the echo out with (none learnt yet): the level test of line echo
        cancellers (Geigel's): inbound audio more than :data:`GEIGEL_DB` below the loudest the agent played over the
        echo's delay range is its echo, attenuated; anything louder is the caller, passed as it is. Where the latest
        search found the return unlike anything the agent played (:data:`FOREIGN`: a caller speaking over the agent
        on a line that returns no echo), it passes as it is too: a caller softer than the agent is still heard."""
        if self._foreign:
            return frame
        peak = self._ref_peak(ref)
        if peak < REFERENCE_DBFS or dbfs(x) >= peak - GEIGEL_DB:
            return frame
        out: bytes = np.clip(np.round(x * self.suppress), -32768, 32767).astype("<i2").tobytes()
        return out
