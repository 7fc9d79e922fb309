"""A finished call of a rollout plan as its outcome record (``bridge.rollout.outcomes`` says each field), and the
plan's experiment after it (``bridge.rollout.records``): each decision applied once, audited with its evidence,
logged and counted."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bridge import events as ev
from bridge import metrics
from bridge.call.report import CallReport
from bridge.errors import ConfigError
from bridge.rollout import records
from bridge.rollout.experiment import Decision, shares_of
from bridge.rollout.health import Outcome
from bridge.rollout.outcomes import epoch_of
from bridge.rollout.policy import RolloutSpec
from bridge.rollout.store import RolloutStore
from bridge.serve.probe import Prober
from bridge.serve.variant import VariantCall
from bridge.store.connection import StoreUnavailable
from bridge.webhooks import outbox

if TYPE_CHECKING:
    from bridge.dialplan import Dialplan

log = logging.getLogger(__name__)


def _times(report: CallReport) -> tuple[float | None, float | None]:
    answered = next((t for t, r in report.reports if isinstance(r, ev.Answered)), None)
    ended = next((t for t, r in report.reports if isinstance(r, ev.CallEnded)), None)
    return answered, ended


def abandoned(report: CallReport) -> bool:
    """The caller hung up before being served (the table above)."""
    if report.end_reason == ev.ABANDONED_WHILE_RINGING:
        return True
    if report.ended_by is not ev.EndedBy.CALLER:
        return False
    if not report.answered or report.first_audio_ms is None:
        return True
    return len(report.turn_wait_ms) < len(report.caller_transcript)  # their last turn is still unanswered


def outcome_record(
    report: CallReport,
    stats: Mapping[str, Any],
    *,
    t: float,
    started: float,
    variant: str,
    epoch: str,
    shares: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """One finished call as its outcome record; ``stats`` is its :meth:`~bridge.rollout.health.CallStats.record`."""
    answered, ended = _times(report)
    handle = (ended - answered) / 1000 if answered is not None and ended is not None else 0.0
    disposition = (report.post_call or {}).get("disposition")  # the call's own model's, after the call
    return {
        "t": round(t, 3),
        "started": round(started, 3),
        "call_id": report.call_id,  # each record counts once (bridge.rollout.engine)
        "variant": variant,
        "epoch": epoch,
        "shares": dict(shares) if shares is not None else None,  # the split the weights promise (the SRM test)
        "outcome": str(stats.get("outcome", "ok")),
        "transferred": any(isinstance(r, ev.TransferDecided) for _, r in report.reports),
        # a caller who hangs up on the apology of a model that never connected is the connect failure's, counted once
        "abandoned": abandoned(report) and stats.get("outcome") != Outcome.CONNECT_FAILURE,
        "handle_time_s": round(max(handle, 0.0), 3),
        "greeting_ms": stats.get("greeting_ms"),
        "first_reply_ms": stats.get("first_reply_ms"),
        "cost_usd": stats.get("cost_usd"),
        "repeat": False,
        "disposition": disposition if isinstance(disposition, str) else None,
        # the compliance checks the call failed (bridge.call.checks); null: the plan has none
        "failed_checks": [c["name"] for c in report.checks if not c.get("passed")] if report.checks else None,
    }


class Outcomes:
    """A worker's outcome records and experiments (one per rollout plan). ``listen_key`` derives the key of the
    callers' hashes (repeat calls); without it no repeat is tracked."""

    def __init__(
        self, listen_key: str | None, rollout_keys: tuple[bytes, ...] = (), prober: Prober | None = None
    ) -> None:
        self.prober = prober  # probes of a plan's safe variant's model for the breaker (None: none)
        self.experiments = records.LiveExperiment(key=rollout_keys)  # records signed with none of them are left out
        self.caller_key = records.caller_key(listen_key.encode()) if listen_key else None
        self.rollout_keys = rollout_keys  # the first signs the records written here

    async def after_call(
        self,
        rollouts: RolloutStore,
        plan: Dialplan,
        caller: str,
        vc: VariantCall,
        report: CallReport,
        stats: Mapping[str, Any],
    ) -> None:
        """Write the call's outcome record, then run the plan's experiment on the records so far (and the
        sliding-window rule of ``bridge.rollout.health`` where the plan names ``rollout.rollback``)."""
        spec = plan.rollout_spec
        if spec is None:
            return
        if "rollback" in spec.model_fields_set:
            for rollback in await rollouts.check_rollback(plan.name):
                metrics.ROLLBACKS.labels(plan.name, rollback.variant).inc()
        flag = vc.rollout[1] if vc.rollout is not None else spec.default_flag()  # the weights its variant was drawn on
        now = time.time()
        _, ended = _times(report)
        outcome = outcome_record(
            report,
            stats,
            t=now,
            started=now - (ended or 0.0) / 1000,
            variant=vc.decision.variant,
            epoch=epoch_of(flag.weights, flag.kill),
            shares={n: round(s, 6) for n, s in shares_of({spec.safe: 1.0} if flag.kill else flag.weights).items()},
        )
        await records.append(rollouts.client, plan.name, outcome, caller, self.caller_key, self.rollout_keys)
        for decision in await self.experiments.after_call(rollouts.client, plan.name, spec):
            await _apply(rollouts, plan.name, spec, decision)
        await self.probe(rollouts, plan)
        metrics.export_estimates(plan.name, self.experiments.estimates(plan.name))

    async def probe(self, rollouts: RolloutStore, plan: Dialplan) -> bool:
        """When the plan's engine wants a probe (``bridge.rollout.probes``), its probes are on and none was sent
        within their bound: probe the safe variant's model, write the answer to the plan's stream and feed it, each
        decision it brings applied. True when a probe was sent."""
        spec, state = plan.rollout_spec, self.experiments.plans.get(plan.name)
        if spec is None or self.prober is None or not spec.probes.enabled or state is None:
            return False
        if state.replay.probe_wanted() is None or not await self.prober.due(rollouts.client, plan.name, spec.probes):
            return False
        answer = await self.prober.probe(plan, spec)
        entry = self.prober.entry(spec, answer)
        await records.append(rollouts.client, plan.name, entry, sign_key=self.rollout_keys)
        for decision in await self.experiments.after_call(rollouts.client, plan.name, spec):
            await _apply(rollouts, plan.name, spec, decision)
        return True


async def _apply(rollouts: RolloutStore, plan: str, spec: RolloutSpec, decision: Decision) -> None:
    try:
        taken = await records.apply_decision(rollouts, plan, spec, decision)
    except (StoreUnavailable, ConfigError) as exc:
        log.warning("rollout %s: %s of %s not applied: %s", plan, decision.action, decision.variant, exc)
        return
    if taken:
        metrics.ROLLOUT_DECISIONS.labels(plan, decision.variant, decision.action).inc()
        if decision.action == "rollback":
            metrics.ROLLBACKS.labels(plan, decision.variant).inc()
        log.warning("rollout %s: %s %s on evidence: %s", plan, decision.action, decision.variant, decision.reason)
        outbox.emit("rollout.decision", {"dialplan": plan, **decision.to_json()}, dialplan=plan)  # signed webhooks
