"""``callbridge bench replay [--json] [--repeat N] [PATHS...]``: direct replay of the call scripts in both dialects,
as a multiple of real time.

Every bundled script (``call_scripts/`` by default) is replayed ``--via direct`` in beta and in GA: the real call
session, the virtual phone and the sans-I/O emulator in one process, in virtual time, with the whole wire path of
each dialect (encode, emulator, decode). The anchor is real time itself, measured in the same run: the summed length
of the replayed calls (virtual seconds) divided by the wall-clock time the replay took. The goal is >= 50x.

Columns: ``call_s`` (virtual seconds of calls), ``wall_s`` (median of ``--repeat`` runs), ``x_real_time``, and per
script the same for its two calls. Verdicts are printed too: a benchmark of a replay that fails is not a result.

Beside the speed: the caller-felt turn gap per dialect (``caller_turn``: the end of the caller's speech to the first
agent frame, p50 and p95 over every turn of every script), and the slow-tool call (``bench/slowtool.py``): how
long the caller waited on a 5 s tool, when the filler came and the longest silence they heard meanwhile.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import print_result, script_parser, slowtool
from bridge.replay.direct import replay_direct
from bridge.replay.script import DEFAULT_DIALECTS, find_scripts, load_script

GOAL_X = 50.0
DEFAULT_SCRIPTS = Path(__file__).resolve().parent.parent / "call_scripts"


def measure(paths: Sequence[Path], repeat: int) -> dict[str, Any]:
    scripts = [load_script(p) for p in find_scripts(paths)]
    dialects = list(DEFAULT_DIALECTS)
    replay_direct(scripts[:1], dialects)  # warm-up: imports, numpy, the resampler tables
    walls: list[float] = []
    per_script: dict[str, list[float]] = {s.name: [] for s in scripts}
    call_s: dict[str, float] = {}
    verdicts: dict[str, str] = {}
    gaps: dict[str, list[float]] = {d: [] for d in dialects}
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        for script in scripts:
            t = time.perf_counter()
            [result] = replay_direct([script], dialects)
            per_script[script.name].append(time.perf_counter() - t)
            call_s[script.name] = sum(r.duration_ms for r in result.runs.values()) / 1000.0
            verdicts[script.name] = result.verdict
            for dialect, run in result.runs.items():
                gaps[dialect] += run.report.get("latency_ms", {}).get("caller_turn", [])
        walls.append(time.perf_counter() - t0)
    total_call = sum(call_s.values())
    wall = statistics.median(walls)
    return {
        "scripts": len(scripts),
        "dialects": dialects,
        "calls": len(scripts) * len(dialects),
        "call_s": round(total_call, 2),
        "wall_s": round(wall, 3),
        "x_real_time": round(total_call / wall, 1),
        "goal_x": GOAL_X,
        "repeat": max(1, repeat),
        "turn_gap_ms": {d: _percentiles(v) for d, v in gaps.items()},
        "slow_tool": slowtool.measure(dialects),
        "per_script": [
            {
                "script": name,
                "verdict": verdicts[name],
                "call_s": round(call_s[name], 2),
                "wall_s": round(statistics.median(w), 4),
                "x_real_time": round(call_s[name] / statistics.median(w), 1),
            }
            for name, w in per_script.items()
        ],
    }


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"n": len(ordered), "p50": round(statistics.median(ordered), 1), "p95": round(p95, 1)}


def human(result: dict[str, Any]) -> str:
    lines = [f"{'script':<24} {'verdict':<8} {'call_s':>8} {'wall_s':>8} {'x real time':>12}"]
    for row in result["per_script"]:
        lines.append(
            f"{row['script']:<24} {row['verdict']:<8} {row['call_s']:>8.2f} {row['wall_s']:>8.3f} "
            f"{row['x_real_time']:>11.1f}x"
        )
    ok = "meets" if result["x_real_time"] >= GOAL_X else "MISSES"
    lines.append(
        f"all {result['calls']} calls ({result['scripts']} scripts x {len(result['dialects'])} dialects): "
        f"{result['call_s']:.1f} s of calls replayed in {result['wall_s']:.2f} s (median of {result['repeat']}) = "
        f"{result['x_real_time']:.1f}x real time ({ok} the {GOAL_X:g}x goal)"
    )
    for dialect, gap in result["turn_gap_ms"].items():
        lines.append(f"turn gap {dialect:<5} (caller-felt, {gap['n']} turns): p50 {gap['p50']} ms, p95 {gap['p95']} ms")
    for dialect, tool in result["slow_tool"].items():
        lines.append(
            f"slow tool {dialect:<5}: waited {tool['tool_latency_ms']} ms, filler after {tool['filler_after_ms']} ms, "
            f"longest silence {tool['longest_silence_ms']} ms{'' if tool['ok'] else ' (FAILED)'}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = script_parser("replay", __doc__ or "", DEFAULT_SCRIPTS)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the whole set; the median is reported")
    args = parser.parse_args(argv)
    return print_result(measure(args.paths, args.repeat), human, args.json)


if __name__ == "__main__":
    sys.exit(main())
