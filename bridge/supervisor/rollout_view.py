"""The console's rollout panel as JSON: the one place that knows the shape of today's rollout flag.

Today a rollout dialplan has two arms, GA and beta (the safe one), split by ``ga_percent``, overridden by the allow
and deny lists and the kill switch (:mod:`bridge.rollout.policy`). The page draws whatever this module describes:
the arms with their shares, the health table with the columns listed in ``health.columns``, the settings an operator
may edit (``editable``, each with a kind the editor knows: ``percent``, ``switch``, ``numbers``). A rollout of more
arms (weighted variants of dialect, model and voice) changes this module, not the page.

:func:`panel` reads the store; :func:`dialplan_panel` and :func:`preview` are pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bridge.errors import ConfigError
from bridge.rollout.policy import RolloutFlag, WindowStats
from bridge.rollout.store import RolloutStore, validate_flag

AUDIT_COUNT = 30
SAFE_ARM = "beta"  # the kill switch and the deny list send callers here

# (setting, label, editor kind); the editor of each kind is in static/rollout.js
EDITABLE: tuple[tuple[str, str, str], ...] = (
    ("ga_percent", "GA share (%)", "percent"),
    ("kill", "Kill switch (everyone on beta)", "switch"),
    ("allow", "Allow list (always GA)", "numbers"),
    ("deny", "Deny list (always beta)", "numbers"),
)
EDITABLE_SETTINGS = frozenset(name for name, _, _ in EDITABLE)

# (key, label); the page shows a missing value as "n/a"
HEALTH_COLUMNS: tuple[tuple[str, str], ...] = (
    ("calls", "Calls"),
    ("connect_failures", "Connection failures"),
    ("dropped", "Dropped sessions"),
    ("failure_rate", "Failure rate"),
)


def _value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _health_row(arm: str, stats: WindowStats) -> dict[str, Any]:
    return {
        "arm": arm,
        "calls": stats.calls,
        "connect_failures": stats.connect_failures,
        "dropped": stats.dropped,
        "failure_rate": round(stats.failure_rate, 4),
    }


def dialplan_panel(dialplan: str, flag: RolloutFlag, stored: bool, stats: Mapping[str, WindowStats]) -> dict[str, Any]:
    """One dialplan's panel: arms, lists, kill switch, health over the window, what may be edited."""
    ga_share = 0.0 if flag.kill else flag.ga_percent
    arms = [
        {"name": "ga", "label": "GA", "share_percent": ga_share, "model": flag.ga_model, "safe": False},
        {"name": "beta", "label": "beta", "share_percent": round(100.0 - ga_share, 2), "model": flag.legacy_model,
         "safe": True},
    ]  # fmt: skip
    return {
        "dialplan": dialplan,
        "stored": stored,  # False: nobody set a flag yet, these are the defaults
        "arms": arms,
        "safe_arm": SAFE_ARM,
        "kill": flag.kill,
        "allow": list(flag.allow),
        "deny": list(flag.deny),
        "sticky": flag.sticky,
        "model_selection": flag.model_selection,
        "health": {
            "window_s": flag.window_s,
            "columns": [{"key": k, "label": label} for k, label in HEALTH_COLUMNS],
            "rows": [_health_row(arm, stats.get(arm, WindowStats())) for arm in ("ga", "beta")],
            "rollback": {"min_calls": flag.min_calls, "failure_rate_threshold": flag.failure_rate_threshold},
        },
        "editable": [{"setting": name, "label": label, "kind": kind} for name, label, kind in EDITABLE],
        "values": {name: _value(getattr(flag, name)) for name in EDITABLE_SETTINGS},
    }


async def panel(
    store: RolloutStore, dialplans: Iterable[str] = (), *, audit_count: int = AUDIT_COUNT
) -> dict[str, Any]:
    """Every rollout dialplan (those given, e.g. from the dialplan files, and those with a stored flag) and the most
    recent audit entries. Raises StoreUnavailable when Redis is away."""
    names = sorted(set(dialplans) | set(await store.dialplans()))
    out = []
    for name in names:
        stored = await store.stored_flag(name)
        flag = stored or store.default_for(name)
        out.append(dialplan_panel(name, flag, stored is not None, await store.window_stats(name, flag.window_s)))
    audit = await store.audit(count=audit_count)
    return {"dialplans": out, "audit": [a.to_json() for a in audit]}


def preview(dialplan: str, old: RolloutFlag, changes: Mapping[str, Any]) -> dict[str, Any]:
    """What saving ``changes`` would do, without doing it: each changed setting's old and new value, in the order of
    the flag's fields (as the audit entry will show them). Raises ConfigError for a setting the console may not edit
    or an invalid value, exactly as the store would."""
    source = f"rollout {dialplan}"
    unknown = sorted(set(changes) - EDITABLE_SETTINGS)
    if unknown:
        raise ConfigError(source, unknown[0], f"not editable here (editable: {', '.join(sorted(EDITABLE_SETTINGS))})")
    new = validate_flag(old.model_dump() | dict(changes), source)
    diff = [
        {"setting": name, "old": _value(getattr(old, name)), "new": _value(getattr(new, name))}
        for name in RolloutFlag.model_fields
        if getattr(old, name) != getattr(new, name)
    ]
    return {"dialplan": dialplan, "changes": diff}
