"""``callbridge bench echo [--json] [--dialect ga] [PATHS...]``: the echo set with the echo guard off and on.

Every script of the echo set (``call_scripts/echo/`` by default: agent audio returned at -20, -14 and -10 dB, 20 to
250 ms late, with and without line noise, true barge-ins mixed in) is replayed ``--via direct`` in virtual time,
once with the plan's echo guard off and once on, and scored (``bridge/replay/echoset.py``): false barge-ins per
agent turn, true barge-in precision and recall, and the p95 time from the caller's onset to the cut. The anchor is
the same set with the guard off, measured in the same run.

``--sip [--seed S] [--calls N] [--turns T] [--jitter-ms J] [--busy B]``: the guard as a rate over real SIP calls of
seeded echo turns (:mod:`bench.echo_sip`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import print_result, script_parser
from bridge.replay.echoset import EchoScore, replay_guarded, score
from bridge.replay.script import find_scripts, load_script

DEFAULT_SCRIPTS = Path(__file__).resolve().parent.parent / "call_scripts" / "echo"


def measure(paths: Sequence[Path], dialect: str) -> dict[str, Any]:
    scripts = [load_script(p) for p in find_scripts(paths)]
    result: dict[str, Any] = {"dialect": dialect, "scripts": len(scripts)}
    for on in (False, True):
        total, rows = EchoScore(), []
        for script in scripts:
            one = score(script, replay_guarded(script, dialect, on))
            total.add(one)
            rows.append({"script": script.name, **one.summary()})
        result["guard_on" if on else "guard_off"] = {**total.summary(), "per_script": rows}
    return result


def human(result: dict[str, Any]) -> str:
    head = f"{'guard':<6} {'script':<16} {'turns':>5} {'false':>5} {'resumed':>7} {'false/turn':>10} "
    lines = [head + f"{'precision':>9} {'recall':>6} {'cut p95 ms':>10}"]
    for key in ("guard_off", "guard_on"):
        block = result[key]
        for row in [*block["per_script"], {"script": "ALL", **block}]:
            p95, guard = row["cut_p95_ms"], key.removeprefix("guard_")
            lines.append(
                f"{guard:<6} {row['script']:<16} {row['agent_turns']:>5} {row['false_barge_ins']:>5} "
                f"{row['resumed']:>7} {row['false_per_turn']:>10.3f} {row['precision']:>9.3f} {row['recall']:>6.3f} "
                f"{'-' if p95 is None else f'{p95:.0f}':>10}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from bench import echo_sip

    parser = script_parser("echo", __doc__ or "", DEFAULT_SCRIPTS)
    parser.add_argument("--dialect", default="ga", help="the dialect to replay in (default ga)")
    parser.add_argument(
        "--sip",
        action="store_true",
        help="the guard as a rate: real SIP calls of seeded echo turns, the guard on (bench/echo_sip.py)",
    )
    parser.add_argument("--seed", type=int, default=83, help="--sip: the turns' seed (83)")
    parser.add_argument("--calls", type=int, default=8, help="--sip: calls, half of them jittered (8)")
    parser.add_argument("--turns", type=int, default=6, help="--sip: agent answers per call (6)")
    parser.add_argument("--jitter-ms", type=float, default=40.0, help="--sip: the jittered calls' 0..J ms (40)")
    parser.add_argument("--busy", type=int, default=0, help="--sip: busy-loop processes beside the calls (0)")
    args = parser.parse_args(argv)
    if args.sip:
        if args.calls < 1 or args.turns < 1 or args.busy < 0 or args.jitter_ms < 0:
            parser.error("--calls and --turns must be positive, --busy and --jitter-ms not negative")
        result = echo_sip.measure(args.seed, args.calls, args.turns, args.jitter_ms, args.busy)
        return print_result(result, echo_sip.human, args.json)
    return print_result(measure(args.paths, args.dialect), human, args.json)


if __name__ == "__main__":
    sys.exit(main())
