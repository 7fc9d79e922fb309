"""The rollout as pure decisions: which variant a call gets, and why. No Redis, no asyncio, no clock.

A rollout dialplan names its **variants** (:class:`Variant`: a dialect, a model, a voice, optional profile
overrides and a model rule) and a **safe** one (:class:`RolloutSpec`). Its **flag** (:class:`RolloutFlag`; one per
dialplan, kept in Redis by ``bridge.rollout.store``) holds the weights, per-variant allow and deny lists, a kill
switch and the stickiness. :func:`decide` turns a spec, a flag, a caller number and a call id into a
:class:`Decision`. Precedence, strongest first::

    kill switch          -> the safe variant          ("kill switch")
    allow list of V      -> V                         ("allow list of V")
    weights              -> the variant whose range holds the bucket ("caller bucket 1234 in [0, 5000) -> V")
    deny list of V       -> the safe variant instead of V  ("...; deny list of V -> safe")

The bucket is ``sha256(salt + ":" + key)`` reduced to 0..9999. The key is the normalized caller number
(``sticky="caller"``: a caller always gets the same variant, across calls and workers) or the call id
(``sticky="call"``: every call is drawn afresh). An anonymous caller (no digits) is bucketed by call id, or every
withheld number would land in the same bucket. The weights are relative; the buckets are laid out in the order the
dialplan lists its variants, the safe one last, so with two variants raising the other one's weight only ever moves
callers from the safe variant to it. Changing the salt reshuffles everyone.

Models, a rule of each variant (``model_selection``): ``new`` always uses ``model``; ``legacy`` always
``fallback_model``; ``auto`` uses ``model`` and names ``fallback_model`` as ``Decision.fallback_model``: when
``model`` fails to connect, the worker asks :func:`fallback` for the same variant on the fallback model, with the
voice made compatible (the flag's ``fallback_voice``), and tries once more.

Refused variants: when the service refuses a variant's model (``bridge.errors.ModelRefused``), the variant is
marked refused (``bridge.rollout.store``). :func:`decide` never hands a call to a refused variant: the kill switch,
an allow list or the draw that lands on one goes to :func:`next_healthy` instead (the safe variant if it is healthy,
else the first healthy variant in the bucket order). :func:`weights_after_refusal` moves a refused variant's weight
to the healthy ones.

Voices: marin and cedar exist only on gpt-realtime models (docs/protocol.md); any other model gets the flag's
``fallback_voice``.

Flags written before variants existed (``ga_percent``, plain ``allow``/``deny`` lists, ``model_selection``,
``ga_model``, ``legacy_model``) are read through :func:`migrate`: ``ga_percent`` becomes the weight of the spec's
first variant that is not the safe one (the safe one gets the rest), the lists become that variant's lists.
A ``dialect: rollout`` plan with no ``rollout`` section has the variants those flags meant
(:func:`legacy_spec`): ``ga`` (GA, ``gpt-realtime``, falling back to ``gpt-4o-realtime-preview``) and ``beta``
(the safe one).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bridge.errors import ConfigError
from bridge.realtime.dialects import BETA, GA
from bridge.realtime.dialects.common import REALTIME_ONLY_VOICES, voice_on
from bridge.rollout.experiment import ExperimentSpec
from bridge.rollout.probes import ProbeSpec

BUCKETS = 10_000  # a weight's share has a resolution of 0.01 %
VARIANT_NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"  # gpt-realtime-2.1 is a fine variant name
LEGACY_FIELDS = frozenset({"ga_percent", "model_selection", "ga_model", "legacy_model"})
ModelSelection = Literal["auto", "new", "legacy"]


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


def compatible_voice(voice: str, model: str, fallback_voice: str) -> str:
    """The voice to use on ``model``: marin and cedar only on gpt-realtime models."""
    return voice if voice_on(voice, model) else fallback_voice


def _numbers(numbers: Any) -> tuple[str, ...]:
    out: list[str] = []
    for n in numbers:
        norm = normalize_number(str(n))
        if norm and norm not in out:
            out.append(norm)
    return tuple(out)


# ------------------------------------------------------------------------------------------------ the dialplan's side
class Variant(BaseModel):
    """One way of talking to the model. ``profile`` overrides fields of the dialplan's profile for this variant
    (``{speed: 1.1}``, ``{extra: {...}}``); ``weight`` is its weight while nobody has stored a flag."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=VARIANT_NAME)
    dialect: str = Field(min_length=1)  # a name in bridge.realtime.dialects.DIALECTS (checked by the dialplan)
    model: str = Field(min_length=1)
    voice: str | None = None  # None: the dialplan profile's voice
    model_selection: ModelSelection = "auto"
    fallback_model: str | None = Field(None, min_length=1)
    profile: dict[str, Any] = Field(default_factory=dict)
    weight: float = Field(0.0, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _legacy_needs_a_fallback(self) -> Variant:
        if self.model_selection == "legacy" and self.fallback_model is None:
            raise ValueError("model_selection legacy uses fallback_model: set it")
        return self

    def models(self) -> tuple[str, str | None]:
        """(the model to try first, the model to retry with if it fails to connect)."""
        if self.model_selection == "legacy":
            assert self.fallback_model is not None  # the validator above
            return self.fallback_model, None
        if self.model_selection == "new" or self.fallback_model == self.model:
            return self.model, None
        return self.model, self.fallback_model


class RollbackRule(BaseModel):
    """When a variant counts as worse than the safe one, over the last ``window_s`` seconds (``bridge.rollout.health``).
    Each ``None`` turns its check off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_s: int = Field(300, ge=10, le=3600)  # le: keys.HEALTH_RETENTION_S
    min_calls: int = Field(20, ge=1)  # calls of the variant in the window before any check applies
    failure_rate_threshold: float = Field(0.2, gt=0, le=1)  # connection failures + dropped sessions per call
    first_audio_p95_excess_ms: float | None = Field(None, gt=0)  # greeting or first-reply p95 this much above safe's
    barge_in_failure_excess: float | None = Field(None, gt=0, le=1)  # failed truncates per truncate, above safe's
    function_call_success_drop: float | None = Field(None, gt=0, le=1)  # success rate this much below safe's
    cost_ratio_threshold: float | None = Field(None, gt=1)  # cost per call above this multiple of safe's


class RolloutSpec(BaseModel):
    """A dialplan's ``rollout`` section: its variants, the safe one, and the defaults of its flag."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    safe: str = Field(pattern=VARIANT_NAME)
    variants: tuple[Variant, ...] = Field(min_length=1)
    sticky: Literal["caller", "call"] = "caller"
    fallback_voice: str = Field("alloy", min_length=1)
    rollback: RollbackRule = RollbackRule()
    experiment: ExperimentSpec = ExperimentSpec()  # the sequential guardrails (bridge.rollout.experiment)
    require_gate: bool = False  # a candidate is armed only with a green replay report of it (bridge.rollout.attest)
    probes: ProbeSpec = ProbeSpec()  # active probes of the safe variant's model for the breaker (bridge.rollout.probes)

    @model_validator(mode="after")
    def _names(self) -> RolloutSpec:
        names = [v.name for v in self.variants]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"variant names must be unique: {dup}")
        if self.safe not in names:
            raise ValueError(f"safe: {self.safe!r} is not one of the variants {names}")
        if self.fallback_voice in REALTIME_ONLY_VOICES:
            raise ValueError(f"fallback_voice: {self.fallback_voice} exists only on gpt-realtime models")
        armed = [v.name for v in self.variants if v.name != self.safe and v.weight > 0]
        if self.require_gate and armed:
            raise ValueError(f"require_gate: {armed[0]} has a weight in the file: arm it after `rollout attest`")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variants)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    @property
    def order(self) -> tuple[str, ...]:
        """The bucket layout: the variants as listed, the safe one last."""
        return (*(n for n in self.names if n != self.safe), self.safe)

    @property
    def candidate(self) -> str | None:
        """The first variant that is not the safe one (where a legacy ``ga_percent`` goes)."""
        return next((n for n in self.names if n != self.safe), None)

    def default_flag(self) -> RolloutFlag:
        """The flag while nobody has stored one: the variants' own weights (all zero: everything on safe)."""
        weights = {v.name: v.weight for v in self.variants}
        if not any(weights.values()):
            weights[self.safe] = 100.0
        rule = self.rollback
        return RolloutFlag(weights=weights, sticky=self.sticky, fallback_voice=self.fallback_voice, **rule.model_dump())


LEGACY_GA_MODEL = GA.default_model
LEGACY_BETA_MODEL = BETA.default_model


def legacy_spec() -> RolloutSpec:
    """The variants of a ``dialect: rollout`` plan without a ``rollout`` section: GA against beta, beta safe."""
    return RolloutSpec(
        safe="beta",
        variants=(
            Variant(name="ga", dialect=GA.name, model=LEGACY_GA_MODEL, fallback_model=LEGACY_BETA_MODEL),
            Variant(name="beta", dialect=BETA.name, model=LEGACY_BETA_MODEL, weight=100),
        ),
    )


# ------------------------------------------------------------------------------------------------ the flag
class RolloutFlag(BaseModel):
    """One dialplan's rollout settings, stored in Redis. Which variant names are valid is the spec's business
    (:func:`check_flag`); this model checks what needs no spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: dict[str, float] = Field(default_factory=dict)  # variant -> relative weight (missing: 0)
    allow: dict[str, tuple[str, ...]] = Field(default_factory=dict)  # variant -> callers always on it
    deny: dict[str, tuple[str, ...]] = Field(default_factory=dict)  # variant -> callers never on it (safe instead)
    kill: bool = False  # every call on the safe variant, lists included
    # who holds the kill switch while it is on: the name, the role and the time (ISO 8601, UTC) it was turned on
    # with ("" while it is off, or when not recorded); who may turn it off: bridge.supervisor.kill_switch
    kill_by: str = Field("", max_length=200)
    kill_role: str = Field("", max_length=40)
    kill_at: str = Field("", max_length=40)
    sticky: Literal["caller", "call"] = "caller"
    salt: str = Field("callbridge", min_length=1, max_length=200)
    fallback_voice: str = Field("alloy", min_length=1)
    # automatic rollback (RollbackRule's fields, defaulted from the dialplan)
    window_s: int = Field(300, ge=10, le=3600)
    min_calls: int = Field(20, ge=1)
    failure_rate_threshold: float = Field(0.2, gt=0, le=1)
    first_audio_p95_excess_ms: float | None = Field(None, gt=0)
    barge_in_failure_excess: float | None = Field(None, gt=0, le=1)
    function_call_success_drop: float | None = Field(None, gt=0, le=1)
    cost_ratio_threshold: float | None = Field(None, gt=1)

    @field_validator("weights", mode="after")
    @classmethod
    def _weights(cls, weights: dict[str, float]) -> dict[str, float]:
        for name, w in weights.items():
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"{name}: a weight is a number >= 0 (got {w})")
        return weights

    @field_validator("allow", "deny", mode="after")
    @classmethod
    def _normalize(cls, lists: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        return {name: _numbers(numbers) for name, numbers in lists.items() if _numbers(numbers)}

    @field_validator("fallback_voice")
    @classmethod
    def _fallback_voice_everywhere(cls, voice: str) -> str:
        if voice in REALTIME_ONLY_VOICES:
            raise ValueError(f"{voice} exists only on gpt-realtime models; the fallback voice must exist on all models")
        return voice

    @model_validator(mode="after")
    def _lists(self) -> RolloutFlag:
        seen: dict[str, str] = {}
        for name, numbers in self.allow.items():
            for n in numbers:
                if n in seen:
                    raise ValueError(f"{n} is on the allow lists of both {seen[n]} and {name}")
                seen[n] = name
            both = set(numbers) & set(self.deny.get(name, ()))
            if both:
                raise ValueError(f"numbers on both the allow and the deny list of {name}: {sorted(both)}")
        return self

    def weight(self, variant: str) -> float:
        return self.weights.get(variant, 0.0)

    @property
    def rule(self) -> RollbackRule:
        return RollbackRule.model_validate({k: getattr(self, k) for k in RollbackRule.model_fields})


def check_flag(flag: RolloutFlag, spec: RolloutSpec, source: str) -> None:
    """Raise :class:`ConfigError` naming the field (``weights.NAME``, ``deny.NAME``, ...) if ``flag`` names a
    variant ``spec`` lacks, denies callers the safe variant, or leaves no weight at all."""
    known = set(spec.names)
    for field in ("weights", "allow", "deny"):
        for name in getattr(flag, field):
            if name not in known:
                raise ConfigError(source, f"{field}.{name}", f"no such variant (variants: {', '.join(spec.names)})")
    if flag.deny.get(spec.safe):
        raise ConfigError(source, f"deny.{spec.safe}", "the safe variant takes every denied caller; it cannot deny")
    if not any(flag.weight(n) > 0 for n in spec.names):
        raise ConfigError(source, "weights", "at least one variant needs a weight above 0")


def validate_flag(data: Mapping[str, Any], source: str, spec: RolloutSpec | None = None) -> RolloutFlag:
    """A flag from plain data, every error a :class:`ConfigError` naming the field; checked against ``spec``."""
    try:
        flag = RolloutFlag.model_validate(dict(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(flag)"
        raise ConfigError(source, field, err["msg"].removeprefix("Value error, ")) from None
    if spec is not None:
        check_flag(flag, spec, source)
    return flag


def migrate(data: Mapping[str, Any], spec: RolloutSpec) -> tuple[dict[str, Any], list[str]]:
    """A stored flag of either shape -> the fields of today's :class:`RolloutFlag`, and notes on what a legacy flag
    lost. ``ga_percent`` becomes the weights of ``spec.candidate`` and the safe variant; legacy ``allow`` and
    ``deny`` lists (JSON lists, not objects) become the candidate's lists; the model settings now live in the
    dialplan's variants and are dropped (a note says so when they were not the defaults)."""
    out = {k: v for k, v in data.items() if k not in LEGACY_FIELDS}
    notes: list[str] = []
    candidate = spec.candidate
    legacy = any(k in data for k in LEGACY_FIELDS) or any(isinstance(data.get(k), list) for k in ("allow", "deny"))
    if not legacy:
        return out, notes
    if "ga_percent" in data:
        percent = min(100.0, max(0.0, float(data["ga_percent"])))
        weights = {spec.safe: 100.0 - percent}
        if candidate is not None:
            weights[candidate] = percent
        out["weights"] = weights
    for field in ("allow", "deny"):
        numbers = data.get(field)
        if isinstance(numbers, list):
            out[field] = {candidate: numbers} if numbers and candidate is not None else {}
    defaults = {"model_selection": "auto", "ga_model": LEGACY_GA_MODEL, "legacy_model": LEGACY_BETA_MODEL}
    for key, default in defaults.items():
        if key in data and str(data[key]) != default:
            notes.append(f"{key}={data[key]} is no longer a flag setting: set it on the variants in the dialplan")
    return out, notes


# ------------------------------------------------------------------------------------------------ decisions
@dataclass(frozen=True, slots=True)
class Decision:
    variant: str
    dialect: str
    model: str
    voice: str
    reason: str
    bucket: int | None = None  # None when a list or the kill switch decided
    fallback_model: str | None = None  # the model to retry with if ``model`` fails to connect


def draw(spec: RolloutSpec, flag: RolloutFlag, b: int) -> tuple[str, int, int]:
    """The variant whose bucket range holds ``b``, and that range. Variants the spec lacks are left out; with no
    weight anywhere, everything is on the safe variant."""
    order = spec.order
    total = sum(flag.weight(n) for n in order)
    if total <= 0:
        return spec.safe, 0, BUCKETS
    start, cumulative = 0, 0.0
    for name in order:
        cumulative += flag.weight(name)
        end = round(cumulative * BUCKETS / total)
        if b < end and end > start:
            return name, start, end
        start = end
    return spec.safe, start, BUCKETS


def next_healthy(
    spec: RolloutSpec, refused: Collection[str], *, dialect: str | None = None, after: str | None = None
) -> str | None:
    """The variant a call goes to instead of a refused one: the safe variant if it is not refused, else the first
    variant in the bucket order that is not (``dialect``: only of that dialect; ``after``: never that one). None:
    every candidate is refused."""
    for name in (spec.safe, *spec.order):
        v = spec.variant(name)
        if name in refused or name == after or (dialect is not None and v.dialect != dialect):
            continue
        return name
    return None


def weights_after_refusal(spec: RolloutSpec, flag: RolloutFlag, refused: Collection[str]) -> dict[str, float] | None:
    """The flag's weights with every refused variant's weight moved to the healthy variants: all of it to the
    safe variant if it is healthy, else shared among the healthy ones in proportion to their weights (evenly if
    they have none). None: nothing to move, or no healthy variant to move it to."""
    moving = sum(flag.weight(n) for n in spec.names if n in refused)
    healthy = [n for n in spec.names if n not in refused]
    if moving <= 0 or not healthy:
        return None
    weights = {n: flag.weight(n) for n in spec.names}
    for n in refused:
        if n in weights:
            weights[n] = 0.0
    if spec.safe in healthy:
        weights[spec.safe] += moving
        return weights
    total = sum(weights[n] for n in healthy)
    for n in healthy:
        weights[n] += moving * (weights[n] / total if total > 0 else 1.0 / len(healthy))
    return weights


def decide(
    spec: RolloutSpec,
    flag: RolloutFlag,
    caller: str,
    call_id: str,
    *,
    voice: str = "alloy",
    refused: Collection[str] = (),
) -> Decision:
    """The variant, dialect, model and voice of one call. ``voice`` is the dialplan profile's voice (a variant's own
    voice wins; either is made compatible with the model). ``refused``: variants whose model the service refused
    (a call never goes to one while another is healthy)."""
    number = normalize_number(caller)
    b: int | None = None
    allowed = next((name for name, numbers in flag.allow.items() if number in numbers and name in spec.names), None)
    if flag.kill:
        name, reason = spec.safe, "kill switch"
    elif allowed is not None:
        name, reason = allowed, f"allow list of {allowed}"
    else:
        by_caller = flag.sticky == "caller" and has_digits(number)
        b = bucket(flag.salt, number if by_caller else call_id)
        name, start, end = draw(spec, flag, b)
        reason = f"{'caller' if by_caller else 'call'} bucket {b} in [{start}, {end}) -> {name}"
        if name != spec.safe and number in flag.deny.get(name, ()):
            reason += f"; deny list of {name} -> {spec.safe}"
            name = spec.safe
    if name in refused:
        instead = next_healthy(spec, refused)
        if instead is not None:
            reason += f"; {name} refused by the service -> {instead}"
            name = instead
    return variant_decision(spec.variant(name), flag, voice, reason, b)


def variant_decision(variant: Variant, flag: RolloutFlag, voice: str, reason: str, b: int | None = None) -> Decision:
    """The decision for ``variant``: its first model and its fallback, and its voice made compatible."""
    model, fallback_model = variant.models()
    wanted = variant.voice or voice
    chosen = compatible_voice(wanted, model, flag.fallback_voice)
    if chosen != wanted:
        reason += f"; voice {wanted} -> {chosen} (not on {model})"
    return Decision(variant.name, variant.dialect, model, chosen, reason, b, fallback_model)


def fallback(decision: Decision, *, voice: str, fallback_voice: str) -> Decision | None:
    """The decision to retry with when ``decision.model`` failed to connect (rule ``auto`` with a fallback model),
    else None. ``voice`` is the voice the variant wanted; ``fallback_voice`` the flag's."""
    if decision.fallback_model is None:
        return None
    model = decision.fallback_model
    chosen = compatible_voice(voice, model, fallback_voice)
    reason = f"{decision.reason}; {decision.model} failed to connect -> {model}"
    if chosen != voice:
        reason += f" with voice {chosen}"
    return replace(decision, model=model, voice=chosen, reason=reason, fallback_model=None)


def shares(spec: RolloutSpec, flag: RolloutFlag) -> dict[str, float]:
    """Each variant's share of the calls drawn by weight, in percent (the kill switch: all on the safe one)."""
    if flag.kill:
        return {n: (100.0 if n == spec.safe else 0.0) for n in spec.names}
    total = sum(flag.weight(n) for n in spec.names)
    if total <= 0:
        return {n: (100.0 if n == spec.safe else 0.0) for n in spec.names}
    return {n: round(100.0 * flag.weight(n) / total, 2) for n in spec.names}


def describe_variants(
    spec: RolloutSpec,
    flag: RolloutFlag,
    voice: str,
    shutdowns: Mapping[str, dt.date],
    today: dt.date,
    refused: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Each variant as ``rollout show --json``, the console and the API describe it. ``voice``: the dialplan
    profile's; ``shutdowns``: announced shutdown dates by model (``bridge.rollout.catalog.shutdown_dates``);
    ``refused``: the refused variants and what the service said (``RolloutStore.refused``)."""
    refused = refused or {}
    share = shares(spec, flag)
    out = []
    for v in spec.variants:
        first, then = v.models()
        shutdown, fallback_shutdown = shutdowns.get(first), shutdowns.get(then) if then is not None else None
        out.append(
            {
                "name": v.name,
                "safe": v.name == spec.safe,
                "dialect": v.dialect,
                "model": first,
                "fallback_model": then,
                "model_selection": v.model_selection,
                "voice": v.voice or voice,
                "profile": v.profile,
                "weight": flag.weight(v.name),
                "share_percent": share[v.name],
                "allow": list(flag.allow.get(v.name, ())),
                "deny": list(flag.deny.get(v.name, ())),
                "shutdown": None if shutdown is None else shutdown.isoformat(),
                "shutdown_days": None if shutdown is None else (shutdown - today).days,
                "fallback_shutdown": None if fallback_shutdown is None else fallback_shutdown.isoformat(),
                "refused": dict(refused[v.name]) if v.name in refused else None,
            }
        )
    return out


def parse_weights(text: str, source: str = "--weights") -> dict[str, float]:
    """``"a=75,b=25"`` -> ``{"a": 75.0, "b": 25.0}``; a :class:`ConfigError` names the bad part."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        try:
            weight = float(value) if sep else math.nan
        except ValueError:
            weight = math.nan
        if not name or not math.isfinite(weight) or weight < 0:
            message = f"expected NAME=WEIGHT with a number >= 0, got {part!r}"
            raise ConfigError(source, f"weights.{name or '?'}", message)
        out[name] = weight
    if not out:
        raise ConfigError(source, "weights", "expected NAME=WEIGHT[,NAME=WEIGHT...]")
    return out
