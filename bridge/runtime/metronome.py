"""One 20 ms beat per event loop, for every periodic chore of a worker (call-session ticks, the SIP poll).

Why one: each separate asyncio timer is its own wake-up of the process, and on a loaded two-core machine a
wake-up costs more than the chore (a worker with 4 calls had 6 timers of 20 ms on different phases: the 4
sessions' ticks and the SIP poll, plus the media clock's eventfd; a tick itself is a few µs of Python). Here all
chores run back to back on one beat, and the beat rides on the media clock's wake-up when there is one:

- a *driver* (the native media hub, after it drains the ports on pjmedia's clock tick) calls :meth:`beat`;
  beats closer together than ``min_gap`` (a clock catching up: 3/4 of a 20 ms tick) are skipped;
- when no driver beats (no call up, or the Python media port), the metronome's own timer beats every period, so
  chores never stop. A driver that stops says so (:meth:`undriven`: the hub's last port detached), and the timer
  takes over one *hold* after its last beat: 100 ms (two periods at a longer media beat). While driven, the timer
  is a watchdog that wakes once a hold only: it is never re-armed on a beat (re-arming it on every beat cost more
  than the chores), and a driver that stops without a word (a port whose ring nobody reads, so its clock never
  wakes the loop) is replaced within a hold too. The SIP poll is one of the chores, so a hold bounds how late a
  response is read: well under the 500 ms after which pjsip retransmits an INVITE (RFC 3261 timer A, T1) that
  had in fact been answered. A driver that wakes the loop at least once a hold by itself, even for a port nobody
  reads (the native ports' keeper thread, ``bridge/native/cport.c``), says so (:meth:`kept`): then there is no
  watchdog while it drives, and no wake-up of the loop for one.

The period is one 20 ms media tick by default. A worker with native media ports beats every
``media_beat_frames`` ticks (:data:`BEAT_FRAMES`, see :meth:`set_period`): the clock thread wakes the loop once per
beat, not once per tick, because each wake-up of a worker costs more than the work it does (the playout rings
are filled for the whole beat; see ``bridge.sip.cport``).

A chore is a plain callable; one that raises is logged (rate-limited), counted in :attr:`errors`, and keeps its
place. :func:`for_loop` gives the loop's one metronome, so sessions and the SIP endpoint share it without wiring.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable

from bridge.audio.frames import PERIOD_S
from bridge.runtime import callcount

_LOG = logging.getLogger("bridge.runtime.metronome")

Chore = Callable[[], None]
_SLACK_S = 1e-6  # a periodic chore's time is a sum of periods: a beat this close to it is on time


class Metronome:
    def __init__(self, loop: asyncio.AbstractEventLoop, period_s: float = PERIOD_S) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s must be positive, got {period_s}")
        self.loop = loop
        self.period_s = period_s
        self.min_gap_s = 0.75 * min(period_s, PERIOD_S)
        self._chores: dict[int, Chore] = {}
        self._next_id = 0
        self._last = float("-inf")
        self._last_driven = False
        self._timer: asyncio.TimerHandle | None = None
        self._every: dict[int, _Every] = {}  # periodic chores (every)
        self._due = float("inf")  # the soonest of their next times
        self.beats = 0
        self.driven_beats = 0  # beats that came from a driver, not from the fallback timer
        self.errors = 0
        self._kept = False  # the driver wakes the loop once a hold by itself (kept): no watchdog while driven

    def set_period(self, period_s: float) -> None:
        """Beat every ``period_s`` from now on: the driver's expected period and the fallback's own."""
        if period_s <= 0:
            raise ValueError(f"period_s must be positive, got {period_s}")
        self.period_s = period_s
        self.min_gap_s = 0.75 * min(period_s, PERIOD_S)

    def add(self, chore: Chore, first: bool = False) -> Callable[[], None]:
        """Run ``chore`` on every beat from the next one on (``first``: before the chores added so far, e.g. the
        read of every call's socket, :mod:`bridge.realtime.readset`). Returns a function that removes it
        (idempotent)."""
        key = self._next_id
        self._next_id += 1
        if first:
            self._chores = {key: chore, **self._chores}
        else:
            self._chores[key] = chore
        if self._timer is None:
            self._arm(self.loop.time() + self.period_s)
        return lambda: self._remove(key)

    def every(self, period_s: float, chore: Chore) -> Callable[[], None]:
        """Run ``chore`` on the first beat at least ``period_s`` after its last run (the first a period from now):
        periodic work of every call batched onto one beat, with no wake-up of its own. Runs only while the
        metronome beats (some chore added). Returns a function that removes it (idempotent)."""
        key = self._next_id
        self._next_id += 1
        entry = self._every[key] = _Every(period_s, self.loop.time() + period_s, chore)
        self._due = min(self._due, entry.at)
        return lambda: self._forget(key)

    def _forget(self, key: int) -> None:
        self._every.pop(key, None)

    def _periodic(self, now: float) -> None:
        due = float("inf")
        for entry in tuple(self._every.values()):
            if now >= entry.at - _SLACK_S:
                entry.at = max(entry.at + entry.period, now)
                try:
                    entry.chore()
                except Exception:
                    self._raised(entry.chore)
            due = min(due, entry.at)
        self._due = due

    def _remove(self, key: int) -> None:
        self._chores.pop(key, None)
        if not self._chores and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def __len__(self) -> int:
        return len(self._chores)

    def beat(self) -> bool:
        """A driver's beat (on the loop thread). False if it came too soon after the last one and was skipped."""
        if not self._chores:
            return False
        now = self.loop.time()
        if now - self._last < self.min_gap_s:
            if not self._last_driven:
                # Too close behind a fallback beat: push the fallback back so the driver's phase takes over.
                self._arm(now + 1.5 * self.period_s)
            return False
        self.driven_beats += 1
        self._run(now, driven=True)
        return True

    def kept(self, on: bool = True) -> None:
        """The driver wakes the loop at least once a hold by itself while it drives, whatever its ports do (the
        native ports' keeper): the metronome keeps no watchdog then (``on``), or does again."""
        self._kept = on

    def undriven(self) -> None:
        """The driver stops beating (its last port detached): the fallback takes over one hold after its last beat."""
        if self._chores and self._last_driven:
            # Not driven any more: the fallback beats when its timer fires, without comparing the time since the
            # last beat with a hold (a timer fires up to the clock's resolution early, and a kept metronome that
            # found the driver a nanosecond too recent would arm nothing and never beat again).
            self._last_driven = False
            self._arm(max(self.loop.time(), self._last + self.hold_s()))

    def hold_s(self) -> float:
        """How long after a driven beat the fallback waits before it beats on its own (and the watchdog's period, or
        a keeper's: :meth:`kept`)."""
        return max(5 * PERIOD_S, 2 * self.period_s)

    def _fallback(self) -> None:
        self._timer = None
        if not self._chores:
            return
        now = self.loop.time()
        if self._last_driven and now - self._last < self.hold_s():
            if not self._kept:
                self._arm(self._last + self.hold_s())  # still driven: look again a hold after its last beat
            return
        self._run(now, driven=False)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()  # a cancelled handle leaves the timer heap without waking the loop
        self._timer = self.loop.call_at(when, self._fallback)

    def _run(self, now: float, driven: bool) -> None:
        self._last, self._last_driven = now, driven
        self.beats += 1
        for chore in tuple(self._chores.values()):
            try:
                chore()
            except Exception:
                self._raised(chore)
        if now >= self._due - _SLACK_S:
            self._periodic(now)
        if not self._chores:
            return
        if not driven:
            self._arm(now + self.period_s)  # on its own: every period
        elif self._timer is None and not self._kept:
            self._arm(now + self.hold_s())  # driven: the watchdog only (see the module doc)

    def _raised(self, chore: Chore) -> None:
        self.errors += 1
        if self.errors <= 10 or self.errors % 1000 == 0:
            _LOG.exception("metronome chore %r raised (%d so far)", chore, self.errors)


class _Every:
    __slots__ = ("at", "chore", "period")

    def __init__(self, period: float, at: float, chore: Chore) -> None:
        self.period, self.at, self.chore = period, at, chore


_METRONOMES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Metronome] = weakref.WeakKeyDictionary()


def for_loop(loop: asyncio.AbstractEventLoop | None = None) -> Metronome:
    """The metronome of ``loop`` (default: the running loop), created on first use."""
    loop = loop or asyncio.get_running_loop()
    found = _METRONOMES.get(loop)
    if found is None:
        found = _METRONOMES[loop] = Metronome(loop)
        callcount.install_from_env()  # bench calls --count-calls: this thread's calls per beat
    return found
