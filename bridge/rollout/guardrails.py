"""The guardrails a rollout's candidate is held to: how one call's outcome record gives each metric's value, its
kind, its default margin (relative to the safe variant's value) and floor (absolute), and a dialplan's setting of
one. Pure (the table is in ``bridge.rollout.experiment``'s docstring)."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

FAILED_OUTCOMES = frozenset({"connect_failure", "dropped"})
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
    offset: float = 0.0  # a mean's log(x + offset)

    def scale(self, x: float) -> float:
        """The value the tests compare: a mean's on the log scale, a latency's raw (scored against quantiles)."""
        return math.log(x + self.offset) if self.kind is Kind.MEAN else x


GUARDRAILS: dict[str, Guardrail] = {
    g.name: g
    for g in (
        Guardrail("failure_rate", Kind.PROPORTION, _failed, 0.5, 0.005, True),
        Guardrail("abandon_rate", Kind.PROPORTION, _flag("abandoned"), 0.25, 0.005, True),
        Guardrail("greeting_ms", Kind.LATENCY, _positive("greeting_ms"), 0.25, 100.0, True),
        Guardrail("first_reply_ms", Kind.LATENCY, _positive("first_reply_ms"), 0.25, 100.0, True),
        Guardrail("transfer_rate", Kind.PROPORTION, _flag("transferred"), 0.25, 0.01, False),
        Guardrail("repeat_rate", Kind.PROPORTION, _flag("repeat"), 0.25, 0.01, False),
        Guardrail("handle_time_s", Kind.MEAN, _positive("handle_time_s"), 0.25, 5.0, False, offset=1.0),
        Guardrail("cost_per_call_usd", Kind.MEAN, _positive("cost_usd"), 0.25, 0.005, False, offset=0.001),
        Guardrail("check_fail_rate", Kind.PROPORTION, _flag("failed_checks"), 0.5, 0.005, False),
    )
}


class GuardrailSetting(BaseModel):
    """A dialplan's setting of one guardrail: on or off, its relative margin and absolute floor (None: default).
    ``enabled`` is another name for ``on``; YAML 1.1 reads a bare ``on:`` key as the boolean true, taken as ``on``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    on: bool = True
    margin: float | None = Field(None, gt=0, le=5)
    floor: float | None = Field(None, ge=0)

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
