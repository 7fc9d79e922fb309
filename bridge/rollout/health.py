"""Health, quality and cost of each rollout variant: one call's numbers, a window's, and the rollback rule. Pure.

:class:`CallStats` is a call-session listener (it dispatches on the report types of ``bridge.events``) that keeps
what the rollout needs of one call; the worker adds what the session does not report (the usage of each
``response.done``, a fallback to the variant's fallback model). A finished call becomes one :meth:`CallStats.record`
(a small JSON object) in the variant's sliding window in Redis (``bridge.rollout.store``), and
:meth:`WindowStats.of` sums a window of them:

========================  =====================================================================================
calls                     finished calls of the variant
connect_failures          calls whose model could not be reached: no session at the answer and none recovered, or
                          a connect failure of the variant's model that its fallback model then saved (``fallbacks``:
                          recovered on fallback)
dropped                   calls that lost their session and ended without it (hung up, failed over or given up
                          while it was away; and were not already a connect failure)
recovered                 calls whose session was lost (or not there at the answer) and came back: the call went
                          on; not a failure
failed                    calls that failed their caller: no model session at the answer (its fallback's neither)
                          and none recovered, or the session lost and not back; a call its fallback model took is
                          recovered on fallback, not failed (``failed_rate``: per call)
failure_rate              the model failure rate, the rollback rule's input: connect failures (those recovered on
                          fallback included: the variant's own model failed) and dropped sessions per call
abandoned                 calls whose caller hung up while ringing (CANCEL, or BYE before the 200 OK): not a
                          failure; counted in ``calls``
greeting_p95_ms           95th percentile (nearest rank) of the greeting: answer -> the agent's first audio, on
                          calls whose agent spoke first (``docs/operating.md``, what each figure means)
first_reply_p95_ms        95th percentile (nearest rank) of the first reply: the caller stops -> the agent's audio
barge-in recovery         truncates sent on a barge-in (``truncates``) that the service refused or never confirmed
                          (``truncate_failures``)
function calls            tool calls, and those whose output said ``"ok": false`` (unknown tool, bad arguments...)
cost                      estimated USD: each ``response.done``'s tokens at the model's price
                          (``bridge.rollout.catalog``); ``cost_per_call`` over the calls that had a price
========================  =====================================================================================

:func:`should_rollback` compares a variant's window with the safe variant's under the flag's
:class:`~bridge.rollout.policy.RollbackRule` and names every threshold it passed, with the numbers.
"""

from __future__ import annotations

import enum
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from bridge import events as ev
from bridge.rollout.policy import RollbackRule


class Outcome(enum.StrEnum):
    """How one call went for the rollout (its window record's ``outcome``; the table above says each)."""

    OK = "ok"
    CONNECT_FAILURE = "connect_failure"
    DROPPED = "dropped"
    RECOVERED = "recovered"
    ABANDONED = "abandoned"  # the caller hung up while ringing (ev.ABANDONED_WHILE_RINGING): not a failure


OUTCOMES: tuple[Outcome, ...] = tuple(Outcome)


def _tool_ok(output_json: str) -> bool:
    try:
        output = json.loads(output_json)
    except (TypeError, ValueError):
        return False
    return not (isinstance(output, dict) and output.get("ok") is False)


class CallStats:
    """What the rollout keeps of one call. Call it with each report (a ``CallSession`` listener)."""

    def __init__(self) -> None:
        self.unavailable = False
        self.recovered = False
        self.dropped = False  # the session is lost and has not come back (yet)
        self.fallback = False  # the variant's model failed to connect; the call ran on its fallback model
        self.abandoned = False  # the caller hung up before the answer
        self.greeting_ms: float | None = None
        self.first_reply_ms: float | None = None
        self.barge_ins = 0
        self.truncates = 0
        self.truncates_confirmed = 0
        self.tool_calls = 0
        self.tool_failures = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd: float | None = None  # set at the end of the call, from the tokens and the model's price
        self._table = (
            ev.ReportTable()
            .on(ev.RealtimeUnavailable, self._unavailable)
            .on(ev.Recovered, self._recovered)
            .on(ev.SessionLost, self._lost)
            .on(ev.Latency, self._latency)
            .on(ev.BargeIn, self._barge_in)
            .on(ev.TruncateSent, self._truncate_sent)
            .on(ev.Truncated, self._truncated)
            .on(ev.ToolCalled, self._tool)
            .on(ev.ToolFinished, self._business_tool)
            .on(ev.CallEnded, self._ended)
        )

    def __call__(self, report: ev.Report) -> None:
        self._table(report)

    def _unavailable(self, r: ev.RealtimeUnavailable) -> None:
        self.unavailable = True

    def _ended(self, r: ev.CallEnded) -> None:
        self.abandoned = r.outcome is ev.CallOutcome.ABANDONED

    def _recovered(self, r: ev.Recovered) -> None:
        self.recovered = True
        self.dropped = False

    def _lost(self, r: ev.SessionLost) -> None:
        self.dropped = True

    def _latency(self, r: ev.Latency) -> None:
        if r.segment == "greeting" and self.greeting_ms is None:
            self.greeting_ms = r.ms
        elif r.segment == "first_reply" and self.first_reply_ms is None:
            self.first_reply_ms = r.ms

    def _barge_in(self, r: ev.BargeIn) -> None:
        self.barge_ins += 1

    def _truncate_sent(self, r: ev.TruncateSent) -> None:
        self.truncates += 1

    def _truncated(self, r: ev.Truncated) -> None:
        self.truncates_confirmed += 1

    def _tool(self, r: ev.ToolCalled) -> None:
        self.tool_calls += 1
        self.tool_failures += 0 if _tool_ok(r.output_json) else 1

    def _business_tool(self, r: ev.ToolFinished) -> None:
        self.tool_calls += 1
        self.tool_failures += 0 if r.outcome is ev.ToolCallOutcome.OK else 1

    def add_usage(self, usage: ev.Usage) -> None:
        """The tokens of one ``response.done``."""
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens

    @property
    def outcome(self) -> Outcome:
        if (self.unavailable and not self.recovered) or self.fallback:
            return Outcome.CONNECT_FAILURE
        if self.abandoned:
            return Outcome.ABANDONED
        if self.dropped:
            return Outcome.DROPPED
        return Outcome.RECOVERED if self.recovered else Outcome.OK

    @property
    def failed(self) -> bool:
        """Whether the call failed its caller (the table above): a call its fallback model took did not."""
        return (self.unavailable and not self.recovered) or (self.dropped and not self.abandoned)

    @property
    def truncate_failures(self) -> int:
        return max(0, self.truncates - self.truncates_confirmed)

    def record(self) -> dict[str, Any]:
        """The call as one window entry (JSON-able; :meth:`WindowStats.of` reads it)."""
        return {
            "outcome": self.outcome,
            "fallback": self.fallback,
            "failed": self.failed,
            "greeting_ms": None if self.greeting_ms is None else round(self.greeting_ms, 1),
            "first_reply_ms": None if self.first_reply_ms is None else round(self.first_reply_ms, 1),
            "barge_ins": self.barge_ins,
            "truncates": self.truncates,
            "truncate_failures": self.truncate_failures,
            "tool_calls": self.tool_calls,
            "tool_failures": self.tool_failures,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 6),
        }


def p95(samples: Iterable[float]) -> float | None:
    """The 95th percentile by nearest rank; None for no samples."""
    ordered = sorted(samples)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _number(value: Any) -> bool:
    return isinstance(value, int | float)


# A window's figures that are the sum of its records' of the same name.
_SUMMED = ("barge_ins", "truncates", "truncate_failures", "tool_calls", "tool_failures")


def _failed(record: Mapping[str, Any]) -> bool:
    """Whether a window record's call failed its caller (a record without ``failed``: from its outcome and fallback)."""
    if isinstance(record.get("failed"), bool):
        return bool(record["failed"])
    return record.get("outcome") in (Outcome.CONNECT_FAILURE, Outcome.DROPPED) and not record.get("fallback")


def _int(record: Mapping[str, Any], key: str) -> int:
    value = record.get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


@dataclass(frozen=True, slots=True)
class WindowStats:
    """One variant's finished calls over the sliding window. Each call counts once, under one outcome."""

    calls: int = 0
    connect_failures: int = 0
    dropped: int = 0
    fallbacks: int = 0
    greeting_p95_ms: float | None = None
    first_reply_p95_ms: float | None = None
    barge_ins: int = 0
    truncates: int = 0
    truncate_failures: int = 0
    tool_calls: int = 0
    tool_failures: int = 0
    priced_calls: int = 0
    cost_usd: float = 0.0
    recovered: int = 0  # not a failure: the session came back and the call went on
    abandoned: int = 0  # not a failure: the caller hung up while ringing
    failed: int = 0  # calls that failed their caller (a call its fallback model took did not)

    @property
    def failures(self) -> int:
        """The model failures the rollback rule counts: connect failures (those recovered on fallback too) + drops."""
        return self.connect_failures + self.dropped

    @property
    def failed_rate(self) -> float:
        return self.failed / self.calls if self.calls else 0.0

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    @property
    def truncate_failure_rate(self) -> float:
        return self.truncate_failures / self.truncates if self.truncates else 0.0

    @property
    def function_call_success_rate(self) -> float | None:
        return (self.tool_calls - self.tool_failures) / self.tool_calls if self.tool_calls else None

    @property
    def cost_per_call(self) -> float | None:
        return self.cost_usd / self.priced_calls if self.priced_calls else None

    @classmethod
    def of(cls, records: Iterable[Mapping[str, Any]]) -> WindowStats:
        rows = list(records)
        outcomes = Counter(str(r.get("outcome")) for r in rows)
        costs = [float(r["cost_usd"]) for r in rows if _number(r.get("cost_usd"))]
        return cls(
            calls=len(rows),
            connect_failures=outcomes[Outcome.CONNECT_FAILURE],
            dropped=outcomes[Outcome.DROPPED],
            recovered=outcomes[Outcome.RECOVERED],
            abandoned=outcomes[Outcome.ABANDONED],
            fallbacks=sum(bool(r.get("fallback")) for r in rows),
            failed=sum(_failed(r) for r in rows),
            greeting_p95_ms=p95(float(r["greeting_ms"]) for r in rows if _number(r.get("greeting_ms"))),
            first_reply_p95_ms=p95(float(r["first_reply_ms"]) for r in rows if _number(r.get("first_reply_ms"))),
            priced_calls=len(costs),
            cost_usd=sum(costs, 0.0),
            **{name: sum(_int(r, name) for r in rows) for name in _SUMMED},
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["cost_usd"] = round(self.cost_usd, 6)
        out["failure_rate"] = round(self.failure_rate, 4)
        out["failed_rate"] = round(self.failed_rate, 4)
        out["truncate_failure_rate"] = round(self.truncate_failure_rate, 4)
        rate = self.function_call_success_rate
        out["function_call_success_rate"] = None if rate is None else round(rate, 4)
        cost = self.cost_per_call
        out["cost_per_call_usd"] = None if cost is None else round(cost, 6)
        return out


def _slower(stats: WindowStats, safe: WindowStats, allowed_ms: float | None) -> list[str]:
    """The greeting and first-reply p95s of ``stats`` more than ``allowed_ms`` above the safe variant's."""
    found: list[str] = []
    for figure, mine, theirs in (
        ("greeting", stats.greeting_p95_ms, safe.greeting_p95_ms),
        ("first-reply", stats.first_reply_p95_ms, safe.first_reply_p95_ms),
    ):
        if allowed_ms is None or mine is None or (excess := mine - (theirs or 0.0)) <= allowed_ms:
            continue
        found.append(
            f"{figure} p95 {mine:.0f} ms is {excess:.0f} ms above the safe variant's "
            f"{'n/a' if theirs is None else f'{theirs:.0f} ms'} (allowed: {allowed_ms:g} ms)"
        )
    return found


def should_rollback(variant: str, stats: WindowStats, safe: WindowStats, rule: RollbackRule) -> str | None:
    """Why ``variant`` must give its weight back to the safe variant, or None.

    None while the variant has fewer than ``rule.min_calls`` calls in the window. Then each check of the rule that
    is on fires when the variant is worse than the safe variant past its threshold (a safe variant with no calls in
    the window counts as perfect: no failures, no extra latency, every function call a success):

    * the model failure rate (connection failures, those its fallback model then took included, + dropped sessions
      per call; a recovered session is neither) above ``failure_rate_threshold`` and above the safe one's;
    * greeting p95 or first-reply p95 more than ``first_audio_p95_excess_ms`` above the safe one's (each checked
      on its own: the agent's first audio of a call, to the answer or to the caller's first turn);
    * failed truncates per truncate more than ``barge_in_failure_excess`` above the safe one's;
    * function-call success rate more than ``function_call_success_drop`` below the safe one's;
    * cost per call above ``cost_ratio_threshold`` times the safe one's.
    """
    if stats.calls < rule.min_calls:
        return None
    found: list[str] = []
    of = f"{stats.calls} calls in {rule.window_s} s"
    if stats.failure_rate > rule.failure_rate_threshold and stats.failure_rate > safe.failure_rate:
        found.append(
            f"failure rate {stats.failure_rate:.1%} ({stats.connect_failures} connection failures + {stats.dropped} "
            f"dropped of {of}) exceeds {rule.failure_rate_threshold:.1%} and the safe variant's "
            f"{safe.failure_rate:.1%} ({safe.failures} of {safe.calls})"
            + (f"; {stats.fallbacks} of the connection failures recovered on fallback" if stats.fallbacks else "")
        )
    found += _slower(stats, safe, rule.first_audio_p95_excess_ms)
    if rule.barge_in_failure_excess is not None and stats.truncates:
        excess = stats.truncate_failure_rate - safe.truncate_failure_rate
        if excess > rule.barge_in_failure_excess:
            found.append(
                f"barge-in recovery failures {stats.truncate_failure_rate:.1%} ({stats.truncate_failures} of "
                f"{stats.truncates} truncates) vs the safe variant's {safe.truncate_failure_rate:.1%} "
                f"(allowed: +{rule.barge_in_failure_excess:.1%})"
            )
    rate = stats.function_call_success_rate
    if rule.function_call_success_drop is not None and rate is not None:
        safe_rate = safe.function_call_success_rate
        drop = (1.0 if safe_rate is None else safe_rate) - rate
        if drop > rule.function_call_success_drop:
            found.append(
                f"function-call success {rate:.1%} ({stats.tool_calls - stats.tool_failures} of {stats.tool_calls}) "
                f"vs the safe variant's {'n/a' if safe_rate is None else f'{safe_rate:.1%}'} "
                f"(allowed: -{rule.function_call_success_drop:.1%})"
            )
    cost, safe_cost = stats.cost_per_call, safe.cost_per_call
    ratio = cost / safe_cost if cost is not None and safe_cost else None
    if rule.cost_ratio_threshold is not None and ratio is not None and ratio > rule.cost_ratio_threshold:
        found.append(
            f"cost per call ${cost:.4f} is {ratio:.2f}x the safe variant's ${safe_cost:.4f} "
            f"(allowed: {rule.cost_ratio_threshold:g}x)"
        )
    return f"{variant}: " + "; ".join(found) if found else None
