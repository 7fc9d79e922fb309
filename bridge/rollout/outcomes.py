"""One outcome record per finished call of a rollout plan, its epoch, and the replay of records through the
decision engine that both the worker (live) and ``callbridge rollout evaluate`` (offline) run. Pure.

A record (``bridge.serve.outcome.outcome_record`` builds it from the call's report) is a JSON object:

==================  ==================================================================================================
``t``               the end of the call, epoch seconds
``started``         the answer (or the start of the call), epoch seconds: which weights drew its variant
``variant``         the variant the call ran on
``epoch``           the fingerprint of the weights (and kill switch) the call was drawn under (:func:`epoch_of`)
``outcome``         ``ok``, ``connect_failure``, ``dropped`` or ``recovered`` (``bridge.rollout.health``)
``transferred``     the agent handed the caller over (a transfer was decided)
``abandoned``       the caller hung up before being served: while ringing (the end reason ``caller abandoned
                    while ringing``), before hearing the agent at all, or while waiting for the agent's answer to
                    their last turn (its first reply, or dead air later); a ``connect_failure`` is never also
                    ``abandoned`` (its caller hung up on the apology: the failure rate counts it)
``handle_time_s``   the answer to the end (a transfer ends our side of the call at the hand-off)
``greeting_ms``     the answer to the agent's first audio (null: none)
``first_reply_ms``  the caller's first turn to the agent's answer (null: none)
``cost_usd``        the call's estimated cost (null: no price)
``repeat``          the same caller called the plan again within ``keys.REPEAT_WINDOW_S`` (72 h; set on the earlier
                    when the later call ends; the caller is matched by a keyed hash, never the number)
``disposition``     the call report's disposition, null where it has none
``failed_checks``   the names of the plan's compliance checks the call failed (``[]``: all passed); null where the
                    plan has no checks
==================  ==================================================================================================

An **epoch** is the calls since the weights last changed. Records arrive in the order calls end, so a call drawn
under the old weights may end after the first call of the new ones; :class:`EpochReplay` starts a new epoch at the
first record whose epoch differs from the current one and whose call started after the current epoch's first call,
and leaves out records of an older epoch that end late.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bridge.rollout.experiment import Decision, Experiment, ExperimentSpec

RECORD_FIELDS = (
    "t",
    "started",
    "variant",
    "epoch",
    "outcome",
    "transferred",
    "abandoned",
    "handle_time_s",
    "greeting_ms",
    "first_reply_ms",
    "cost_usd",
    "repeat",
    "disposition",
    "failed_checks",
)


def epoch_of(weights: Mapping[str, float], kill: bool) -> str:
    """The fingerprint of a flag's weights as shares (so 1:1 and 50:50 are one epoch) and its kill switch."""
    total = sum(w for w in weights.values() if w > 0) or 1.0
    shares = {n: round(w / total, 6) for n, w in sorted(weights.items()) if w > 0}
    text = json.dumps({"shares": shares, "kill": kill}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class EpochReplay:
    """Records fed in the order they were written; each epoch's own :class:`Experiment` and its decisions."""

    def __init__(self, spec: ExperimentSpec, safe: str, variants: Sequence[str]) -> None:
        self.spec, self.safe, self.variants = spec, safe, tuple(variants)
        self.epoch: str | None = None
        self.epoch_started = float("-inf")
        self.experiment = Experiment(spec, safe, variants)
        self.decisions: list[tuple[str, Decision]] = []  # (epoch, decision), every epoch's

    def feed(self, record: Mapping[str, Any]) -> list[Decision]:
        """One more record; the decisions it brings in its epoch."""
        epoch = str(record.get("epoch", ""))
        started = float(record.get("started") or record.get("t") or 0.0)
        if epoch != self.epoch:
            if started < self.epoch_started:
                return []  # a call drawn under older weights that ended late
            self.epoch, self.epoch_started = epoch, started
            self.experiment = Experiment(self.spec, self.safe, self.variants, epoch=epoch)
        out = self.experiment.add(record)
        self.decisions += [(epoch, d) for d in out]
        return out


def in_time_order(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Records in the order their calls ended (stable: records of the same ``t`` keep their order)."""
    return sorted(records, key=lambda r: float(r.get("t") or 0.0))


def evaluate(
    spec: ExperimentSpec, safe: str, variants: Sequence[str], records: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """Every decision the live rollout would have taken on ``records``, and the last epoch's estimates: the JSON of
    ``callbridge rollout evaluate``."""
    replay = EpochReplay(spec, safe, variants)
    for record in in_time_order(records):
        replay.feed(record)
    estimates = {
        variant: {
            k: (
                {"value": v["value"], **({"vs_safe": v["vs_safe"]} if "vs_safe" in v else {})}
                if isinstance(v, dict)
                else v
            )
            for k, v in metrics.items()
        }
        for variant, metrics in replay.experiment.estimates().items()
    }
    return {"decisions": [d.to_json() for _, d in replay.decisions], "estimates": estimates}
