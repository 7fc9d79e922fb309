"""What a call session is told beyond its leg, plan, dialect and connector: its clock, its listeners, how it
reconnects, and what its worker wants to hear of it. Every field has a default: a session alone (a replay, a test)
needs none of them; a worker passes its breaker, beat and orchestrator client (``bridge/serve/worker.py``)."""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bridge import events as ev
from bridge.call.retry import RetryPolicy
from bridge.errors import ConnectError, ModelRefused
from bridge.orchestrator.client import Ask
from bridge.realtime.credentials import CredentialSource
from bridge.realtime.profile import AgentProfile
from bridge.runtime.metronome import Metronome

Listener = Callable[[ev.Report], None]


@dataclass(frozen=True, slots=True)
class CallOptions:
    listeners: Sequence[Listener] = ()  # each report of the call, as it happens
    clock: Callable[[], float] = time.monotonic
    max_reconnects: int = 20  # sessions lost per call before the call is given up
    max_session_s: float | None = None  # the service's session cap: a rollover before it
    credentials: CredentialSource | None = None  # invalidated when the service refuses one (a fresh one next)
    retry: RetryPolicy | None = None  # the backoff between reconnects (else the outage's)
    rng: random.Random | None = None  # the backoff's jitter
    # The 20 ms tick: a worker passes its loop's shared metronome (one wake-up for all its calls, on the media
    # clock); alone (replay, tests) a session keeps its own, started at the answer.
    metronome: Metronome | None = None
    model_down: bool = False  # the worker's breaker is open: no attempt before the answer, hold at once
    reject_when_down: bool = False  # no model at the answer: 503 (a front tries another node)
    on_connect: Callable[[ConnectError | None], None] | None = None  # each open's outcome (the worker's breaker)
    orchestrator: Ask | None = None  # an orchestrated plan's client (else the session opens its own)
    variant: str | None = None  # the rollout variant the orchestrator is told (else the dialect's name)
    # the profile each new session opens with: the plan's, or the caller's (a variant's, which follows a fallback
    # to another model and voice)
    profile: Callable[[], AgentProfile] | None = None
    # the service refused the model: True if the connector moved to another one
    on_refused: Callable[[ModelRefused], Awaitable[bool]] | None = None
    # play the plan's recording.consent_audio at the answer, before anything else (bridge/call/consent.py)
    consent_prompt: bool = False
    post_call_timeout_s: float = 10.0  # the post-call question's answer (bridge/call/wrapup.py) is awaited this long
