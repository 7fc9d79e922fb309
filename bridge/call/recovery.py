"""Recovery: a call whose Realtime session was lost gets a new one, and the caller is not left in dead air.

::

    SESSION_LOST ──► RECOVERING: Recovery.reconnect()
                       attempt 0 at once, then the retry policy's backoff (bridge.call.retry), for up to
                       ``hold_s`` (the dialplan's outage.hold_s; bridge.call.outage plays the hold message):
                       a transport failure reconnects with the same credential, an auth or session failure
                       invalidates it first (a fresh one next); a non-retryable failure gives up
                     ├─ a session ──► Recovered; the call sends a summary (:func:`summary`), then
                     │                resumes the cut answer, answers the turn or greeting still owed, or listens
                     └─ none / too many reconnects on this call ──► RecoveryFailed; the call fails over
                                                                     (bridge.call.outage)

The summary gives the new session the recent turns, the pending tool action and the keys pressed, never the audio
history (the caller's audio of the lost session is not replayed).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from bridge import events as ev
from bridge.call.builtin_tools import ToolResult
from bridge.call.retry import RetryPolicy, Step, delays, next_step
from bridge.errors import ConnectError
from bridge.realtime.credentials import CredentialSource

SUMMARY_TURNS = 6
OPEN_TIMEOUT_S = 10.0  # one attempt to open and configure a session
RESUME_INSTRUCTIONS = "Your last answer was cut off by a connection problem. Briefly continue it."
ANSWER_AFTER_ROLLOVER = "Your session was renewed while the caller waited for your answer. Answer their last turn."
AFTER_HOLD = (
    "The caller was put on hold for a moment by a connection problem and heard a hold message. "
    "Thank them briefly for waiting and continue where you left off."
)
ASK_TO_REPEAT = (
    "The connection changed just as the caller finished speaking, and their last words were lost. "
    "Apologise briefly and ask them to repeat what they said."
)

C = TypeVar("C")


def summary(
    caller: Sequence[str], agent: Sequence[str], pending: ToolResult | None, dtmf: Sequence[str], rolled_over: bool
) -> str:
    """A short summary for a new session: recent turns and pending tool state. Never the audio history."""
    turns: list[str] = []
    for who, text in (("Caller", caller), ("Agent", agent)):
        turns += [f"{who}: {t}" for t in text[-SUMMARY_TURNS:]]
    head = "This call continues in a new session." if rolled_over else "The call was reconnected."
    lines = [f"{head} Continue naturally; do not greet the caller again."]
    if turns:
        lines += ["Recent turns:", *turns]
    if pending is not None:
        lines.append(f"Pending: {pending.action} ({pending.target or 'no target'}) is under way.")
    if dtmf:
        lines.append(f"Keys the caller pressed: {' '.join(dtmf)}.")
    return "\n".join(lines)


def answer_instructions(greeting_owed: str | None, cut: bool, turn_lost: bool, after_hold: bool = False) -> str:
    """What a new session is asked for: the greeting if none of it was heard yet, the rest of a ``cut`` answer, a
    request to repeat when the caller's last turn went with the old session untranscribed, a thank-you for waiting
    when nothing was owed but the caller was on hold (``after_hold``), else the answer to the caller's turn."""
    if greeting_owed:
        return greeting_owed
    if cut:
        return RESUME_INSTRUCTIONS
    if turn_lost:
        return ASK_TO_REPEAT
    return AFTER_HOLD if after_hold else ANSWER_AFTER_ROLLOVER


@dataclass(frozen=True, slots=True)
class Reconnects:
    """How a call reconnects: the backoff (``retry``, jittered by ``rng``), the credential it invalidates when the
    service refuses one (a fresh one next), how many lost sessions a call survives, and how long an outage may last
    (``hold_s``: no attempt starts after it)."""

    retry: RetryPolicy
    rng: random.Random
    credentials: CredentialSource | None = None
    max_reconnects: int = 20
    hold_s: float = math.inf


class Recovery(Generic[C]):
    """Opens a new session for a call with the retry policy (see the module doc). ``open_session`` opens and
    configures one (raising :class:`~bridge.errors.ConnectError`); ``reconnects`` counts the successes."""

    def __init__(
        self,
        open_session: Callable[[], Awaitable[C]],
        emit: Callable[[ev.Report], None],
        policy: Reconnects,
        *,
        clock: Callable[[], float] = time.monotonic,
        gone: Callable[[], bool] = lambda: False,
    ) -> None:
        self._open, self._emit, self._clock = open_session, emit, clock
        self.policy = policy
        self.reconnects = 0
        self._gone = gone  # the caller left: stop reconnecting
        self._answer_owed = False  # the lost session's phase said a committed turn awaited its answer
        self._after_hold = False  # nothing was owed, but the caller heard the hold message: speak to them again

    def owe_answer(self) -> None:
        """The session is lost in THINKING: the caller's turn awaits its answer from the next one."""
        self._answer_owed = True

    def take_owed(self, active: bool) -> bool:
        """Whether an answer is owed (remembered, or a response was ``active`` when the session went); forgets it."""
        owed, self._answer_owed = self._answer_owed or active, False
        return owed

    def held(self, on_hold: bool) -> None:
        """The new session owes nothing, but the caller heard the hold message (``on_hold``): speak to them again."""
        self._after_hold = on_hold

    def take_after_hold(self) -> bool:
        """Whether the next answer thanks the caller for waiting; forgets it."""
        held, self._after_hold = self._after_hold, False
        return held

    async def reconnect(self, error_class: ev.ErrorClass | None, retryable: bool, refused: str | None) -> C | None:
        """A new session, or None (reported: the call should fail over, unless the caller left). ``refused``: the
        lost session's credential fingerprint, invalidated if the policy asks for a fresh credential."""
        policy = self.policy
        if self.reconnects >= policy.max_reconnects:
            self._emit(ev.RecoveryFailed(self.reconnects))
            return None
        cls = error_class or ev.ErrorClass.NETWORK
        until = self._clock() + policy.hold_s
        for attempt, delay in enumerate(delays(policy.retry, policy.rng)):
            step = next_step(cls, retryable, attempt, policy.retry)
            if step is Step.GIVE_UP:
                break
            if step is Step.REFRESH and policy.credentials is not None:
                policy.credentials.invalidate(refused)
            if attempt:
                if self._clock() + delay > until:
                    break  # the outage outlasted hold_s
                await asyncio.sleep(delay)
            if self._gone():
                return None
            try:
                client = await asyncio.wait_for(self._open(), max(0.05, min(OPEN_TIMEOUT_S, until - self._clock())))
            except ConnectError as exc:
                cls, retryable, refused = exc.error_class, exc.retryable, None
            except TimeoutError:
                cls, retryable, refused = ev.ErrorClass.NETWORK, True, None
            else:
                self.reconnects += 1
                self._emit(ev.Recovered(self.reconnects))
                return client
            self._emit(ev.ReconnectFailed(attempt, cls, str(step)))
        self._emit(ev.RecoveryFailed(None))
        return None
