"""``callbridge rollout records`` and ``callbridge rollout evaluate``: a plan's outcome records, and their replay
through the decision engine.

::

    callbridge rollout records PLAN [--since 7d|24h|ISO-8601]     every record as a JSON line (Redis)
    callbridge rollout evaluate PLAN --dialplans DIR --records FILE [--json]

``evaluate`` needs no Redis: it reads the plan's ``rollout`` section (its ``experiment`` settings) from the dialplan
files and the records from FILE (JSON lines, as ``records`` writes them), replays them in the order the calls ended
through the same code the workers run after every call (``bridge.rollout.outcomes.evaluate``), and prints each
decision the live rollout would have taken and the last epoch's estimates.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError
from bridge.rollout import records
from bridge.rollout.outcomes import evaluate
from bridge.rollout.policy import RolloutSpec
from bridge.rollout.store import RolloutStore

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


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a line that is no JSON object is an error naming the file and line."""
    out: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "(file)", f"cannot read: {exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ConfigError(str(path), f"line {n}", f"not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise ConfigError(str(path), f"line {n}", "a record is a JSON object")
        out.append(record)
    return out


def _human(result: dict[str, Any], dialplan: str, spec: RolloutSpec) -> str:
    lines = [f"{dialplan}: {len(result['decisions'])} decision(s)"]
    for d in result["decisions"]:
        when = dt.datetime.fromtimestamp(float(d["t"]), dt.UTC).isoformat(timespec="seconds")
        lines.append(f"  {when}  {d['action']:<8} {d['variant']}: {d['reason']}")
    lines.append("estimates (the last epoch; difference from the safe variant with its always-valid 95 % interval):")
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
        for name, m in metrics.items():
            if name == "calls" or m["value"] is None:
                continue
            vs, text = m.get("vs_safe"), f"    {name:<18} {m['value']:>10.4g}"
            if vs:
                lo, hi = vs["ci95"]
                drawn = bar(lo, hi, max(abs(lo), abs(hi)) or 1.0)
                if colour and (lo > 0 or hi < 0):
                    drawn = f"{RED if lo > 0 else GREEN}{drawn}{PLAIN}"
                text += f"  diff {vs['diff']:+.4g} [{lo:+.4g}, {hi:+.4g}] {drawn}"
            if m.get("more_calls"):
                text += f"  about {m['more_calls']} more candidate calls to decide"
            lines.append(text)
    return lines


async def show_experiment(store: RolloutStore, dialplan: str, spec: RolloutSpec) -> tuple[dict[str, Any], str]:
    """The current epoch's decisions and estimates (``rollout show``), as JSON and as text."""
    now = await records.current(store.client, dialplan, spec)
    text = [f"experiment (calls since the weights last changed; alpha {spec.experiment.alpha}):"]
    text += [f"  decided: {d['action']} {d['variant']}: {d['reason']}" for d in now["decisions"]]
    text += estimate_lines(now["estimates"], spec.safe, colour=sys.stdout.isatty())
    return now, "\n".join(text)


def run_evaluate(dialplan: str, spec: RolloutSpec, path: Path, as_json: bool) -> int:
    result = evaluate(spec.experiment, spec.safe, spec.names, read_records(path))
    print(json.dumps(result, indent=2) if as_json else _human(result, dialplan, spec))
    return 0
