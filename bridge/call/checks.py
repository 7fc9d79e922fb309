"""The plan's compliance checks (QA's scorecard, ``checks:`` in a dialplan) evaluated on one call's report, pure.

Each configured check gives one row ``{"name", "passed", "detail"}``, in this order:

* ``disclosure``: the agent said the phrase (``text``: its words in order, case and punctuation aside; or
  ``pattern``: a regular expression, case-insensitive) in a line whose transcript came within ``within_s`` of the
  answer (the greeting starts there);
* ``never_say``: none of the phrases is in any of the agent's lines (whole words, case aside);
* ``verify_before``: every call of ``tool`` came after a call of ``after`` had succeeded (its outcome ``ok``, and
  its output does not say ``"ok": false`` or ``"verified": false``); the bridge enforces it for business tools
  (``bridge/tools/guard.py``), so a call refused before verification (``unverified``) is counted, not a failure;
* ``max_dead_air``: the call's longest dead air (``CallReport.longest_silence_ms``) is at most ``max_dead_air_s``.

The session writes them into the report (``checks``) as the call ends, before the report line and the call's end
in Redis; a replay's runs carry them too, and replay compares them between variants.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from bridge import events as ev
from bridge.call.report import CallReport
from bridge.dialplan import Checks, Disclosure, VerifyBefore

_WORD = re.compile(r"[^\w']+")


def _words(text: str) -> str:
    """``text`` as its lower-case words, each with a space either side (a phrase matches whole words only)."""
    return f" {' '.join(_WORD.sub(' ', text.lower()).split())} "


def says(line: str, phrase: str) -> bool:
    """``line`` has ``phrase``'s words, in order and next to each other, case and punctuation aside."""
    return _words(phrase) in _words(line)


def row(name: str, passed: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "passed": passed, "detail": detail}


def _agent_lines(report: CallReport) -> list[tuple[float, str]]:
    return [(t, r.text) for t, r in report.reports if isinstance(r, ev.AgentSaid)]


def _disclosure(report: CallReport, d: Disclosure) -> dict[str, Any]:
    answered = next((t for t, r in report.reports if isinstance(r, ev.Answered)), None)
    if answered is None:
        return row("disclosure", True, "the call was not answered: nothing was said")

    def match(line: str) -> bool:
        return says(line, d.text) if d.text is not None else re.search(d.pattern or "", line, re.IGNORECASE) is not None

    said = [(t - answered) / 1000.0 for t, line in _agent_lines(report) if match(line)]
    if said and said[0] <= d.within_s:
        return row("disclosure", True, f"said {said[0]:.1f} s after the answer (within {d.within_s:g} s)")
    late = f"; said only {said[0]:.1f} s after the answer" if said else ""
    return row("disclosure", False, f"not said within {d.within_s:g} s of the answer{late}")


def _never_say(report: CallReport, phrases: Iterable[str]) -> dict[str, Any]:
    said = [p for p in phrases if any(says(line, p) for line in report.agent_transcript)]
    if said:
        return row("never_say", False, "the agent said " + ", ".join(repr(p) for p in said))
    return row("never_say", True, "none of the phrases was said")


def _succeeded(outcome: ev.ToolCallOutcome | None, output: str) -> bool:
    if outcome is not None and outcome is not ev.ToolCallOutcome.OK:
        return False
    try:
        value = json.loads(output or "{}")
    except json.JSONDecodeError:
        return True
    return not (isinstance(value, dict) and (value.get("ok") is False or value.get("verified") is False))


def _verify_before(report: CallReport, v: VerifyBefore) -> dict[str, Any]:
    verified = False
    reads = 0
    guarded = [r for _, r in report.reports if isinstance(r, ev.ToolGuarded) and r.name == v.tool]
    refused = sum(1 for r in guarded if r.guard is ev.ToolGuard.UNVERIFIED)
    held = f"; {refused} call(s) refused before {v.after} succeeded" if refused else ""
    for t, r in report.reports:
        if isinstance(r, ev.ToolFinished) and r.name == v.after:
            verified = verified or _succeeded(r.outcome, r.output_json)
        elif isinstance(r, ev.ToolCalled) and r.name == v.after:  # a tool the session runs itself: at once
            verified = verified or _succeeded(None, r.output_json)
        if isinstance(r, ev.ToolStarted | ev.ToolCalled) and r.name == v.tool:
            reads += 1
            if not verified:
                return row(
                    "verify_before", False, f"{v.tool} was called {t / 1000:.1f} s in, before {v.after} succeeded"
                )
    if not reads:
        return row("verify_before", True, f"{v.tool} was not called{held}")
    return row("verify_before", True, f"{v.tool} was called {reads} time(s), each after {v.after} succeeded{held}")


def _dead_air(report: CallReport, limit_s: float) -> dict[str, Any]:
    longest = report.longest_silence_ms
    if longest is None:
        return row("max_dead_air", True, "no wait on the agent was measured")
    ok = longest <= limit_s * 1000.0
    return row(
        "max_dead_air", ok, f"longest dead air {longest / 1000:.1f} s ({'within' if ok else 'over'} {limit_s:g} s)"
    )


def evaluate(checks: Checks, report: CallReport) -> list[dict[str, Any]]:
    """One row per configured check of ``checks``, on the ended call's ``report``."""
    out: list[dict[str, Any]] = []
    if checks.disclosure is not None:
        out.append(_disclosure(report, checks.disclosure))
    if checks.never_say:
        out.append(_never_say(report, checks.never_say))
    if checks.verify_before is not None:
        out.append(_verify_before(report, checks.verify_before))
    if checks.max_dead_air_s is not None:
        out.append(_dead_air(report, checks.max_dead_air_s))
    return out


def failed(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The names of the checks that failed."""
    return [str(r.get("name")) for r in rows if not r.get("passed")]


def report_checks(checks: Checks, report: CallReport, emit: Callable[[ev.Report], None]) -> None:
    """The ended call's checks into ``report`` (``checks``), and reported (:class:`~bridge.events.ChecksDone`)."""
    rows = evaluate(checks, report)
    report.checks = rows
    if rows:
        emit(ev.ChecksDone(len(rows), ",".join(failed(rows)), json.dumps(rows, separators=(",", ":"))))
