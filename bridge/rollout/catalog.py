"""What the rollout knows about models, kept as data: a dated price table and the announced shutdown dates.

Both are YAML files in ``bridge/rollout/data/``; the price table can be replaced with a file of the same shape
(the ``price_table`` setting). A model missing from a table has no price (its calls have no cost estimate) or no
shutdown date. A dated snapshot (``gpt-realtime-2025-08-28``) is priced as its model unless it is listed itself;
shutdown dates are taken as listed, never inherited.

Pure apart from reading the files: no Redis, no asyncio.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from bridge.errors import ConfigError
from bridge.rollout.policy import Variant

SHUTDOWN_WARNING_DAYS = 60  # a variant whose model shuts down sooner than this is named at start-up and alerted on
_SNAPSHOT = re.compile(r"^(?P<model>.+)-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class Price:
    input: float  # USD per ``per_tokens`` input tokens
    output: float
    assumed: bool = False  # not published when the table was dated


@dataclass(frozen=True)
class PriceTable:
    as_of: str
    source: str
    per_tokens: int
    models: Mapping[str, Price]
    text: Mapping[str, Price] = field(default_factory=dict)  # text models (the replay's grader), apart

    def price(self, model: str) -> Price | None:
        snapshot = _SNAPSHOT.match(model)
        for table in (self.models, self.text):
            if model in table:
                return table[model]
            if snapshot and snapshot.group("model") in table:
                return table[snapshot.group("model")]
        return None

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """Estimated USD for these tokens on ``model``; None when the table has no price for it."""
        price = self.price(model)
        if price is None:
            return None
        return (input_tokens * price.input + output_tokens * price.output) / self.per_tokens


def _read(path: Path | str, text: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "(file)", f"invalid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ConfigError(str(path), "models", "expected a mapping of model names")
    return data


def _prices(entries: Any, source: str, key: str) -> dict[str, Price]:
    if not isinstance(entries, dict):
        raise ConfigError(source, key, "expected a mapping of model names")
    models: dict[str, Price] = {}
    for name, entry in entries.items():
        try:
            models[str(name)] = Price(float(entry["input"]), float(entry["output"]), bool(entry.get("assumed")))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(source, f"{key}.{name}", "expected {input: USD, output: USD}") from None
        if models[str(name)].input < 0 or models[str(name)].output < 0:
            raise ConfigError(source, f"{key}.{name}", "prices are >= 0")
    return models


def parse_prices(text: str, source: str) -> PriceTable:
    data = _read(source, text)
    models = _prices(data["models"], source, "models")
    per = data.get("per_tokens", 1_000_000)
    if not isinstance(per, int) or per <= 0:
        raise ConfigError(source, "per_tokens", "expected a positive whole number of tokens")
    text_models = _prices(data.get("text_models") or {}, source, "text_models")
    return PriceTable(str(data.get("as_of", "")), str(data.get("source", "")), per, models, text_models)


def _packaged(name: str) -> str:
    return resources.files("bridge.rollout").joinpath("data", name).read_text(encoding="utf-8")


@cache
def _default_prices() -> PriceTable:
    return parse_prices(_packaged("prices.yaml"), "bridge/rollout/data/prices.yaml")


def load_prices(path: Path | None = None) -> PriceTable:
    """The packaged table, or the one at ``path`` (the ``price_table`` setting). Raises ConfigError."""
    if path is None:
        return _default_prices()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "(file)", f"cannot read the price table: {exc}") from None
    return parse_prices(text, str(path))


@cache
def shutdown_dates() -> Mapping[str, dt.date]:
    """Model -> its announced shutdown date (``bridge/rollout/data/shutdowns.yaml``)."""
    data = _read("bridge/rollout/data/shutdowns.yaml", _packaged("shutdowns.yaml"))
    return {str(k): dt.date.fromisoformat(str(v)) for k, v in data["models"].items()}


@dataclass(frozen=True, slots=True)
class Shutdown:
    dialplan: str
    variant: str
    model: str
    role: str  # "model" or "fallback model"
    date: dt.date

    def days_left(self, today: dt.date) -> int:
        return (self.date - today).days

    def warning(self, today: dt.date) -> str:
        left = self.days_left(today)
        when = f"in {left} days" if left >= 0 else f"{-left} days ago"
        what = "move its traffic to another variant" if self.role == "model" else "give it another fallback model"
        return (
            f"dialplan {self.dialplan}, variant {self.variant}: {self.role} {self.model} has an announced shutdown "
            f"on {self.date.isoformat()} ({when}); {what}"
        )


def shutdowns(variants: Iterable[tuple[str, Variant]]) -> list[Shutdown]:
    """Every model of these ``(dialplan, variant)`` with an announced shutdown date."""
    dates = shutdown_dates()
    out: list[Shutdown] = []
    for dialplan, variant in variants:
        first, then = variant.models()
        for role, model in (("model", first), ("fallback model", then)):
            if model is not None and model in dates:
                out.append(Shutdown(dialplan, variant.name, model, role, dates[model]))
    return out


def due(found: Iterable[Shutdown], today: dt.date, within_days: int = SHUTDOWN_WARNING_DAYS) -> list[Shutdown]:
    """Those whose shutdown is at most ``within_days`` away (or past)."""
    return [s for s in found if s.days_left(today) <= within_days]
