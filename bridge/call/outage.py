"""An outage: the model is away (its session lost, or never opened at the answer). The caller is never left in
silence and never dropped without a word.

::

    model lost ──► RECOVERING: recovery reconnects with backoff (OUTAGE_RETRY) for up to outage.hold_s
                   after outage.hold_after_s, once the queued agent audio has played out: the hold message, in a
                   loop (a soft chime, "one moment please", a pause)
                 ├─ the model is back ──► the hold audio stops at once; the call resumes (bridge.call.recovery)
                 └─ outage.hold_s spent ──► the failover: a transfer (REFER, RFC 3515) to the plan's
                                            transfer_target, or the apology then a BYE with a Reason header
                                            (RFC 3326)

The audio is the dialplan's (``outage.hold_audio``, ``outage.apology_audio``) or the files shipped in
``bridge/assets`` (``call_scripts/make_outage_audio.sh`` regenerates them). This module owns the audio and the
clock of one call's outage; the session's table (``bridge.call.flow``) says when each step runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from bridge import events as ev
from bridge.audio import Playout
from bridge.audio.wav import read_wav
from bridge.call.playback import LOCAL
from bridge.call.retry import RetryPolicy
from bridge.dialplan import Outage

ASSETS = Path(__file__).resolve().parent.parent / "assets"
HOLD_WAV = ASSETS / "hold.wav"
APOLOGY_WAV = ASSETS / "apology.wav"
HOLD_ITEM, APOLOGY_ITEM = f"{LOCAL}outage-hold", f"{LOCAL}outage-apology"  # playout item ids (each pass: -n)
# Reconnect attempts during an outage: the backoff grows to half a second (so the model's return is noticed
# within about that), and the dialplan's outage.hold_s, not a count of attempts, ends the retries.
OUTAGE_RETRY = RetryPolicy(max_attempts=100_000, base_s=0.05, factor=2.0, cap_s=0.5)
# The BYE of the goodbye failover (RFC 3326 Reason header; 503: the service the call needs is unavailable)
GOODBYE_REASON = 'SIP;cause=503;text="model unavailable"'


@functools.cache
def audio(path: str) -> bytes:
    """An 8 kHz mono WAV as PCM16 (read once per process)."""
    return read_wav(path)


class OutageAudio:
    """The hold message and the apology of one call, in its playout buffer."""

    def __init__(
        self, policy: Outage, playout: Playout, emit: Callable[[ev.Report], None], clock: Callable[[], float]
    ) -> None:
        self.policy = policy
        self._playout = playout
        self._emit = emit
        self._clock = clock
        self.since: float | None = None  # the model has been away since (None: it is here)
        self._due = 0.0  # the hold message may start from then
        self._hold_started: float | None = None
        self.leaving = False  # the apology is queued: hang up once it has played out
        self._passes = 0  # audio queued so far (each pass of the hold loop an item of its own)
        self._closing = False  # the apology is queued: the call's last words, never followed by the hold message
        self.leaving_reason = "realtime unavailable"  # the call's end reason then

    def lost(self, at_answer: bool = False) -> None:
        """The model went away now; ``at_answer``: it was not there at the answer (hold from the first second)."""
        self.since = self._clock()
        self._due = self.since + (0.0 if at_answer else self.policy.hold_after_s)

    @property
    def hold_due(self) -> bool:
        """Away for ``hold_after_s``, not yet on hold, and the agent audio queued before the loss has played out."""
        away = self.since is not None and self._hold_started is None and not self._closing
        return away and self._clock() >= self._due and self._playout.idle

    @property
    def active(self) -> bool:
        """An outage, its hold or its goodbye under way: only then has a beat anything to look at here."""
        return self.since is not None or self._hold_started is not None or self.leaving

    @property
    def on_hold(self) -> bool:
        return self._hold_started is not None

    @property
    def away_s(self) -> float:
        return 0.0 if self.since is None else self._clock() - self.since

    def play_hold(self) -> None:
        self._hold_started = self._clock()
        self._emit(ev.HoldStarted())
        self._queue(HOLD_ITEM, self.policy.hold_audio or str(HOLD_WAV))

    def beat(self) -> None:
        """Every beat: the hold message again once it has played out (a loop)."""
        if self._hold_started is not None and self._playout.idle:
            self._queue(HOLD_ITEM, self.policy.hold_audio or str(HOLD_WAV))

    def stop_hold(self) -> None:
        """The hold audio stops at once (the model is back, or the call fails over)."""
        if self._hold_started is not None:
            self._playout.flush()
            self._emit(ev.HoldEnded(round(self._clock() - self._hold_started, 3)))
            self._hold_started = None

    def back(self) -> None:
        """The model is back: the hold stops, the outage is over."""
        self.stop_hold()
        if self.since is not None:
            self._emit(ev.OutageEnded(round(self.away_s, 3)))
            self.since = None

    def say_goodbye(self, reason: str = "realtime unavailable") -> None:
        """The apology, after which the session hangs up (:attr:`leaving`, once the playout is idle)."""
        self.leaving, self.leaving_reason = True, reason
        self.apologise()

    def apologise(self) -> None:
        """The hold stops and the apology plays, once: the call's last words (no hold message after it)."""
        self.stop_hold()
        self._closing = True
        self._queue(APOLOGY_ITEM, self.policy.apology_audio or str(APOLOGY_WAV))

    def _queue(self, item: str, path: str) -> None:
        """One pass of ``path``, a playout item of its own (the buffer takes no more audio for a closed item)."""
        self._passes += 1
        item = f"{item}-{self._passes}"
        self._playout.push(item, audio(path))
        self._playout.end_item(item)
