"""One outcome record per finished call of a rollout plan, and the replay of records through the guarded rollout
(``bridge.rollout.experiment``) that both the worker (live) and ``callbridge rollout evaluate`` (offline) run. Pure.

A record (``bridge.serve.outcome.outcome_record`` builds it from the call's report) is a JSON object:

==================  ==================================================================================================
``t``               the end of the call, epoch seconds
``started``         the answer (or the start of the call), epoch seconds: which weights drew its variant
``call_id``         the bridge's id of the call: a record counts once
``caller``          the keyed hash of the caller's number (``bridge.rollout.records``; none for a withheld number):
                    the unit the weights randomise, and the cluster of every test's variance
``variant``         the variant the call ran on
``epoch``           the fingerprint of the weights (and kill switch) the call was drawn under (:func:`epoch_of`)
``shares``          those weights as shares (variant -> share of new calls): the split the sample-ratio test expects
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
``repeat``          written ``false``; a call back by the same caller within ``keys.REPEAT_WINDOW_S`` (72 h) adds a late
                    outcome of this call (below) when the later call ends
``disposition``     the call report's disposition, null where it has none
``failed_checks``   the names of the plan's compliance checks the call failed (``[]``: all passed); null where the
                    plan has no checks
``sig``             the record's HMAC with the node's ``rollout_key`` (``bridge.rollout.records``; none without one)
==================  ==================================================================================================

An entry ``{"rearm": VARIANT, "rearm_id": ID, "t": T}`` in the same stream (``callbridge rollout rearm``) starts that
candidate's evidence afresh. An entry ``{"late": true, "call_id": ID, "t": T, "repeat": true}`` is a late outcome of
an earlier call: the engine applies it when that call's window closes (``bridge.rollout.engine``).

Records arrive in the order calls end, so a call drawn under the old weights may end after the first call of the
new ones: the engine starts a new epoch at the first record whose epoch differs from the current one and whose call
started after the current epoch's first call, counts a late record of an older epoch in that epoch's split only,
and leaves it out of the tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bridge.rollout.experiment import Experiment, ExperimentSpec, epoch_of

__all__ = ["RECORD_FIELDS", "epoch_of", "evaluate", "in_time_order"]

RECORD_FIELDS = (
    "t",
    "started",
    "call_id",
    "variant",
    "epoch",
    "shares",
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


def in_time_order(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Entries in the order the workers fed them: a stream's (``rollout records`` prints each entry's stream ``id``,
    ``ms-seq``) in the order they were written; others in the order their calls ended (stable)."""
    items = list(records)
    ids = [_stream_id(r.get("id")) for r in items]
    if items and all(i is not None for i in ids):
        return [r for _, r in sorted(zip(ids, items, strict=True), key=lambda p: p[0] or (0, 0))]
    return sorted(items, key=lambda r: float(r.get("t") or 0.0))


def _stream_id(value: Any) -> tuple[int, int] | None:
    if not isinstance(value, str):
        return None
    ms, _, seq = value.partition("-")
    return (int(ms), int(seq)) if ms.isdigit() and seq.isdigit() else None


def compact(estimates: Mapping[str, Any]) -> dict[str, Any]:
    """The estimates without each guardrail's trend (``rollout evaluate``'s end line)."""
    return {
        variant: {
            k: ({x: y for x, y in v.items() if x != "trend"} if isinstance(v, dict) else v) for k, v in row.items()
        }
        for variant, row in estimates.items()
    }


def evaluate(
    spec: ExperimentSpec,
    safe: str,
    variants: Sequence[str],
    records: Iterable[Mapping[str, Any]],
    weights: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Every decision the live rollout would have taken on ``records`` and the estimates at the end: the JSON of
    ``callbridge rollout evaluate``."""
    exp = Experiment(spec, safe, variants, weights=weights)
    for record in in_time_order(records):
        exp.feed(record)
    return {"decisions": [d.to_json() for d in exp.decisions], "estimates": compact(exp.estimates())}
