"""The console's rollout panel as JSON: the one place that knows the shape of the rollout flag.

A rollout dialplan has variants (dialect, model, voice, profile overrides), one of them safe, split by weights and
overridden by per-variant allow and deny lists and the kill switch (:mod:`bridge.rollout.policy`). The page draws
whatever this module describes: each variant with its weight, share, model and voice, and its health over the
window side by side in the same row (the columns listed in ``health.columns``; ``live``: its calls going on now,
counted in no rate; ``failed_rate``: its calls that failed their caller; ``connect_failures`` with ``fallbacks``
beside it, those of them that ran on its fallback model: recovered on fallback, not failed; ``failure_rate``: the
model failure rate the rollback rule reads, :mod:`bridge.rollout.health`), and
the settings an operator may edit (``editable``, each with a kind the editor knows: ``weights`` one number per
variant, ``switch``, ``variant-numbers`` one list of callers per variant), and who holds the kill switch while it is
on (``kill_holder``: ``{"by", "role", "at"}``, :mod:`.kill_switch`).

Two things decide a rollback, and the panel says which apply: the guarded rollout's tests on the outcome records
(``experiment``: :func:`bridge.rollout.records.current`, judged with the workers' key so that the page counts the
evidence they count), always; and the sliding-window rule over the health window (``health.rollback``) only when the
plan names a ``rollout.rollback`` section (``rollback_rule``), as the worker runs it (``bridge.serve.outcome``).
Otherwise the window's health is shown for reference only. ``metrics`` labels the experiment's metrics, guardrails in
the engine's order.

What was applied, not what was computed (:func:`as_applied`): the card's decisions and the charts' marks are those of
the engine's replay that the rollout audit holds, each with ``applied_at`` (the audit entry's time) beside ``t`` (the
last call it was decided on) and ``changed_flag``; a decision with no audit entry (the flag had moved off the epoch
decided on, so the flag refused it) is left out and counted (``refused_decisions``), and a candidate the engine
rolled back while the flag still gives it calls is ``rollback_pending``, never ``rolled_back``, until the flag is.

The verdict follows the flag (:func:`follow_flag`): the engine learns of new weights only from the first call drawn
under them, so between a change of the flag (a step, a rollback, a person's change, the kill switch) and the end of
that call the card shows the flag's step, says it waits for those calls (``pending``), and keeps the figures of the
calls so far.

:func:`panel` reads the store; :func:`dialplan_panel`, :func:`follow_flag` and :func:`preview` are pure.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from bridge.dialplan import RolloutPlans
from bridge.errors import ConfigError
from bridge.rollout import catalog, records
from bridge.rollout.engine import State
from bridge.rollout.experiment import GUARDRAILS
from bridge.rollout.health import WindowStats
from bridge.rollout.outcomes import epoch_of
from bridge.rollout.policy import (
    RolloutFlag,
    RolloutSpec,
    describe_variants,
    legacy_spec,
    parse_weights,
    shares,
    validate_flag,
)
from bridge.rollout.store import AuditEntry, RolloutStore, json_value
from bridge.store.read import read_live_calls
from bridge.store.record import unix
from bridge.supervisor.kill_switch import holder_of

AUDIT_COUNT = 30
DECISIONS_LOOKED_AT = 500  # a plan's most recent audit entries its applied decisions are looked for in
ROLLBACK_PENDING = "rollback_pending"  # the engine rolled the candidate back; the flag still gives it calls


class Editor(enum.StrEnum):
    """How the page edits a setting (its ``kind``); the editor of each is in static/rollout.js."""

    WEIGHTS = "weights"  # one number per variant
    SWITCH = "switch"  # a checkbox
    VARIANT_NUMBERS = "variant-numbers"  # callers' numbers per variant


# (setting, label, editor)
EDITABLE: tuple[tuple[str, str, Editor], ...] = (
    ("weights", "Weights (relative)", Editor.WEIGHTS),
    ("kill", "Kill switch (everyone on the safe variant)", Editor.SWITCH),
    ("allow", "Allow lists (always this variant)", Editor.VARIANT_NUMBERS),
    ("deny", "Deny lists (never this variant: the safe one instead)", Editor.VARIANT_NUMBERS),
)
EDITABLE_SETTINGS = frozenset(name for name, _, _ in EDITABLE)

# (key, label); the page shows a missing value as "n/a"
HEALTH_COLUMNS: tuple[tuple[str, str], ...] = (
    ("live", "Live now"),
    ("calls", "Calls"),
    ("failed_rate", "Failed calls"),  # failed their caller; one on the fallback model is recovered, not failed
    ("connect_failures", "Connect failures"),  # the page puts "N recovered on fallback" (fallbacks) beside it
    ("dropped", "Dropped sessions"),
    ("recovered", "Recovered sessions"),
    ("failure_rate", "Model failure rate"),  # the rollback rule's: connect failures (fallback's too) + drops
    ("greeting_p95_ms", "Greeting p95"),
    ("first_reply_p95_ms", "First reply p95"),
    ("truncate_failure_rate", "Barge-in recovery failures"),
    ("function_call_success_rate", "Function calls OK"),
    ("cost_per_call_usd", "Cost per call"),
)

# the experiment's metrics (bridge.rollout.experiment.GUARDRAILS) as the page labels them; a missing one: its key
METRIC_LABELS: dict[str, str] = {
    "failure_rate": "Model failure rate",  # the health's failure_rate: connect failures (fallback's too) + drops
    "abandon_rate": "Abandoned calls",
    "greeting_ms": "Greeting latency",
    "first_reply_ms": "First reply latency",
    "transfer_rate": "Transfers",
    "repeat_rate": "Repeat callers",
    "handle_time_s": "Handle time",
    "cost_per_call_usd": "Cost per call",
    "check_fail_rate": "Failed checks",
}


def dialplan_panel(
    dialplan: str,
    spec: RolloutSpec,
    flag: RolloutFlag,
    stored: bool,
    stats: Mapping[str, WindowStats],
    *,
    voice: str = "alloy",
    today: dt.date | None = None,
    live: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """One dialplan's panel: variants with weights and health, lists, kill switch, what may be edited. ``live``:
    each variant's calls going on now."""
    now = live or {}
    rows = [{"variant": n, "live": now.get(n, 0), **stats.get(n, WindowStats()).to_json()} for n in spec.names]
    return {
        "dialplan": dialplan,
        "stored": stored,  # False: nobody set a flag yet, these are the dialplan's defaults
        "variants": describe_variants(
            spec, flag, voice, catalog.shutdown_dates(), today or dt.datetime.now(dt.UTC).date()
        ),
        "safe_variant": spec.safe,
        "kill": flag.kill,
        "kill_holder": None if (holder := holder_of(flag)) is None else holder.to_json(),  # who may lift: .kill_switch
        "allow": json_value(flag.allow),
        "deny": json_value(flag.deny),
        "sticky": flag.sticky,
        # the worker runs the window's rollback rule only for a plan that names one (bridge.serve.outcome)
        "rollback_rule": "rollback" in spec.model_fields_set,
        "health": {
            "window_s": flag.window_s,
            "columns": [{"key": k, "label": label} for k, label in HEALTH_COLUMNS],
            "rows": rows,
            "rollback": {"min_calls": flag.min_calls, "failure_rate_threshold": flag.failure_rate_threshold},
        },
        "editable": [{"setting": name, "label": label, "kind": kind} for name, label, kind in EDITABLE],
        "values": {
            "weights": {n: flag.weight(n) for n in spec.names},
            "kill": flag.kill,
            "allow": {n: list(flag.allow.get(n, ())) for n in spec.names},
            "deny": {n: list(flag.deny.get(n, ())) for n in spec.names},
        },
    }


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _when(entry: AuditEntry) -> float | None:
    try:
        return dt.datetime.fromisoformat(entry.when.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return unix(entry.when)


def _kept(name: str, mark: Mapping[str, Any], decided: set[tuple[Any, float, Any]]) -> bool:
    """A chart's mark to draw: a re-arm, or an applied decision's."""
    return mark.get("action") == "rearm" or (name, round(float(mark.get("t") or 0), 3), mark.get("action")) in decided


def as_applied(experiment: Mapping[str, Any], audit: list[AuditEntry], flag: RolloutFlag) -> dict[str, Any]:
    """The experiment (:func:`bridge.rollout.records.current`) with only the decisions the audit holds (``audit``:
    the plan's entries, newest first): each with ``applied_at`` and ``changed_flag``; the charts' marks of the others
    left out; a rolled-back verdict the flag has not followed is ``rollback_pending``."""
    entries = [a for a in reversed(audit) if a.who == records.AUTO_DECISION_WHO]  # oldest first, each matched once
    decisions: list[dict[str, Any]] = []
    refused, kept_marks = 0, set()
    for d in experiment.get("decisions", []):
        wanted = _plain({"action": d.get("action"), **(d.get("evidence") or {})})
        entry = next((a for a in entries if _plain(a.evidence) == wanted), None)
        if entry is None:
            refused += 1
            continue
        entries.remove(entry)
        at = _when(entry)
        decisions.append({**d, "applied_at": at, "changed_flag": bool(entry.new), "audit_id": entry.id})
        kept_marks.add((d.get("variant"), round(float(d.get("t") or 0), 3), d.get("action")))
    estimates = {}
    for name, row in experiment.get("estimates", {}).items():
        verdict = row.get("verdict") if isinstance(row, Mapping) else None
        if not isinstance(verdict, Mapping):
            estimates[name] = row
            continue
        marks = [m for m in verdict.get("marks", []) if _kept(name, m, kept_marks)]
        shown = {**verdict, "marks": marks}
        if verdict.get("state") == State.ROLLED_BACK and flag.weight(name) > 0 and not flag.kill:
            shown["state"] = ROLLBACK_PENDING
            shown["next"] = f"rollback decided; the flag still gives {name} calls until it is applied"
        estimates[name] = {**row, "verdict": shown}
    return {**experiment, "decisions": decisions, "refused_decisions": refused, "estimates": estimates}


WAITING = "the first calls under the new weights"
FIRST = "the plan's first calls"  # no call of the plan has ended yet


def follow_flag(experiment: Mapping[str, Any], spec: RolloutSpec, flag: RolloutFlag) -> dict[str, Any]:
    """The experiment (:func:`bridge.rollout.records.current`) as the card shows it under ``flag``: ``flag_epoch``
    (the epoch the flag's calls will be drawn under) and ``pending``, None while the engine is on that epoch; else
    ``{"epoch", "kill", "shares"}`` (each variant's share in percent of new calls under the flag), and each
    candidate's verdict at the flag's step (its share, its holdout), waiting for the first calls under it, with no
    estimate of the calls or time that needs (the engine's were for the step before). A rolled-back candidate's verdict
    still says so."""
    flag_epoch = epoch_of(flag.weights, flag.kill)
    if experiment.get("epoch") == flag_epoch:
        return {**experiment, "flag_epoch": flag_epoch, "pending": None}
    weights = {spec.safe: 1.0} if flag.kill else {n: w for n, w in flag.weights.items() if w > 0}
    total = sum(weights.values()) or 1.0
    shares = {n: round(100.0 * weights.get(n, 0.0) / total, 3) for n in spec.names}
    pending = {"epoch": flag_epoch, "kill": flag.kill, "shares": shares}
    waiting = WAITING if experiment.get("epoch") is not None else FIRST
    estimates = {
        name: {**row, "verdict": _pending_verdict(row["verdict"], shares[name], spec, flag, waiting)}
        if isinstance(row, Mapping) and isinstance(row.get("verdict"), Mapping) and name in shares
        else row
        for name, row in experiment.get("estimates", {}).items()
    }
    return {**experiment, "estimates": estimates, "flag_epoch": flag_epoch, "pending": pending}


def _pending_verdict(
    verdict: Mapping[str, Any], share: float, spec: RolloutSpec, flag: RolloutFlag, waiting: str
) -> dict[str, Any]:
    """A candidate's verdict at the flag's step, before any call under it has ended (``waiting``: for what)."""
    last = spec.experiment.last_share
    out = {
        **verdict,
        "share": share,
        "holdout": spec.experiment.holdout if share >= last - 1e-6 else None,
        "waiting_for": [],
        "more_calls": None,
        "more_time_s": None,
        "pending": True,
    }
    if verdict.get("state") == State.ROLLED_BACK:
        return out  # its "next" says so and how to test it afresh
    if flag.kill:
        out["next"] = f"hold: the kill switch sends every call to {spec.safe}"
    elif share <= 0:
        out["next"] = "hold: no weight under the flag, so no calls to test"
    else:
        out["next"] = f"wait: no call at {share:g} % has ended yet; the verdict follows from {waiting}"
        out["waiting_for"] = [waiting]
    return out


async def panel(store: RolloutStore, plans: RolloutPlans, *, audit_count: int = AUDIT_COUNT) -> dict[str, Any]:
    """Every rollout dialplan (those of the dialplan files, and those with a stored flag) and the most recent audit
    entries. Raises StoreUnavailable when Redis is away."""
    names = sorted(set(plans) | set(await store.dialplans()))
    live: Counter[tuple[str, str]] = Counter((c.dialplan, c.variant) for c in await read_live_calls(store.client))
    out = []
    for name in names:
        spec, voice = plans.get(name, (legacy_spec(), "alloy"))
        stored = await store.stored_flag(name)
        flag = stored or spec.default_flag()
        window = await store.window(name, flag.window_s)
        variants = {v: n for (plan, v), n in live.items() if plan == name}
        out.append(dialplan_panel(name, spec, flag, stored is not None, window, voice=voice, live=variants))
        # with the workers' key: records they leave out for their signature are no evidence here either
        current = await records.current(store.client, name, spec, store.rollout_keys)
        audit = await store.audit(name, count=DECISIONS_LOOKED_AT)
        applied = as_applied(current, audit, flag)
        turned_on = next((a for a in audit if a.new.get("kill") is True), None) if flag.kill else None
        out[-1]["kill_reason"] = turned_on.reason if turned_on is not None else None  # why it was turned on
        out[-1]["experiment"] = follow_flag(applied, spec, flag)
    audit = await store.audit(count=audit_count)
    metrics = [{"key": m, "label": METRIC_LABELS.get(m, m)} for m in GUARDRAILS]
    return {"dialplans": out, "audit": [a.to_json() for a in audit], "metrics": metrics}


def normalize_changes(changes: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A change as the API takes it: ``weights`` may also be ``"NAME=W,NAME=W"`` (as on the command line)."""
    out = dict(changes)
    if isinstance(out.get("weights"), str):
        out["weights"] = parse_weights(out["weights"], source)
    return out


def preview(dialplan: str, spec: RolloutSpec, old: RolloutFlag, changes: Mapping[str, Any]) -> dict[str, Any]:
    """What saving ``changes`` would do, without doing it: each changed setting's old and new value, in the order of
    the flag's fields (as the audit entry will show them), and the shares after. Raises ConfigError for a setting
    the console may not edit or an invalid value, exactly as the store would, naming the field."""
    source = f"rollout {dialplan}"
    unknown = sorted(set(changes) - EDITABLE_SETTINGS)
    if unknown:
        raise ConfigError(source, unknown[0], f"not editable here (editable: {', '.join(sorted(EDITABLE_SETTINGS))})")
    new = validate_flag(old.model_dump() | normalize_changes(changes, source), source, spec)
    diff = [
        {"setting": name, "old": json_value(getattr(old, name)), "new": json_value(getattr(new, name))}
        for name in RolloutFlag.model_fields
        if getattr(old, name) != getattr(new, name)
    ]
    return {"dialplan": dialplan, "changes": diff, "shares": shares(spec, new)}
