"""``callbridge rollout records`` and ``callbridge rollout evaluate``: a plan's outcome records, and their replay
through the decision engine.

::

    callbridge rollout records PLAN [--since 7d|24h|ISO-8601]     every record as a JSON line (Redis)
    callbridge rollout evaluate PLAN --dialplans DIR --records FILE|- [--follow] [--json]
    callbridge rollout rearm PLAN VARIANT --reason TEXT [--share P]

``evaluate`` needs no Redis: it reads the plan's ``rollout`` section (its ``experiment`` settings) from the dialplan
files and the records from FILE (JSON lines, as ``records`` writes them; ``-``: standard input), replays them in
the order the calls ended through the same engine the workers run after every call
(``bridge.rollout.experiment.Experiment``), and prints each decision the live rollout would have taken and the
estimates at the end. Signatures are not checked: a backtest changes nothing.

``--follow`` feeds the records in the order they arrive, as they arrive, and prints one event per line at once
(with ``--json``, one JSON object each, flushed):

* ``{"event": "start", "epoch": E, "weights": {...}}``: the plan's own weights and their epoch;
* ``{"event": "decision", "t", "variant", "action", "reason", "evidence", "weights", "epoch"}`` for every decision
  (``action``: ``rollback``, ``promote``, ``srm`` or ``complete``); ``weights`` and ``epoch`` are the flag the live
  rollout would store after it (unchanged for ``srm`` and ``complete``), so that a simulator can draw the next calls
  with them and tag their records;
* ``{"event": "end", "estimates": {...}}`` at the end of the input.

A line that is no JSON object is an error naming the line (standard input: ``<stdin>``), exit 2.

``rearm`` starts a rolled-back candidate's evidence afresh (a signed ``{"rearm": VARIANT}`` entry in the plan's
records: the engine forgets what it had seen of it) and gives it ``--share`` percent again (default: the first
``auto_promote`` step, else 5), audited as any change of the flag.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError
from bridge.rollout import arming, records
from bridge.rollout.experiment import step_weights
from bridge.rollout.outcomes import compact, epoch_of, evaluate
from bridge.rollout.policy import RolloutFlag, RolloutSpec
from bridge.rollout.store import RolloutStore
from bridge.store.record import iso, iso_or_none
from bridge.supervisor.rollout_view import DECISIONS_LOOKED_AT, as_applied, follow_flag

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """``7d``, ``24h``, ``30m``, ``90s`` (that long ago) or an ISO 8601 time (UTC unless it says otherwise)."""
    if m := _AGO.match(text.strip()):
        return (time.time() if now is None else now) - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError("--since", "since", f"{text!r}: give 7d, 24h, 30m, 90s or an ISO 8601 time") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


async def print_records(store: RolloutStore, dialplan: str, since: str | None) -> int:
    for record in await records.read(store.client, dialplan, None if since is None else parse_since(since)):
        print(json.dumps(record, separators=(",", ":")))
    return 0


def _record(where: str, n: int, line: str) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise ConfigError(where, f"line {n}", f"not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise ConfigError(where, f"line {n}", "a record is a JSON object")
    return record


def stream_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a JSON-lines file (``-``: standard input) as each line arrives; a line that is no JSON object is
    an error naming the file and line."""
    where = "<stdin>" if str(path) == "-" else str(path)
    try:
        handle = sys.stdin if str(path) == "-" else path.open(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(where, "(file)", f"cannot read: {exc}") from None
    try:
        for n, line in enumerate(iter(handle.readline, ""), 1):
            record = _record(where, n, line)
            if record is not None:
                yield record
    except UnicodeDecodeError as exc:
        raise ConfigError(where, "(file)", f"cannot read: {exc}") from None
    finally:
        if handle is not sys.stdin:
            handle.close()


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSON-lines file (``-``: standard input)."""
    return list(stream_records(path))


def _decision_line(d: Mapping[str, Any]) -> str:
    when = dt.datetime.fromtimestamp(float(d["t"]), dt.UTC).isoformat(timespec="seconds")
    return f"  {when}  {d['action']:<8} {d['variant']}: {d['reason']}"


def _human(result: dict[str, Any], dialplan: str, spec: RolloutSpec) -> str:
    lines = [f"{dialplan}: {len(result['decisions'])} decision(s)"]
    lines += [_decision_line(d) for d in result["decisions"]]
    lines.append("estimates (since each candidate was armed; difference from the safe variant with its always-valid")
    lines.append("95 % interval):")
    lines += estimate_lines(result["estimates"], spec.safe, colour=sys.stdout.isatty())
    return "\n".join(lines)


BAR_WIDTH = 21  # characters of the interval bar; its middle is "no difference"
RED, GREEN, PLAIN = "\033[31m", "\033[32m", "\033[0m"


def bar(lo: float, hi: float, scale: float) -> str:
    """The interval ``[lo, hi]`` drawn on ``[-scale, scale]``: ``=`` over the interval, ``|`` at zero."""
    half = BAR_WIDTH // 2
    cells = [" "] * BAR_WIDTH

    def at(x: float) -> int:
        return max(0, min(BAR_WIDTH - 1, half + round(x / scale * half))) if scale > 0 else half

    for i in range(at(lo), at(hi) + 1):
        cells[i] = "="
    cells[half] = "|"
    return "[" + "".join(cells) + "]"


def estimate_lines(estimates: dict[str, Any], safe: str, colour: bool) -> list[str]:
    """Each metric per variant: its value, and a candidate's difference from the safe variant with its always-valid
    95 % interval, drawn as a bar (coloured only when the interval excludes zero: red worse, green better), and
    about how many more candidate calls the engine needs to decide it."""
    lines: list[str] = []
    for variant, metrics in estimates.items():
        lines.append(f"  {variant}{' (safe)' if variant == safe else ''}: {metrics['calls']} calls")
        verdict = metrics.get("verdict")
        if verdict:
            lines.append("    " + verdict_text(verdict))
        for name, m in metrics.items():
            if name in ("calls", "verdict") or m["value"] is None:
                continue
            vs, text = m.get("vs_safe"), f"    {name:<18} {m['value']:>10.4g}"
            if vs:
                lo, hi = vs["ci95"]
                drawn = bar(lo, hi, max(abs(lo), abs(hi)) or 1.0)
                if colour and (lo > 0 or hi < 0):
                    drawn = f"{RED if lo > 0 else GREEN}{drawn}{PLAIN}"
                text += f"  diff {vs['diff']:+.4g} [{lo:+.4g}, {hi:+.4g}] {drawn}"
            elif "too_few" in m:
                text += f"  too few calls for an interval ({m['too_few']} more)"
            lines.append(text)
    return lines


def how_long(seconds: float) -> str:
    """A duration as people say it: "about a minute", "about 20 minutes", "about 5 hours", "about 3 days"."""

    def about(n: float, unit: str, one: str) -> str:
        k = max(1, math.floor(n + 0.5))
        return f"about {one}" if k == 1 else f"about {k} {unit}s"

    if seconds < 90 * 60:
        return about(seconds / 60, "minute", "a minute")
    if seconds < 36 * 3600:
        return about(seconds / 3600, "hour", "an hour")
    return about(seconds / 86400, "day", "a day")


def verdict_text(v: Mapping[str, Any]) -> str:
    """A candidate's verdict in one line: its step, what comes next and why, the calls it still needs."""
    share = "?" if v.get("share") is None else f"{v['share']:g} %"
    parts = [f"verdict: {v['state']} at {share}"]
    if v.get("holdout"):
        parts.append(f"holdout {v['holdout']:g} % on the safe variant")
    if v.get("srm"):
        parts.append("SAMPLE-RATIO MISMATCH")
    parts.append(f"next: {v['next']}")
    if v.get("waiting_for"):
        parts.append("waiting for " + "; ".join(v["waiting_for"]))
    if v.get("more_calls"):
        more = f"about {v['more_calls']} more candidate calls"
        if v.get("more_time_s"):
            more += f" ({how_long(v['more_time_s'])} at current traffic)"
        parts.append(more)
    probe = v.get("probe")
    if isinstance(probe, Mapping):  # the latest probe of the safe variant's model (bridge.rollout.probes)
        got = f"opened in {probe.get('ms') or 0:.0f} ms" if probe.get("ok") else f"failed ({probe.get('error')})"
        parts.append(f"latest probe of the safe variant's model: {got} at {probe.get('at')}")
    return "; ".join(parts)


async def show_experiment(
    store: RolloutStore, dialplan: str, spec: RolloutSpec, flag: RolloutFlag | None = None
) -> tuple[dict[str, Any], str]:
    """The rollout's decisions, verdicts and estimates (``rollout show``), as JSON and as text; each verdict follows
    ``flag`` (the plan's own weights if None) as the console's does, and the decisions are those the audit holds
    (:func:`bridge.supervisor.rollout_view.as_applied`, :func:`~bridge.supervisor.rollout_view.follow_flag`)."""
    flag = flag or spec.default_flag()
    current = await records.current(store.client, dialplan, spec, store.rollout_keys)
    now = follow_flag(as_applied(current, await store.audit(dialplan, count=DECISIONS_LOOKED_AT), flag), spec, flag)
    text = [f"guarded rollout (alpha {spec.experiment.alpha}; every candidate tested until a person ends it):"]
    text += [
        f"  decided: {d['action']} {d['variant']} on calls up to {iso(d['t'])}, "
        f"{'applied' if d['changed_flag'] else 'recorded, the flag unchanged,'} at {iso_or_none(d['applied_at'])}: "
        f"{d['reason']}"
        for d in now["decisions"]
    ]
    if now["refused_decisions"]:
        text.append(f"  {now['refused_decisions']} computed decision(s) the flag refused (it had moved): not shown")
    if now["pending"] is not None:
        shares = ", ".join(f"{n} {s:g} %" for n, s in now["pending"]["shares"].items())
        if now["epoch"] is None:
            text.append(f"  no call has ended yet ({shares} of new calls): the verdicts wait for the first ones")
        else:
            text.append(
                f"  new weights ({shares}{'; kill switch on' if now['pending']['kill'] else ''}): no call under them "
                "has ended yet; the verdicts wait for the first ones, the estimates are the calls' before"
            )
    if now["srm"] is not None:
        text.append(f"  SAMPLE-RATIO MISMATCH: {now['srm']['reason']}")
    rejected = sum(now["rejected"].values())
    if rejected:
        text.append(f"  {rejected} record(s) left out, not signed with rollout_key: {now['rejected']}")
    if not now["signed"]:
        text.append("  records are not signed (no rollout_key): a Redis writer can add evidence")
    text += estimate_lines(compact(now["estimates"]), spec.safe, colour=sys.stdout.isatty())
    return now, "\n".join(text)


def run_evaluate(dialplan: str, spec: RolloutSpec, path: Path, as_json: bool, follow: bool = False) -> int:
    if follow:
        return follow_evaluate(spec, path, as_json)
    result = evaluate(spec.experiment, spec.safe, spec.names, read_records(path), spec.default_flag().weights)
    print(json.dumps(result, indent=2) if as_json else _human(result, dialplan, spec))
    return 0


def _emit(event: Mapping[str, Any], as_json: bool, text: str) -> None:
    print(json.dumps(event, separators=(",", ":")) if as_json else text, flush=True)


def follow_evaluate(spec: RolloutSpec, path: Path, as_json: bool) -> int:
    """``evaluate --follow``: the engine fed each record as it arrives, each event printed at once."""
    weights = spec.default_flag().weights
    exp = records.engine(spec)
    epoch = epoch_of(weights, False)
    _emit({"event": "start", "epoch": epoch, "weights": weights}, as_json, f"start: epoch {epoch} weights {weights}")
    for record in stream_records(path):
        for d in exp.feed(record):
            if d.weights is not None:
                weights, epoch = d.weights, epoch_of(d.weights, False)
            event = {"event": "decision", **d.to_json(), "weights": weights, "epoch": epoch}
            _emit(event, as_json, _decision_line(event) + f"  -> weights {weights}")
    estimates = compact(exp.estimates())
    _emit(
        {"event": "end", "estimates": estimates},
        as_json,
        "\n".join(["end:", *estimate_lines(estimates, spec.safe, False)]),
    )
    return 0


async def rearm(
    store: RolloutStore, args: Any, spec: RolloutSpec, who: str, digests: Mapping[str, str] | None = None
) -> int:
    """``rollout rearm``: a signed re-arm entry in the records, then the candidate's share back (audited); under
    ``rollout.require_gate`` only with a green replay report of it (``digests``: the plan's variants') or
    ``--override-gate``, checked before anything is written."""
    if args.variant not in spec.names or args.variant == spec.safe:
        candidates = ", ".join(n for n in spec.names if n != spec.safe)
        raise ConfigError(f"rollout {args.dialplan}", "variant", f"not a candidate (candidates: {candidates})")
    share = args.share if args.share is not None else (spec.experiment.auto_promote or (5.0,))[0]
    if not 0 < share <= spec.experiment.last_share:
        raise ConfigError(f"rollout {args.dialplan}", "--share", f"a percentage in (0, {spec.experiment.last_share:g}]")
    override, digests = getattr(args, "override_gate", None), digests or {}
    await arming.require(store, args.dialplan, args.variant, digests, override)
    await records.append(
        store.client,
        args.dialplan,
        {"rearm": args.variant, "rearm_id": uuid.uuid4().hex, "t": time.time(), "who": who},
        sign_key=store.rollout_keys,
    )
    weights = step_weights(spec.names, spec.safe, args.variant, share)
    change = await arming.update_flag(
        store, args.dialplan, lambda old: {"weights": weights}, who, args.reason, digests=digests, override=override
    )
    result = {"dialplan": args.dialplan, "variant": args.variant, "share": share, "audit_id": change.audit_id}
    print(
        json.dumps(result)
        if args.json
        else f"{args.dialplan}: {args.variant} re-armed at {share:g} % (audit {change.audit_id})"
    )
    return 0
