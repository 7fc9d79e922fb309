"""Replay over time: a run compared with an earlier one (``--baseline DIR``), and an index of past runs
(``--history DIR``).

A **baseline** is an earlier green run's report directory (its ``report.json``), or a history directory (its newest
run accepted as the baseline: ``--accept-baseline`` on a green run; a red run never is one, ``bridge/replay/gate.py``).
Per script, :func:`changes` names what changed since: the status, the script itself (its digest), each failure and
each difference that is new or gone (unexpected and expected apart), and per run (dialect or variant) the model, the
caller-felt figures (the median and p90 reply gap, the greeting, the first reply, each turn's reply gap and barge-in
cut, the longest silence) that moved further than the baseline tolerance (``--baseline-tolerance-ms``, 150 ms), each
said within or beyond its budget (``--budget``: what turns the gate red). A script
the baseline lacks says so; the baseline's scripts not run now are listed in the meta. The report links the
baseline's page.

A **history directory** holds one subdirectory per run (``20261125-094202/``, the time it started: no run overwrites
another's report), ``index.json`` (a list, oldest first, of each run's summary: when, what ran, the pass rate, the
statuses, the unexpected differences and the median reply gap per dialect or variant) and ``index.html`` (the same,
newest first, each row linking its report, with the median reply gap per column drawn over time).

Files in, files out; the comparison itself is pure (report JSON in, sentences out).
"""

from __future__ import annotations

import difflib
import html
import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Final

from bridge.errors import ConfigError
from bridge.replay.compare import label
from bridge.replay.drift import drift, drift_lines
from bridge.replay.timing import median

INDEX_JSON: Final = "index.json"
INDEX_HTML: Final = "index.html"
REPORT_JSON: Final = "report.json"  # bridge.replay.report.JSON_FILE (not imported: that module is the page's)
REPORT_HTML: Final = "report.html"
PASSING: Final = frozenset({"same", "by_design", "expected"})  # statuses that pass the gate under --fail-on unexpected


@dataclass(frozen=True)
class Baseline:
    """An earlier run: its report directory and its report as data."""

    directory: Path
    data: Mapping[str, Any]

    @property
    def created(self) -> str:
        return str(self.data.get("meta", {}).get("created", ""))

    @property
    def scripts(self) -> dict[str, Mapping[str, Any]]:
        return {str(s.get("script")): s for s in self.data.get("scripts", [])}


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), "(file)", f"no such file: {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(str(path), "(file)", f"cannot read {what}: {exc}") from None


def latest_run(history: Path) -> Path | None:
    """The history's baseline: the newest run accepted as one (``--accept-baseline`` on a green run) whose report
    is still there; None without one. A run that was not accepted, red or green, never is the baseline."""
    index = history / INDEX_JSON
    if not index.is_file():
        return None
    for entry in reversed(read_index(history)):
        run = history / str(entry.get("dir", ""))
        if entry.get("baseline_accepted") and (run / REPORT_JSON).is_file():
            return run
    return None


def load_baseline(path: Path) -> Baseline:
    """The run in ``path``: a green run's report directory, or a history directory (its accepted baseline). A
    ConfigError names the path when it holds neither, or a red run."""
    directory = path
    if not (path / REPORT_JSON).is_file() and (path / INDEX_JSON).is_file():
        found = latest_run(path)
        if found is None:
            message = "--baseline: the history has no accepted baseline (--accept-baseline on a green run sets one)"
            raise ConfigError(str(path / INDEX_JSON), "(file)", message)
        directory = found
    if not directory.is_dir():
        raise ConfigError(str(path), "--baseline", "no such directory (a replay report's, or a history's)")
    data = _read_json(directory / REPORT_JSON, "--baseline needs a replay report's directory (report.json)")
    if not isinstance(data, dict) or not isinstance(data.get("scripts"), list):
        raise ConfigError(str(directory / REPORT_JSON), "scripts", "not a replay report")
    from bridge.replay.gate import check_green

    check_green(data, str(directory / REPORT_JSON))  # a red run is no baseline
    return Baseline(directory, data)


# --------------------------------------------------------------------------------------------------------------
# What changed since the baseline


def run_median_gap(run: Mapping[str, Any]) -> float | None:
    """The median reply gap of one run of a report (``runs.NAME.timing.turns[].reply_gap_ms``)."""
    turns = (run.get("timing") or {}).get("turns") or []
    return median([float(t["reply_gap_ms"]) for t in turns if t.get("reply_gap_ms") is not None])


def _ms(value: float | None) -> str:
    return "none" if value is None else f"{value:.0f} ms"


def _moved(a: float | None, b: float | None, tolerance_ms: float) -> bool:
    if a is None or b is None:
        return (a is None) != (b is None)
    return abs(a - b) > tolerance_ms


_KINDS: Final = (("failures", "failure"), ("unexpected", "unexpected difference"), ("expected", "expected difference"))
NOT_JUDGED: Final = "not judged by the emulator: replay against the real model before rollout"


@dataclass(frozen=True)
class Budget:
    """How much worse than the baseline a run may get before the gate fails (``--budget NAME=VALUE``)."""

    reply_gap_ms: float = 500.0  # the median reply gap may grow by this much
    reply_gap_p90_ms: float = 1000.0  # its 90th percentile (nearest rank) by this much
    greeting_ms: float = 500.0  # the greeting and the first reply, each
    barge_in_cut_ms: float = 300.0  # the longest the agent went on over a caller who spoke over it
    cost_rise: float = 0.10  # the cost of the call may rise by this share
    by_design: int = 0  # more differences by design than the baseline had

    @classmethod
    def parse(cls, items: Sequence[str]) -> Budget:
        """``NAME=VALUE`` items over the defaults; a ConfigError names a bad one."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, float] = {}
        for item in items:
            name, _, text = item.partition("=")
            if name not in known:
                raise ConfigError("--budget", name or item, f"not a budget; one of {', '.join(known)}")
            try:
                value = float(text)
            except ValueError:
                raise ConfigError("--budget", name, f"not a number: {text!r}") from None
            if not math.isfinite(value) or value < 0:
                raise ConfigError("--budget", name, f"must be a number of 0 or more, not {text!r}")
            values[name] = value
        typed: dict[str, Any] = {k: int(v) if known[k].type == "int" else v for k, v in values.items()}
        return cls(**typed)


def _p90(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def _turn_values(run: Mapping[str, Any], key: str) -> list[float]:
    return [float(t[key]) for t in (run.get("timing") or {}).get("turns") or [] if t.get(key) is not None]


def _grew(what: str, who: str, before: float | None, after: float | None, budget: float) -> list[str]:
    if before is None or after is None or after - before <= budget:
        return []
    return [f"{who}: {what} {_ms(before)} -> {_ms(after)} (+{after - before:.0f} ms, budget {budget:g} ms)"]


def run_regressions(name: str, now: Mapping[str, Any], then: Mapping[str, Any], budget: Budget) -> list[str]:
    """Where one run got worse than its baseline run by more than the budget allows."""
    who = label(name)
    gaps_now, gaps_then = _turn_values(now, "reply_gap_ms"), _turn_values(then, "reply_gap_ms")
    out = _grew("median reply gap", who, median(gaps_then), median(gaps_now), budget.reply_gap_ms)
    out += _grew("p90 reply gap", who, _p90(gaps_then), _p90(gaps_now), budget.reply_gap_p90_ms)
    for key, what in (("greeting_ms", "greeting"), ("first_reply_ms", "first reply")):
        before, after = (then.get("timing") or {}).get(key), (now.get("timing") or {}).get(key)
        out += _grew(what, who, before, after, budget.greeting_ms)
    cuts_now, cuts_then = _turn_values(now, "barge_in_cut_ms"), _turn_values(then, "barge_in_cut_ms")
    before_cut, after_cut = max(cuts_then, default=None), max(cuts_now, default=None)
    out += _grew("longest barge-in cut", who, before_cut, after_cut, budget.barge_in_cut_ms)
    cost_then, cost_now = then.get("cost_usd"), now.get("cost_usd")
    if cost_then and cost_now is not None and cost_now > cost_then * (1 + budget.cost_rise):
        rise = (cost_now / cost_then - 1) * 100
        out.append(
            f"{who}: cost of the call ${cost_then:.4f} -> ${cost_now:.4f} (+{rise:.0f} %, "
            f"budget {budget.cost_rise * 100:g} %)"
        )
    return out


def regressions(now: Mapping[str, Any], then: Mapping[str, Any] | None, budget: Budget) -> list[str]:
    """Where one script (its report JSON) got worse than the baseline's beyond the budget (none without one)."""
    if then is None:
        return []
    out: list[str] = []
    runs_now, runs_then = now.get("runs") or {}, then.get("runs") or {}
    added = len(now.get("by_design") or []) - len(then.get("by_design") or [])
    if set(runs_now) == set(runs_then) and added > budget.by_design:  # the same runs compared, or no count is alike
        out.append(f"{added} more difference(s) by design than the baseline (budget {budget.by_design})")
    for name in runs_now:
        if name in runs_then:
            out += run_regressions(name, runs_now[name], runs_then[name], budget)
    return out


def _config_changes(who: str, now: Mapping[str, Any], then: Mapping[str, Any]) -> list[str]:
    """What a run was told differently (its ``config``); none where the baseline did not record it."""
    if not now or not then:
        return []
    out: list[str] = []
    if now.get("instructions_sha") != then.get("instructions_sha"):
        digests = f"#{then.get('instructions_sha')} -> #{now.get('instructions_sha')}"
        out.append(f"{who}: instructions {digests} ({NOT_JUDGED})")
    if now.get("voice") != then.get("voice"):
        out.append(f"{who}: voice {then.get('voice') or '-'} -> {now.get('voice') or '-'} ({NOT_JUDGED})")
    if now.get("dialect") != then.get("dialect"):
        out.append(f"{who}: dialect {then.get('dialect')} -> {now.get('dialect')}")
    if now.get("greeting") != then.get("greeting"):
        out.append(f"{who}: greeting {then.get('greeting')!r} -> {now.get('greeting')!r}")
    tools_now, tools_then = set(now.get("tools") or []), set(then.get("tools") or [])
    out += [f"{who}: tool added: {t}" for t in sorted(tools_now - tools_then)]
    out += [f"{who}: tool removed: {t}" for t in sorted(tools_then - tools_now)]
    emu_now, emu_then = now.get("emulator") or {}, then.get("emulator") or {}
    for key in sorted(set(emu_now) | set(emu_then)):
        if emu_now.get(key) != emu_then.get(key):
            out.append(f"{who}: emulator setting {key}: {emu_then.get(key, '-')} -> {emu_now.get(key, '-')}")
    return out


def instructions_diff(now: Mapping[str, Any], then: Mapping[str, Any]) -> str:
    """The unified diff of a run's instructions against the baseline's ("" when they are the same)."""
    before, after = str(then.get("instructions", "")), str(now.get("instructions", ""))
    if before == after:
        return ""
    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), "baseline", "now", lineterm="", n=2)
    return "\n".join(lines)


def timing_moves(
    who: str, now: Mapping[str, Any], then: Mapping[str, Any], tolerance_ms: float, budget: Budget
) -> list[str]:
    """Every caller-felt figure of one run that moved further than ``tolerance_ms`` from its baseline run, within
    its budget or not (the budget decides red: :func:`run_regressions`): the median and p90 reply gap, the greeting,
    the first reply, each turn's reply gap and barge-in cut, the longest silence."""
    tn, tt = now.get("timing") or {}, then.get("timing") or {}
    gaps_now, gaps_then = _turn_values(now, "reply_gap_ms"), _turn_values(then, "reply_gap_ms")
    figures: list[tuple[str, float | None, float | None, float | None]] = [
        ("median reply gap", median(gaps_then), median(gaps_now), budget.reply_gap_ms),
        ("p90 reply gap", _p90(gaps_then), _p90(gaps_now), budget.reply_gap_p90_ms),
        ("greeting", tt.get("greeting_ms"), tn.get("greeting_ms"), budget.greeting_ms),
        ("first reply", tt.get("first_reply_ms"), tn.get("first_reply_ms"), budget.greeting_ms),
    ]
    turns_now = {t.get("turn"): t for t in tn.get("turns") or []}
    for before in tt.get("turns") or []:
        after = turns_now.get(before.get("turn")) or {}
        turn = before.get("turn")
        figures.append((f"reply gap after turns[{turn}]", before.get("reply_gap_ms"), after.get("reply_gap_ms"), None))
        cuts = before.get("barge_in_cut_ms"), after.get("barge_in_cut_ms")
        if cuts != (None, None):
            figures.append((f"barge-in cut at turns[{turn}]", *cuts, budget.barge_in_cut_ms))
    figures.append(("longest silence", tt.get("longest_silence_ms"), tn.get("longest_silence_ms"), None))
    out: list[str] = []
    for what, before, after, allowed in figures:
        if not _moved(before, after, tolerance_ms):
            continue
        delta = f"{after - before:+.0f} ms; " if before is not None and after is not None else ""
        within = ""
        if allowed is not None and before is not None and after is not None:
            within = f", {'beyond' if after - before > allowed else 'within'} the budget {allowed:g} ms"
        out.append(f"{who}: {what} {_ms(before)} -> {_ms(after)} ({delta}tolerance {tolerance_ms:g} ms{within})")
    return out


def _run_changes(
    name: str, now: Mapping[str, Any], then: Mapping[str, Any], tolerance_ms: float, budget: Budget
) -> list[str]:
    who = label(name)
    out: list[str] = []
    if now.get("model") != then.get("model"):
        out.append(f"{who}: model {then.get('model') or '?'} -> {now.get('model') or '?'}")
    out += _config_changes(who, now.get("config") or {}, then.get("config") or {})
    out += timing_moves(who, now, then, tolerance_ms, budget)
    cost_then, cost_now = then.get("cost_usd"), now.get("cost_usd")
    if cost_then is not None and cost_now is not None and abs(cost_now - cost_then) > 0.01 * max(cost_then, 1e-9):
        out.append(f"{who}: cost of the call ${cost_then:.4f} -> ${cost_now:.4f} ({cost_now / cost_then - 1:+.0%})")
    if bool(now.get("ok", True)) != bool(then.get("ok", True)):
        out.append(f"{who}: expectations {'pass' if now.get('ok', True) else 'fail'} now")
    return out


BASELINE_TOLERANCE_MS: Final = 150.0  # a figure that moved further than this since the baseline is listed (why: docs)


def _production(script: Mapping[str, Any]) -> dict[str, str]:
    runs = [r for r in (script.get("runs") or {}).values() if (r.get("config") or {}).get("production")]
    return dict(runs[0]["config"]["production"]) if runs else {}


def _moves(now: Mapping[str, Any], then: Mapping[str, Any]) -> list[str]:
    """Where the plan's calls go in production, moved: a dialect move (beta -> GA), a model move."""
    after, before = _production(now), _production(then)
    if not after or not before:
        return []
    out = []
    if after.get("dialect") != before.get("dialect"):
        moved = f"{label(str(before.get('dialect')))} -> {label(str(after.get('dialect')))}"
        out.append(f"a dialect move: the plan's calls go {moved}")
    if after.get("model") != before.get("model"):
        out.append(f"a model move: the plan's calls go {before.get('model')} -> {after.get('model')}")
    return out


def changes(
    now: Mapping[str, Any],
    then: Mapping[str, Any] | None,
    tolerance_ms: float = BASELINE_TOLERANCE_MS,
    budget: Budget | None = None,
) -> list[str]:
    """What changed in one script (its report JSON) since the baseline's (None: the baseline lacks it); caller-felt
    figures that moved further than ``tolerance_ms``, each said within or beyond the ``budget``."""
    if then is None:
        return ["new: the baseline did not run this script"]
    out: list[str] = []
    if now.get("status") != then.get("status"):
        out.append(f"status {str(then.get('status')).replace('_', ' ')} -> {str(now.get('status')).replace('_', ' ')}")
    if now.get("digest") and then.get("digest") and now.get("digest") != then.get("digest"):
        out.append(f"the script changed (#{then.get('digest')} -> #{now.get('digest')})")
    out += _moves(now, then)
    for key, what in _KINDS:
        old, new = list(then.get(key) or []), list(now.get(key) or [])
        out += [f"new {what}: {x}" for x in new if x not in old]
        out += [f"gone {what}: {x}" for x in old if x not in new]
    runs_now, runs_then = now.get("runs") or {}, then.get("runs") or {}
    for name in dict.fromkeys([*runs_then, *runs_now]):
        if name not in runs_then:
            out.append(f"{label(name)}: a run the baseline did not have")
        elif name not in runs_now:
            out.append(f"{label(name)}: run in the baseline, not now")
        else:
            out += _run_changes(name, runs_now[name], runs_then[name], tolerance_ms, budget or Budget())
    return out


def href(target: Path, start: Path | None) -> str:
    """``target`` as a link from the directory ``start`` (the working directory if None), with forward slashes."""
    rel = os.path.relpath(target.resolve(), (start or Path.cwd()).resolve())
    return rel.replace(os.sep, "/")


def apply_baseline(
    data: dict[str, Any],
    baseline: Baseline,
    out: Path | None,
    budget: Budget | None = None,
    tolerance_ms: float = BASELINE_TOLERANCE_MS,
    accept: Sequence[str] = (),
) -> None:
    """Into a report's data (``bridge.replay.report.report_json``): ``meta.baseline`` (its link, from ``out``, and
    when it ran, the scripts it had that did not run now, the budget and how many scripts broke it), each script's
    ``since_baseline``, its ``regressions`` (beyond ``budget``) and its runs' ``instructions_diff``."""
    then = baseline.scripts
    budget = budget or Budget()
    names = set()
    for script in data.get("scripts", []):
        name = str(script.get("script"))
        names.add(name)
        script["since_baseline"] = changes(script, then.get(name), tolerance_ms, budget)
        if then.get(name) is not None:  # each answer against the baseline's (bridge/replay/drift.py)
            found, script["answer_red"], script["answer_accepts"] = drift(script, then[name], accept)
            script["answer_drift"] = found
            script["since_baseline"] += drift_lines(found)
        script["regressions"] = regressions(script, then.get(name), budget)
        runs_then = (then.get(name) or {}).get("runs") or {}
        diffs = {
            run: diff
            for run, body in (script.get("runs") or {}).items()
            if (diff := instructions_diff(body.get("config") or {}, (runs_then.get(run) or {}).get("config") or {}))
            and (runs_then.get(run) or {}).get("config")
        }
        if diffs:
            script["instructions_diff"] = diffs
    data["meta"]["baseline"] = {
        "href": href(baseline.directory / REPORT_HTML, out),
        "dir": href(baseline.directory, out),
        "created": baseline.created,
        "missing": sorted(set(then) - names),
        "changed": sum(1 for s in data.get("scripts", []) if s["since_baseline"]),
        "regressed": sum(1 for s in data.get("scripts", []) if s["regressions"]),
        "budget": asdict(budget),
        "tolerance_ms": tolerance_ms,
    }


# --------------------------------------------------------------------------------------------------------------
# The history directory


def new_run_dir(history: Path, now: float | None = None) -> Path:
    """A directory for a new run, named by the time (``YYYYmmdd-HHMMSS``, ``-2``... if taken); not created."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    candidate, n = history / stamp, 1
    while candidate.exists():
        n += 1
        candidate = history / f"{stamp}-{n}"
    return candidate


def read_index(history: Path) -> list[dict[str, Any]]:
    """The runs of ``history/index.json``, oldest first ([] if there is none yet)."""
    path = history / INDEX_JSON
    if not path.exists():
        return []
    data = _read_json(path, "the history's index")
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise ConfigError(str(path), "(file)", "not a replay history index (a list of runs)")
    return data


def median_gaps(data: Mapping[str, Any]) -> dict[str, float | None]:
    """Per column (dialect or variant) of a report, the median of every reply gap its runs measured."""
    meta = data.get("meta", {})
    columns = list(meta.get("variants") or meta.get("dialects") or [])
    gaps: dict[str, list[float]] = {c: [] for c in columns}
    for script in data.get("scripts", []):
        for name, run in (script.get("runs") or {}).items():
            turns = (run.get("timing") or {}).get("turns") or []
            found = [float(t["reply_gap_ms"]) for t in turns if t.get("reply_gap_ms") is not None]
            gaps.setdefault(name, []).extend(found)
    return {name: (None if (m := median(values)) is None else round(m, 1)) for name, values in gaps.items()}


def index_entry(data: Mapping[str, Any], report_dir: Path, history: Path, exit_code: int) -> dict[str, Any]:
    """One run's line in the index, from its report's data."""
    meta = data.get("meta", {})
    summary = dict(meta.get("summary", {}))
    scripts = data.get("scripts", [])
    passed = sum(1 for s in scripts if s.get("status") in PASSING)
    baseline = meta.get("baseline") or {}
    return {
        "created": meta.get("created", ""),
        "dir": href(report_dir, history),
        "via": meta.get("via"),
        "target": meta.get("target"),
        "columns": list(meta.get("variants") or meta.get("dialects") or []),
        "rollouts": meta.get("rollouts"),
        "scripts": len(scripts),
        "passed": passed,
        "pass_rate": round(passed / len(scripts), 4) if scripts else None,
        "statuses": {k.removeprefix("status_"): v for k, v in summary.items() if k.startswith("status_")},
        "unexpected_differences": summary.get("unexpected_differences", 0),
        "median_reply_gap_ms": median_gaps(data),
        "cost_usd": meta.get("cost_usd", {}),
        "baseline": href(report_dir / baseline["dir"], history) if baseline.get("dir") else None,
        "changed_since_baseline": baseline.get("changed"),
        "exit": exit_code,
        "red": list((meta.get("gate") or {}).get("red") or []),
        "accepts": list((meta.get("gate") or {}).get("accepts") or []),
    }


KEEP_AUDIO: Final = 10  # runs whose recordings a history keeps (``--keep-audio``); older runs keep their figures


def record_run(
    history: Path,
    data: Mapping[str, Any],
    report_dir: Path,
    exit_code: int,
    *,
    keep_audio: int = KEEP_AUDIO,
    keep: int | None = None,
    accept: bool = False,
) -> Path:
    """Append the run to ``history/index.json`` (``accept``: as the history's baseline, a green run only), prune
    what the history no longer keeps (the recordings of all but
    the newest ``keep_audio`` runs; with ``keep``, whole run directories beyond the newest ``keep``: their line stays
    in the index with its figures), and rewrite ``history/index.html``; returns the page."""
    history.mkdir(parents=True, exist_ok=True)
    entry = index_entry(data, report_dir, history, exit_code)
    if accept:
        if exit_code != 0:
            raise ValueError("a red run is never a baseline")
        entry["baseline_accepted"] = True
        entry["accepts"] = [*entry["accepts"], {"kind": "baseline", "name": entry["dir"], "by": "--accept-baseline"}]
    entries = prune([*read_index(history), entry], history, keep_audio, keep)
    tmp = history / f".{INDEX_JSON}.tmp"
    tmp.write_text(json.dumps(entries, indent=1, default=str), encoding="utf-8")
    tmp.replace(history / INDEX_JSON)
    page = history / INDEX_HTML
    page.write_text(render_index(entries), encoding="utf-8")
    return page


def prune(entries: list[dict[str, Any]], history: Path, keep_audio: int, keep: int | None) -> list[dict[str, Any]]:
    """The index after pruning (oldest first): recordings (``*.wav``) go from all but the newest ``keep_audio`` runs,
    whole run directories from all but the newest ``keep``. Only directories inside ``history`` are touched, and
    never the baseline's (the newest run accepted as one)."""
    root = history.resolve()
    accepted = [e for e in entries if e.get("baseline_accepted")]
    baseline = accepted[-1] if accepted else None
    for age, entry in enumerate(reversed(entries)):
        run = (history / str(entry.get("dir", ""))).resolve()
        if not run.is_relative_to(root) or run == root or not run.is_dir() or entry is baseline:
            continue
        if keep is not None and age >= keep:
            shutil.rmtree(run, ignore_errors=True)
            entry["pruned"] = True
        elif age >= keep_audio:
            for wav in run.rglob("*.wav"):
                wav.unlink(missing_ok=True)
            entry["audio"] = False
    return entries


# --------------------------------------------------------------------------------------------------------------
# index.html

_CSS: Final = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2329;background:#f4f6f8}
header{background:#1d2329;color:#fff;padding:16px 24px}header h1{margin:0;font-size:20px}
main{padding:16px 24px}table{border-collapse:collapse;background:#fff}
td,th{padding:3px 9px;text-align:left;border-bottom:1px solid #dde2e7;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}.bad{color:#c0392b;font-weight:600}
.small{font-size:12px;color:#56606b}svg text{font:11px system-ui,sans-serif;fill:#3d4650}
.legend span{display:inline-block;margin-right:12px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:3px}
"""
_LINE_COLORS: Final = ("#2471a3", "#d35400", "#1e8449", "#7d3c98", "#b7950b", "#641e16", "#17a589", "#566573")


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _columns(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(c for e in entries for c in (e.get("median_reply_gap_ms") or {})))


def trend_svg(entries: Sequence[Mapping[str, Any]], width: int = 720, height: int = 180) -> str:
    """The median reply gap per column, one line each, run by run (oldest left)."""
    columns = _columns(entries)
    values = [float(v) for e in entries for v in (e.get("median_reply_gap_ms") or {}).values() if v is not None]
    if len(entries) < 2 or not values:
        return '<p class="small">the trend is drawn from two runs on</p>'
    left, right, top, bottom = 56, 12, 10, 24
    top_ms = max(values) * 1.1 or 1.0
    step = (width - left - right) / (len(entries) - 1)

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - v / top_ms)

    parts = [f'<line x1="{left}" y1="{y(0):.1f}" x2="{width - right}" y2="{y(0):.1f}" stroke="#9aa1aa"/>',
             f'<text x="{left - 4}" y="{y(top_ms) + 10:.1f}" text-anchor="end">{top_ms:.0f} ms</text>',
             f'<text x="{left - 4}" y="{y(0):.1f}" text-anchor="end">0</text>']  # fmt: skip
    legend = []
    for k, column in enumerate(columns):
        color = _LINE_COLORS[k % len(_LINE_COLORS)]
        points = [
            (left + i * step, y(float(v)), float(v), e)
            for i, e in enumerate(entries)
            if (v := (e.get("median_reply_gap_ms") or {}).get(column)) is not None
        ]
        if len(points) > 1:  # the first column widest and solid, each next one narrower and dashed: equal lines show
            line = " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in points)
            width_px = 2 + 3 * (len(columns) - 1 - k)
            dash = f' stroke-dasharray="{4 + 2 * k} 3"' if k else ""
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="{width_px}"{dash} points="{line}"'
                f' data-column="{_esc(column)}"/>'
            )
        parts += [
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{color}"><title>{_esc(label(column))} '
            f"{v:.0f} ms, {_esc(e.get('created', ''))}</title></circle>"
            for px, py, v, e in points
        ]
        legend.append(f'<span><i style="background:{color}"></i>{_esc(label(column))}</span>')
    return (f'<svg class="trend" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="median reply gap per run">{"".join(parts)}</svg>'
            f'<p class="legend">{"".join(legend)}</p>')  # fmt: skip


def _row(entry: Mapping[str, Any], columns: Sequence[str]) -> str:
    rate = entry.get("pass_rate")
    statuses = entry.get("statuses") or {}
    bad = {k: v for k, v in statuses.items() if k in ("failed", "unexpected", "error") and v}
    gaps = entry.get("median_reply_gap_ms") or {}
    cells = "".join(
        f'<td class="num">{"-" if gaps.get(c) is None else f"{float(gaps[c]):.0f} ms"}</td>' for c in columns
    )
    unexpected = int(entry.get("unexpected_differences") or 0)
    changed = entry.get("changed_since_baseline")
    report = f"{entry.get('dir', '')}/{REPORT_HTML}"
    when = _esc(entry.get("created", ""))
    opened = f"{when} (pruned)" if entry.get("pruned") else f'<a href="{_esc(report)}">{when}</a>'
    return (
        f'<tr data-run="{_esc(entry.get("dir", ""))}"><td>{opened}'
        f"</td><td>{_esc(', '.join(label(c) for c in entry.get('columns') or []))} "
        f'<span class="small">via {_esc(entry.get("via"))}, {_esc(entry.get("target"))}</span></td>'
        f'<td class="num">{entry.get("scripts", 0)}</td>'
        f'<td class="num pass-rate">{"-" if rate is None else f"{100 * float(rate):.0f} %"}</td>'
        f'<td class="num{" bad" if unexpected else ""}">{unexpected}</td>'
        f'<td class="{"bad" if bad else ""}">{_esc(", ".join(f"{v} {k}" for k, v in bad.items()) or "none")}</td>'
        f"{cells}"
        f'<td class="num">{"-" if changed is None else changed}</td><td class="num">{entry.get("exit", "")}</td></tr>'
    )


def render_index(entries: Sequence[Mapping[str, Any]]) -> str:
    """The history page: every run, newest first, with its pass rate, unexpected differences and the median reply
    gap per column; the trend of those gaps above."""
    columns = _columns(entries)
    head = "".join(f"<th>median reply gap {_esc(label(c))}</th>" for c in columns)
    rows = "".join(_row(e, columns) for e in reversed(entries))
    return "".join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>callbridge replay history: {len(entries)} run(s)</title><style>{_CSS}</style></head><body>",
        f"<header><h1>callbridge replay history</h1><div>{len(entries)} run(s), newest first</div></header><main>",
        "<h3>Median reply gap the caller felt, per run</h3>",
        trend_svg(entries),
        '<table class="runs"><tr><th>run</th><th>ran</th><th>scripts</th><th>pass rate</th>'
        f"<th>unexpected differences</th><th>problems</th>{head}<th>changed since its baseline</th><th>exit</th></tr>",
        rows,
        "</table>",
        '<p class="small">pass rate: scripts same, by design or expected (what <span>--fail-on unexpected</span> '
        "passes); each run's report is in its own directory, linked from its time</p>",
        "</main></body></html>",
    ])  # fmt: skip
