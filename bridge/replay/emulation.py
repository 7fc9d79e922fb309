"""The emulator's settings per model and per rollout variant, in a script and on the command line.

A script's ``emulator.model_settings`` (a model name or fnmatch pattern -> settings) and ``emulator.variant_settings``
(a rollout variant's name -> settings) apply to the runs of that model or variant, over ``settings`` and
``dialect_settings``; ``callbridge replay --emulator-set [SCOPE:]NAME=VALUE`` (repeatable) sets one over the script's,
for every run or for the runs of one model (name or pattern), variant or dialect. So QA can make the candidate of a
rollout slower, costlier or failing while the safe variant is unchanged.

A model must be one the project knows (the price table's, a dialect's default, one a dialplan names) or a pattern
matching one; a variant must be one of a rollout dialplan's. Anything else is an error naming the file (or the
option) and the field, as a typo would otherwise leave every run unchanged.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

from bridge.dialplan import Dialplan, dialplan_files, load_dialplan
from bridge.emulator.faults import Settings as EmulatorSettings
from bridge.errors import ConfigError
from bridge.realtime.dialects import DIALECTS

OPTION: Final = "--emulator-set"
_SNAPSHOT: Final = re.compile(r"^(?P<model>.+)-\d{4}-\d{2}-\d{2}$")  # a dated snapshot of a model


@dataclass(frozen=True)
class Known:
    """The models and rollout variants a setting may name."""

    models: frozenset[str]
    variants: frozenset[str]

    def model_ok(self, pattern: str) -> bool:
        """A known model, a dated snapshot of one (``gpt-realtime-2025-08-28``), or a pattern matching one."""
        snapshot = _SNAPSHOT.match(pattern)
        if pattern in self.models or (snapshot is not None and snapshot.group("model") in self.models):
            return True
        return any(fnmatch.fnmatchcase(m, pattern) for m in self.models)

    def describe(self) -> str:
        return f"known models: {', '.join(sorted(self.models))}; variants: {', '.join(sorted(self.variants)) or '-'}"


def _plan_models(plan: Dialplan) -> set[str]:
    out = {plan.profile.model} if plan.profile.model else set()
    spec = plan.rollout_spec
    for variant in spec.variants if spec is not None else ():
        out.add(variant.model)
        if variant.fallback_model:
            out.add(variant.fallback_model)
    return out


@cache
def _from_dialplans(directory: str) -> tuple[frozenset[str], frozenset[str]]:
    models: set[str] = set()
    variants: set[str] = set()
    path = Path(directory)
    for file in dialplan_files(path) if path.is_dir() else []:
        try:
            plan = load_dialplan(file)
        except ConfigError:
            continue  # a broken plan is its own error, reported where it is used
        models |= _plan_models(plan)
        spec = plan.rollout_spec
        variants |= {v.name for v in spec.variants} if spec is not None else set()
    return frozenset(models), frozenset(variants)


def known(dialplans_dir: Path, plans: Iterable[Dialplan] = ()) -> Known:
    """What ``dialplans_dir``'s plans, ``plans``, the price table and the dialects' defaults name."""
    from bridge.rollout.catalog import load_prices, shutdown_dates

    models, variants = _from_dialplans(str(dialplans_dir.resolve()))
    extra = {d.default_model for d in DIALECTS.values()} | set(load_prices().models) | set(shutdown_dates())
    for plan in plans:
        extra |= _plan_models(plan)
    return Known(models | extra, variants)


def check_scopes(
    model_settings: Mapping[str, Any], variant_settings: Mapping[str, Any], src: str, known_names: Known
) -> None:
    """Every model and variant a script's emulator settings name is known; a ConfigError naming the field if not."""
    for model in model_settings:
        if not known_names.model_ok(model):
            field = f"emulator.model_settings.{model}"
            raise ConfigError(src, field, f"unknown model {model!r} ({known_names.describe()})")
    for variant in variant_settings:
        if variant not in known_names.variants:
            field = f"emulator.variant_settings.{variant}"
            raise ConfigError(src, field, f"unknown rollout variant {variant!r} ({known_names.describe()})")


def check_settings(value: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    """Each scope's settings are the emulator's; a ValueError naming the scope and the setting if not."""
    for scope, settings in value.items():
        try:
            EmulatorSettings().with_values(settings)
        except ValueError as exc:
            raise ValueError(f"{scope}: {exc}") from None
    return value


@dataclass(frozen=True)
class EmulatorSet:
    """One ``--emulator-set [SCOPE:]NAME=VALUE``: a setting for every run, or for the runs of one scope."""

    scope: str  # "" (every run), a dialect, a rollout variant, or a model (name or fnmatch pattern)
    name: str
    value: Any  # of the setting's type

    def applies(self, dialect: str, model: str, variant: str) -> bool:
        s = self.scope
        return not s or s in (dialect, variant) or fnmatch.fnmatchcase(model, s)


@dataclass(frozen=True)
class EmulatorSets:
    """The replay's ``--emulator-set`` options, in order (a later one wins)."""

    items: tuple[EmulatorSet, ...] = ()

    @classmethod
    def parse(cls, texts: Sequence[str], known_names: Known | None = None) -> EmulatorSets:
        """Each ``[SCOPE:]NAME=VALUE``; a ConfigError naming the option for a bad form, setting, value or scope."""
        items = []
        for text in texts:
            left, eq, value = text.partition("=")
            scope, colon, name = left.rpartition(":")
            scope, name = scope.strip(), name.strip()
            if not eq or not name or (colon and not scope):
                raise ConfigError(OPTION, text, "expected [MODEL|VARIANT|DIALECT:]NAME=VALUE")
            try:
                typed = EmulatorSettings().with_values({name: value}).as_dict()[name]  # "8150" -> 8150.0
            except ValueError as exc:
                raise ConfigError(OPTION, text, str(exc)) from None
            if scope and known_names is not None and not _scope_ok(scope, known_names):
                message = f"unknown model, variant or dialect {scope!r} ({known_names.describe()})"
                raise ConfigError(OPTION, text, message)
            items.append(EmulatorSet(scope, name, typed))
        return cls(tuple(items))

    def for_run(self, dialect: str, model: str, variant: str = "") -> dict[str, Any]:
        """What applies to a run in ``dialect`` on ``model`` (as ``variant``)."""
        return {s.name: s.value for s in self.items if s.applies(dialect, model, variant)}

    def __bool__(self) -> bool:
        return bool(self.items)


def _scope_ok(scope: str, known_names: Known) -> bool:
    return scope in DIALECTS or scope in known_names.variants or known_names.model_ok(scope)
