"""No dead air while the call waits on something (a business tool, an orchestrator): a filler line, then soft hold
audio.

::

    a wait begins (a tool call) ─┬─ the tool declared itself slow (expect_s): its announcement is said at once
                                 └─ filler_after_s with nothing playing: a filler line from the plan's list (never the
                                    one said last), said verbatim (the dialect's Say)
    the line has played out, the wait goes on ──► soft hold audio in a loop (the outage's hold message, 6 dB down,
                                                  its long pause cut), until the last wait ends: it stops at once

An orchestrator's late answer has its own filler (``orchestrator.filler``); the soft hold follows it the same way.
A slow answer to the caller's turn (:class:`TurnHold`) gets no line (the service refuses a second response while
the first runs): the soft hold alone, from ``filler_after_s`` after the caller's speech ended until the agent's first
audio, which flushes it before it is queued (the two never overlap).
A caller who speaks over either is a barge-in as always (the playout is flushed; the line's response is cancelled),
and nothing starts while the caller speaks.
Whether a soft hold plays is the hold axis of the call's core (:class:`bridge.call.core.Hold`: ``WAIT``, ``TURN``);
the rest is bookkeeping over the call's playout and its clock; the session's beat drives both (:class:`DeadAir` through
``ToolCalls.beat``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Final

import numpy as np

from bridge import events as ev
from bridge.audio import Playout
from bridge.call.core import Hold, Trigger
from bridge.call.flow import CallFlow
from bridge.call.link import Link
from bridge.call.outage import HOLD_WAV, audio
from bridge.call.playback import LOCAL
from bridge.dialplan import Dialplan, Waiting

# the prefixes of the soft holds' playout item ids (a tool's wait; a slow answer): never a model item
WAIT_HOLD_ITEM: Final = f"{LOCAL}wait-hold"
TURN_HOLD_ITEM: Final = f"{LOCAL}turn-hold"
LINE_START_S: Final = 1.0  # a said line that has not started by then (no response lifecycle) counts as started
HOLD_AFTER_LINE_S: Final = 0.4  # the hold begins this long after the line has played out: a breath, not a jump
TAIL_MS: Final = 600  # the soft hold keeps this much of the hold message's trailing pause
SILENT: Final = 300  # |sample| below this is the pause


@functools.cache
def soft_hold(path: str, gain_db: float) -> bytes:
    """The hold message at ``gain_db``, its trailing pause cut to :data:`TAIL_MS` (8 kHz PCM16)."""
    pcm = np.frombuffer(audio(path), dtype="<i2")
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > SILENT)
    end = min(len(pcm), (int(loud[-1]) + 1 if loud.size else len(pcm)) + TAIL_MS * 8)
    scaled = np.clip(pcm[:end].astype(np.float64) * 10 ** (gain_db / 20), -32768, 32767)
    return scaled.astype("<i2").tobytes()


def queue_soft_hold(playout: Playout, item: str, path: str, gain_db: float) -> None:
    """One pass of a soft hold's loop as playout item ``item``: a new id each pass (the buffer takes no more audio
    for an item it has closed)."""
    playout.push(item, soft_hold(path, gain_db))
    playout.end_item(item)


class DeadAir:
    def __init__(
        self,
        policy: Waiting,
        playout: Playout,
        send: Callable[[ev.Command], None],
        emit: Callable[[ev.Report], None],
        flow: CallFlow,
        *,
        responding: Callable[[], bool],
        hold_audio: str | None = None,
        caller_speaking: Callable[[], bool] = lambda: False,
    ) -> None:
        self.policy = policy
        self._playout = playout
        self._send = send
        self._emit = emit
        self._flow = flow  # the soft hold is the core's hold axis (Hold.WAIT)
        self._clock = flow.now
        self._responding = responding  # a model response is under way (the line, or the model's own)
        self._caller_speaking = caller_speaking  # nothing is started over the caller (a barge-in, a question)
        self._hold_path = hold_audio or str(HOLD_WAV)
        self._waits: dict[str, float] = {}  # key -> when it began
        self._since: float | None = None  # the current stretch of waiting began
        self._said_at: float | None = None  # a line was said in this stretch, at
        self._line_seen = False  # ... and its response has started
        self._passes = 0  # of the soft hold's loop, this call
        self._last_filler: str | None = None
        self.fillers = 0
        self._quiet_from: float | None = None  # the caller has heard nothing since (this stretch)
        self._longest_s = 0.0  # the longest such silence of this stretch

    @property
    def waiting(self) -> bool:
        return bool(self._waits)

    @property
    def busy(self) -> bool:
        """A wait under way: the call's checks look at it on every beat (its filler and hold are timed)."""
        return self._since is not None

    @property
    def holding(self) -> bool:
        return self._flow.core.hold is Hold.WAIT

    def begin(self, key: str, announce: str | None = None) -> None:
        """A wait begins; ``announce``: the line that says what the agent is doing, said at once."""
        now = self._clock()
        self._waits[key] = now
        if self._since is None:
            self._since, self._said_at, self._line_seen = now, None, False
            self._quiet_from, self._longest_s = now, 0.0
        if announce:
            self._say(announce, "announce")

    def after_line(self, key: str) -> None:
        """A wait whose line someone else said just now (an orchestrator's filler): the soft hold follows it."""
        self.begin(key)
        self._said_at, self._line_seen = self._clock(), False

    def end(self, key: str) -> float:
        """A wait ended; the last one stops the soft hold at once. Returns the longest silence the caller heard
        in this stretch of waiting so far, in ms."""
        self._waits.pop(key, None)
        self._measure(heard=False)
        longest_ms = round(self._longest_s * 1000, 1)
        if self._waits:
            return longest_ms
        self._since = self._quiet_from = None
        if self.holding:
            self._flow.fire(Trigger.WAIT_OVER, "the wait ended")
            self._playout.flush()
            self._emit(ev.WaitHold(False))
        return longest_ms

    def interrupted(self) -> None:
        """A barge-in flushed the playout: the hold starts again only after the next line."""
        if self.holding:
            self._flow.fire(Trigger.WAIT_OVER, "barge-in")

    def _measure(self, heard: bool) -> None:
        """The caller hears something now (``heard``), or the silence goes on."""
        now = self._clock()
        if heard:
            self._quiet_from = None
        elif self._quiet_from is None:
            self._quiet_from = now
        else:
            self._longest_s = max(self._longest_s, now - self._quiet_from)

    def beat(self) -> None:
        if self._since is None:
            return
        now = self._clock()
        speaking = self._caller_speaking()
        self._measure(heard=speaking or self._responding() or not self._playout.idle)
        if speaking:
            return
        if self._responding():
            self._line_seen = True
            return
        if not self._playout.idle:
            return
        if self.holding:
            self._queue_hold()  # the loop: the message again once it has played out
        elif self._said_at is None:
            if now - self._since >= self.policy.filler_after_s:
                self._say(self._next_filler(), "filler")
        elif self._line_seen or now - self._said_at >= LINE_START_S:
            if self._quiet_from is None or now - self._quiet_from < HOLD_AFTER_LINE_S:
                return
            self._flow.fire(Trigger.WAIT_HOLD, "waiting")
            self._emit(ev.WaitHold(True))
            self._queue_hold()

    def _say(self, text: str, why: str) -> None:
        self._said_at, self._line_seen = self._clock(), False
        waited_ms = round((self._clock() - (self._since or self._clock())) * 1000, 1)
        self._emit(ev.FillerSaid(text, why, waited_ms))
        self._send(ev.Say(text))

    def _next_filler(self) -> str:
        lines = [f for f in self.policy.fillers if f != self._last_filler] or list(self.policy.fillers)
        line = lines[self.fillers % len(lines)]
        self.fillers += 1
        self._last_filler = line
        return line

    def _queue_hold(self) -> None:
        self._passes += 1
        item = f"{WAIT_HOLD_ITEM}-{self._passes}"
        queue_soft_hold(self._playout, item, self._hold_path, self.policy.hold_gain_db)


class TurnHold:
    """The soft hold while the answer to the caller's turn is slow: armed at the end of the caller's speech (where
    the service's VAD places it), it starts ``filler_after_s`` later with nothing playing, loops, and stops at once
    (flushed) when the agent's first audio comes, the caller speaks, or ``may_hold`` says the call is no longer
    just waiting on that answer (the answer came without audio, a tool's wait took over, the session was lost)."""

    def __init__(
        self,
        policy: Waiting,
        playout: Playout,
        emit: Callable[[ev.Report], None],
        flow: CallFlow,
        *,
        may_hold: Callable[[], bool],
        hold_audio: str | None = None,
        silence: Callable[[float], None] = lambda ms: None,
    ) -> None:
        self.policy = policy
        self._silence = silence  # (ms): an answered turn's silence, its end of speech to its audio or hold
        self._playout = playout
        self._emit = emit
        self._flow = flow  # the hold is the core's hold axis (Hold.TURN)
        self._clock = flow.now
        self._may_hold = may_hold  # the call waits on its answer and nothing else: no tool, no outage, no caller
        self._hold_path = hold_audio or str(HOLD_WAV)
        self._ended_at: float | None = None  # the caller's speech ended at (armed), on the session's clock
        self._held_at: float | None = None  # the hold began at, in this turn
        self._passes = 0  # of the hold's loop, this call

    @property
    def holding(self) -> bool:
        return self._flow.core.hold is Hold.TURN

    @property
    def busy(self) -> bool:
        """The answer to a turn owed: the call's checks look at it on every beat (its soft hold is timed)."""
        return self._ended_at is not None

    def turn_ended(self, at: float | None) -> None:
        """The caller's speech ended at ``at`` (None: now): the answer to their turn is owed."""
        self.stop()
        self._ended_at = self._clock() if at is None else at

    def agent_audio(self) -> None:
        """The agent's audio is about to be queued: the hold goes first, whole; the turn's silence is noted."""
        if self._ended_at is not None:
            self._silence(round(max(0.0, (self._held_at or self._clock()) - self._ended_at) * 1000, 1))
        self.stop()

    def stop(self) -> None:
        self._ended_at = self._held_at = None
        if self.holding:
            self._flow.fire(Trigger.TURN_OVER, "no longer waiting on the answer")
            self._playout.flush()
            self._emit(ev.WaitHold(False))

    def beat(self) -> None:
        if self._ended_at is None:
            return
        if not self._may_hold():
            self.stop()
        elif self.holding:
            if self._playout.idle:
                self._queue()  # the loop
        elif self._clock() - self._ended_at >= self.policy.filler_after_s and self._playout.idle:
            self._flow.fire(Trigger.TURN_HOLD, "slow answer")
            self._held_at = self._clock()
            self._emit(ev.WaitHold(True))
            self._queue()

    def _queue(self) -> None:
        self._passes += 1
        item = f"{TURN_HOLD_ITEM}-{self._passes}"
        queue_soft_hold(self._playout, item, self._hold_path, self.policy.hold_gain_db)


def dead_air(
    plan: Dialplan,
    playout: Playout,
    link: Link,
    emit: Callable[[ev.Report], None],
    flow: CallFlow,
    responding: Callable[[], bool],
) -> DeadAir | None:
    """The call's filler and soft hold, for a plan with business tools (None: it has none)."""
    if not plan.http_tools and not plan.mcp_servers and plan.orchestrator is None:
        return None
    return DeadAir(
        plan.waiting,
        playout,
        link.send,
        emit,
        flow,
        responding=responding,
        hold_audio=plan.outage.hold_audio,
        caller_speaking=lambda: link.caller_speaking,
    )


def turn_hold(
    plan: Dialplan,
    playout: Playout,
    emit: Callable[[ev.Report], None],
    flow: CallFlow,
    may_hold: Callable[[], bool],
    *,
    continuous: bool,
    silence: Callable[[float], None] = lambda ms: None,
) -> TurnHold | None:
    """The call's soft hold for a slow answer (None: an orchestrated plan, whose orchestrator has its own filler,
    or a continuous stream, whose model has no responses to wait on)."""
    if plan.orchestrator is not None or continuous:
        return None
    return TurnHold(
        plan.waiting, playout, emit, flow, may_hold=may_hold, hold_audio=plan.outage.hold_audio, silence=silence
    )
