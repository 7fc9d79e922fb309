"""The guardrails a rollout's candidate is held to: how one call's outcome record gives each metric's value, its
kind, its default margin (relative to the safe variant's value) and floor (absolute), and a dialplan's setting of
one, and the ``experiment`` section of a dialplan's rollout that sets them (:class:`ExperimentSpec`). Pure (the table
is in ``bridge.rollout.engine``'s docstring)."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

FAILED_OUTCOMES = frozenset({"connect_failure", "dropped"})
REPEAT_WINDOW_S = 72 * 3600.0  # a call back within this makes a call a repeat (``bridge.store.keys``'s own window)
LATE_FIELDS = frozenset({"repeat"})  # a late outcome entry's fields that set a guardrail's value
DISPLAY_ALPHA = 0.05  # the estimates' intervals: always-valid 95 %


class Kind(enum.StrEnum):
    """How a guardrail's values are compared (``bridge.rollout.experiment``'s table)."""

    PROPORTION = "proportion"
    LATENCY = "latency"
    MEAN = "mean"


def _flag(key: str) -> Callable[[Mapping[str, Any]], float | None]:
    def value(record: Mapping[str, Any]) -> float | None:
        v = record.get(key)
        return None if v is None else float(bool(v))

    return value


def _positive(key: str) -> Callable[[Mapping[str, Any]], float | None]:
    def value(record: Mapping[str, Any]) -> float | None:
        v = record.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            return None
        return float(v)

    return value


def _failed(record: Mapping[str, Any]) -> float | None:
    return float(record.get("outcome") in FAILED_OUTCOMES)


@dataclass(frozen=True, slots=True)
class Guardrail:
    """One metric (higher is worse): how a record gives its value, and its defaults."""

    name: str
    kind: Kind
    value: Callable[[Mapping[str, Any]], float | None] = field(repr=False)
    margin: float  # relative: a share of the safe variant's value
    floor: float  # the margin's absolute least, in the metric's unit
    on: bool  # on by default
    delay_s: float = 0.0  # known only this long after the call (a late outcome); 0: in the call's own record
    last_margin: float | None = None  # the default harm line where the candidate stays (None: its margin)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        """Pickled by name (its value function is a closure): an engine's state can be kept and taken up again."""
        return (_named, (self.name,))


GUARDRAILS: dict[str, Guardrail] = {
    g.name: g
    for g in (
        Guardrail("failure_rate", Kind.PROPORTION, _failed, 0.5, 0.005, True, last_margin=0.1),
        Guardrail("abandon_rate", Kind.PROPORTION, _flag("abandoned"), 0.25, 0.005, True),
        Guardrail("greeting_ms", Kind.LATENCY, _positive("greeting_ms"), 0.25, 100.0, True),
        Guardrail("first_reply_ms", Kind.LATENCY, _positive("first_reply_ms"), 0.25, 100.0, True),
        Guardrail("transfer_rate", Kind.PROPORTION, _flag("transferred"), 0.25, 0.01, False),
        Guardrail("repeat_rate", Kind.PROPORTION, _flag("repeat"), 0.25, 0.01, False, delay_s=REPEAT_WINDOW_S),
        Guardrail("handle_time_s", Kind.MEAN, _positive("handle_time_s"), 0.25, 5.0, False),
        Guardrail("cost_per_call_usd", Kind.MEAN, _positive("cost_usd"), 0.25, 0.005, False),
        Guardrail("check_fail_rate", Kind.PROPORTION, _flag("failed_checks"), 0.5, 0.005, False),
    )
}


def _named(name: str) -> Guardrail:
    return GUARDRAILS[name]


class GuardrailSetting(BaseModel):
    """A dialplan's setting of one guardrail: on or off, its relative margin and absolute floor (None: default), and
    the margin of the harm line where the candidate serves most traffic (``last_margin``: the last step's own harm
    test and the watch; None: ``margin``). ``enabled`` is another name for ``on``; YAML 1.1 reads a bare ``on:`` key
    as the boolean true, taken as ``on``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    on: bool = True
    margin: float | None = Field(None, gt=0, le=5)
    floor: float | None = Field(None, ge=0)
    last_margin: float | None = Field(None, gt=0, le=5)

    @model_validator(mode="before")
    @classmethod
    def _on(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for alias in (True, "enabled"):
                if alias in data:
                    if "on" in data:
                        raise ValueError("give on once (enabled and a YAML 1.1 on: key are the same field)")
                    data["on"] = data.pop(alias)
        return data


class ExperimentSpec(BaseModel):
    """The ``experiment`` section of a dialplan's ``rollout`` (each field documented in docs/configuration.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(0.05, gt=0, lt=0.5)  # family-wise: false rollbacks, and false promotions, over all guardrails
    tau: float = Field(0.2, gt=0, le=10)  # mixture spread on the standardized effect
    min_calls: int = Field(50, ge=10)  # values of a metric per variant before its test is checked
    breaker_min_run: int = Field(5, ge=2)
    breaker_per_call: float = Field(1e-6, gt=0, lt=0.01)
    breaker_window_s: float = Field(1800.0, gt=0)  # the safe variant's recent calls the breaker sizes its run on
    promote: bool = True  # decide "promote" at all
    auto_promote: tuple[float, ...] = ()  # candidate weight steps in percent, e.g. (5, 25, 50, 100)
    holdout: float = Field(10.0, ge=0, lt=50)  # percent kept on the safe variant at the last step
    step_min_s: float = Field(3600.0, ge=0)  # the least time on a step before the next
    promote_look_s: float = Field(60.0, ge=0)  # promotions are looked for at most this often (rollbacks every call)
    cycle_s: float = Field(86400.0, ge=0)  # a business cycle: the least time from arming to the last step
    guard_s: float = Field(86400.0, ge=0)  # the last step's guard period before ``complete``
    clear: float = Field(2.0, gt=1, le=20)  # a clear regression, as a multiple of the margin
    power: float = Field(0.8, gt=0.5, lt=1)  # the harm test's power for a clear regression before a step
    stratum_s: float = Field(3600.0, gt=0)  # the time strata within an epoch
    watch_arl_days: float = Field(365.0, ge=1)  # the watch's false alarms: at most one per this many days
    srm_alpha: float = Field(0.01, gt=0, lt=0.5)  # the sample-ratio test's level (over the whole rollout)
    srm_concentration: float = Field(1000.0, gt=0)  # its Dirichlet prior's concentration
    guardrails: dict[str, GuardrailSetting] = Field(default_factory=dict)  # name -> setting; missing: the default
    _active_cache: list[tuple[tuple[Guardrail, float, float], ...]] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _known(self) -> ExperimentSpec:
        unknown = sorted(set(self.guardrails) - set(GUARDRAILS))
        if unknown:
            raise ValueError(f"guardrails: unknown {unknown}; known: {sorted(GUARDRAILS)}")
        steps = self.auto_promote
        if any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
            raise ValueError(f"auto_promote: increasing percentages in (0, 100] (got {list(steps)})")
        if not self.active:
            raise ValueError("guardrails: at least one must be on")
        for name, setting in self.guardrails.items():
            if setting.last_margin is not None and GUARDRAILS[name].kind is Kind.LATENCY:
                raise ValueError(
                    f"guardrails.{name}.last_margin: a latency is tested at its margin everywhere "
                    "(last_margin is for rates and means)"
                )
        return self

    @property
    def active(self) -> tuple[tuple[Guardrail, float, float], ...]:
        """The guardrails that are on, each with its relative margin and absolute floor."""
        if not self._active_cache:
            self._active_cache.append(self._active())
        return self._active_cache[0]

    def _active(self) -> tuple[tuple[Guardrail, float, float], ...]:
        out = []
        for name, g in GUARDRAILS.items():
            s = self.guardrails.get(name)
            if (s is None and g.on) or (s is not None and s.on):
                margin = g.margin if s is None or s.margin is None else s.margin
                floor = g.floor if s is None or s.floor is None else s.floor
                out.append((g, margin, floor))
        return tuple(out)

    def last_margin(self, g: Guardrail) -> float:
        """The relative margin of ``g``'s harm line where the candidate stays (the last step's own harm test and the
        watch, and any step of a fixed split): its ``last_margin``; else, with no margin set, the guardrail's default
        one (the failure rate's 10 %); else its margin."""
        s = self.guardrails.get(g.name)
        if s is not None and s.last_margin is not None:
            return s.last_margin
        if (s is None or s.margin is None) and g.last_margin is not None:
            return g.last_margin
        return next((m for a, m, _ in self.active if a.name == g.name), g.margin)

    @property
    def test_alpha(self) -> float:
        """Each guardrail's share of ``alpha`` (Bonferroni); its two harm tests take half each."""
        return self.alpha / len(self.active)

    @property
    def last_share(self) -> float:
        """The candidate's share at the last step: ``100 - holdout``."""
        return 100.0 - self.holdout

    def at_last(self, weights: Mapping[str, float], name: str, safe: str) -> bool:
        """Is ``name`` at its last step under ``weights``: it has a share and the safe variant keeps no more than the
        holdout (alone: ``100 - holdout``; beside other candidates: nothing is left to move to it). A step to such
        weights is the final step, with all its checks."""
        total = sum(w for w in weights.values() if w > 0) or 1.0
        if weights.get(name, 0.0) <= 0:
            return False
        return 100.0 * max(weights.get(safe, 0.0), 0.0) / total <= self.holdout + 1e-6

    def next_share(self, share: float) -> float | None:
        """The step after ``share`` percent (the last capped at ``100 - holdout``); None: none."""
        step = next((s for s in self.auto_promote if s > share + 1e-9), None)
        if step is None or share >= self.last_share - 1e-9:
            return None
        return min(step, self.last_share)


def step_weights(
    names: Sequence[str], safe: str, candidate: str, share: float, keep: Mapping[str, float] | None = None
) -> dict[str, float]:
    """``candidate`` at ``share`` percent, every other candidate at its weight in ``keep`` (percent of their sum;
    none: 0), the rest on ``safe``."""
    total = sum(w for w in (keep or {}).values() if w > 0) or 100.0
    others = {n: 100.0 * max((keep or {}).get(n, 0.0), 0.0) / total for n in names if n not in (safe, candidate)}
    rest = 100.0 - share - sum(others.values())
    return {n: share if n == candidate else rest if n == safe else others[n] for n in names}


def span(seconds: float) -> str:
    """A duration as people read it on the card and in ``rollout show``: ``45 s``, ``4 min``, ``24:00 h``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    m = round(s / 60)
    return f"{m} min" if m < 60 else f"{m // 60}:{m % 60:02d} h"
