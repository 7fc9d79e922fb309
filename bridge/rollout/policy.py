"""The beta-to-GA rollout as pure decisions: no Redis, no asyncio, no clock.

A :class:`RolloutFlag` (one per dialplan; ``bridge.rollout.store`` keeps it in Redis) and a call's caller number
and call id give a :class:`Decision`: the dialect, the model and the voice of that call, and why.

Precedence, strongest first::

    kill switch   -> beta   ("kill switch")
    deny list     -> beta   ("deny list")
    allow list    -> GA     ("allow list")
    ga_percent    -> GA if bucket < ga_percent * 100, else beta   ("bucket 1234 < 2500")

The bucket is ``sha256(salt + ":" + key)`` reduced to 0..9999. The key is the normalized caller number
(``sticky="caller"``: a caller always gets the same dialect, across calls and workers) or the call id
(``sticky="call"``: every call is drawn afresh). An anonymous caller (no digits) is bucketed by call id, or every
withheld number would land in the same bucket. Raising ``ga_percent`` only ever moves callers from beta to GA; changing
the salt reshuffles everyone.

Models: ``model_selection`` ``new`` always uses ``ga_model``, ``legacy`` always ``legacy_model``, and ``auto`` uses
the model that belongs to the dialect (GA -> ``ga_model``, beta -> ``legacy_model``) and names ``legacy_model`` as
``Decision.fallback_model``: when the GA model fails to connect, the worker asks :func:`fallback` for the legacy
decision (same dialect, legacy model, voice made compatible) and tries once more.

Voices: marin and cedar exist only on gpt-realtime models (docs/protocol.md); any other model gets ``fallback_voice``.

Automatic rollback (:func:`should_rollback`): over the flag's sliding window, when GA has at least ``min_calls``
finished calls, its failure rate (connection failures + dropped sessions, per call) exceeds
``failure_rate_threshold``, and it is worse than beta's, the flag must move back to beta.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge import events as ev

DialectName = Literal["beta", "ga", "live"]  # a decision's dialect; a rollout's arms are the first two
NEW_DIALECT: DialectName = "ga"  # the rollout's two arms: callers move from the legacy one to the new one
LEGACY_DIALECT: DialectName = "beta"
Outcome = Literal["ok", "connect_failure", "dropped"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "connect_failure", "dropped")

BUCKETS = 10_000  # ga_percent has a resolution of 0.01 %
GA_ONLY_VOICES = frozenset({"marin", "cedar"})
GA_MODEL_PREFIX = "gpt-realtime"  # gpt-realtime, gpt-realtime-2025-08-28, gpt-realtime-mini, ...


def normalize_number(number: str) -> str:
    """``"sip:+1 (800) 555-0100@host"`` -> ``"+18005550100"``. A number without digits keeps its lowercased text."""
    text = number.strip()
    if text.lower().startswith(("sip:", "sips:", "tel:")):
        text = text.split(":", 1)[1]
    text = text.split("@", 1)[0]
    digits = re.sub(r"\D", "", text)
    if not digits:
        return text.lower()
    return ("+" if text.startswith("+") else "") + digits


def has_digits(number: str) -> bool:
    return any(c.isdigit() for c in number)


def bucket(salt: str, key: str) -> int:
    """0..9999, uniform and stable: the first 8 bytes of ``sha256(salt:key)`` modulo :data:`BUCKETS`."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def is_ga_model(model: str) -> bool:
    return model.startswith(GA_MODEL_PREFIX)


def compatible_voice(voice: str, model: str, fallback_voice: str) -> str:
    """The voice to use on ``model``: marin and cedar only on gpt-realtime models."""
    if voice in GA_ONLY_VOICES and not is_ga_model(model):
        return fallback_voice
    return voice


class RolloutFlag(BaseModel):
    """One dialplan's rollout settings. Every field has a safe default: a dialplan nobody configured stays on beta."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ga_percent: float = Field(0.0, ge=0, le=100)
    sticky: Literal["caller", "call"] = "caller"
    salt: str = Field("callbridge", min_length=1, max_length=200)
    allow: tuple[str, ...] = ()  # caller numbers forced to GA (normalized)
    deny: tuple[str, ...] = ()  # caller numbers forced to beta (normalized)
    kill: bool = False  # forces beta for everyone, lists included
    model_selection: Literal["auto", "new", "legacy"] = "auto"
    ga_model: str = Field("gpt-realtime", min_length=1)
    legacy_model: str = Field("gpt-4o-realtime-preview", min_length=1)
    fallback_voice: str = Field("alloy", min_length=1)
    # automatic rollback
    window_s: int = Field(300, ge=10, le=3600)  # le: keys.HEALTH_RETENTION_S
    min_calls: int = Field(20, ge=1)
    failure_rate_threshold: float = Field(0.2, gt=0, le=1)

    @field_validator("allow", "deny", mode="after")
    @classmethod
    def _normalize(cls, numbers: tuple[str, ...]) -> tuple[str, ...]:
        out: list[str] = []
        for n in numbers:
            norm = normalize_number(n)
            if norm and norm not in out:
                out.append(norm)
        return tuple(out)

    @field_validator("fallback_voice")
    @classmethod
    def _fallback_voice_everywhere(cls, voice: str) -> str:
        if voice in GA_ONLY_VOICES:
            raise ValueError(f"{voice} exists only on gpt-realtime models; the fallback voice must exist on all models")
        return voice

    @model_validator(mode="after")
    def _lists_disjoint(self) -> RolloutFlag:
        both = set(self.allow) & set(self.deny)
        if both:
            raise ValueError(f"numbers on both the allow and the deny list: {sorted(both)}")
        return self


@dataclass(frozen=True, slots=True)
class Decision:
    dialect: DialectName
    model: str
    voice: str
    reason: str
    bucket: int | None = None  # None when a list or the kill switch decided
    fallback_model: str | None = None  # the model to retry with if ``model`` fails to connect


def decide(flag: RolloutFlag, caller: str, call_id: str, *, voice: str = "alloy") -> Decision:
    """The dialect, model and voice of one call. ``voice`` is the profile's voice (made compatible with the model)."""
    number = normalize_number(caller)
    on_new: bool  # the rollout's new arm (GA), else its legacy arm (beta)
    b: int | None = None
    if flag.kill:
        on_new, reason = False, "kill switch"
    elif number in flag.deny:
        on_new, reason = False, "deny list"
    elif number in flag.allow:
        on_new, reason = True, "allow list"
    else:
        by_caller = flag.sticky == "caller" and has_digits(number)
        b = bucket(flag.salt, number if by_caller else call_id)
        cut = round(flag.ga_percent * BUCKETS / 100)
        on_new = b < cut
        reason = (
            f"{'caller' if by_caller else 'call'} bucket {b} {'<' if b < cut else '>='} {cut} ({flag.ga_percent:g}%)"
        )
    dialect = NEW_DIALECT if on_new else LEGACY_DIALECT
    if flag.model_selection == "new":
        model, fallback_model = flag.ga_model, None
    elif flag.model_selection == "legacy":
        model, fallback_model = flag.legacy_model, None
    else:
        model = flag.ga_model if on_new else flag.legacy_model
        fallback_model = flag.legacy_model if model != flag.legacy_model else None
    chosen_voice = compatible_voice(voice, model, flag.fallback_voice)
    if chosen_voice != voice:
        reason += f"; voice {voice} -> {chosen_voice} (not on {model})"
    return Decision(dialect, model, chosen_voice, reason, b, fallback_model)


def fallback(decision: Decision, *, voice: str, fallback_voice: str) -> Decision | None:
    """The decision to retry with when ``decision.model`` failed to connect (``model_selection: auto``), else None."""
    if decision.fallback_model is None:
        return None
    model = decision.fallback_model
    chosen_voice = compatible_voice(voice, model, fallback_voice)
    reason = f"{decision.reason}; {decision.model} failed to connect -> {model}"
    return replace(decision, model=model, voice=chosen_voice, reason=reason, fallback_model=None)


class CallHealth:
    """A call-session listener that keeps what the rollout's health needs of one call: :attr:`outcome` is
    ``connect_failure`` when no session was open at the answer and none was recovered, ``dropped`` when a session
    was lost mid-call, else ``ok``."""

    def __init__(self) -> None:
        self.unavailable = False
        self.recovered = False
        self.dropped = False

    def __call__(self, report: ev.Report) -> None:
        if isinstance(report, ev.RealtimeUnavailable):
            self.unavailable = True
        elif isinstance(report, ev.Recovered):
            self.recovered = True
        elif isinstance(report, ev.SessionLost):
            self.dropped = True

    @property
    def outcome(self) -> Outcome:
        if self.unavailable and not self.recovered:
            return "connect_failure"
        return "dropped" if self.dropped else "ok"


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Finished calls of one dialect over the sliding window. Each call counts once, under one outcome."""

    calls: int = 0
    connect_failures: int = 0
    dropped: int = 0

    @property
    def failures(self) -> int:
        return self.connect_failures + self.dropped

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    @classmethod
    def from_counts(cls, counts: dict[str, int]) -> WindowStats:
        """From per-outcome counts (``{"ok": 40, "connect_failure": 3, "dropped": 1}``)."""
        fails, dropped = counts.get("connect_failure", 0), counts.get("dropped", 0)
        return cls(counts.get("ok", 0) + fails + dropped, fails, dropped)


def should_rollback(ga: WindowStats, beta: WindowStats, flag: RolloutFlag) -> str | None:
    """The reason to move the flag back to beta, or None.

    None when nothing is on GA by percentage (kill switch on, or ga_percent already 0), when GA has fewer than
    ``min_calls`` calls in the window, when its failure rate is at or under the threshold, or when it is no worse than
    beta's (then the failures are not GA's fault). A beta with no calls counts as a 0 % failure rate.
    """
    if flag.kill or flag.ga_percent == 0:
        return None
    if ga.calls < flag.min_calls:
        return None
    if ga.failure_rate <= flag.failure_rate_threshold or ga.failure_rate <= beta.failure_rate:
        return None
    return (
        f"GA failure rate {ga.failure_rate:.1%} ({ga.connect_failures} connection failures + {ga.dropped} dropped of "
        f"{ga.calls} calls in {flag.window_s} s) exceeds {flag.failure_rate_threshold:.1%} and beta's "
        f"{beta.failure_rate:.1%} ({beta.failures} of {beta.calls})"
    )
