"""``callbridge bench NAME``: benchmarks that print ratios against their anchors, measured in the same run."""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCHES = {
    "audio": ("bench.audio", "resamplers vs audioop and soxr, G.711 passthrough, wire encoding"),
    "calls": ("bench.calls", "concurrent real calls: capacity vs pjsua2's own C loopback, latency p50/p99"),
    "replay": ("bench.replay", "direct replay of every call script in every dialect, as a multiple of real time"),
    "echo": ("bench.echo", "the echo set with the echo guard off and on: false barge-ins, precision, recall"),
    "recording": ("bench.recording", "a 2-hour recorded call in virtual time: the recorder's memory and loop stalls"),
    "soak": ("bench.soak", "concurrent SIP calls for minutes with socket drops: drops, gaps, RSS"),
    "network": ("bench.network", "calls through loss, jitter and reordering: PESQ both ways vs pjsua2's own"),
    "rollout": ("bench.rollout", "simulated rollouts through the decision engine: false rollbacks, power, coverage"),
}


def main(argv: list[str]) -> int:
    from bridge.cli import build_parser

    parser = build_parser("bench", "benchmarks that print ratios against their anchors, measured in the same run")
    sub = parser.add_subparsers(dest="bench", required=True, metavar="{" + ",".join(BENCHES) + "}")
    for name, (_, help_) in BENCHES.items():
        sub.add_parser(name, help=help_, add_help=False)  # the bench's own parser answers --help
    if not argv or argv[0] not in BENCHES:
        parser.parse_args(argv)  # --help (exit 0) or a usage error naming the choices (exit 2)
        return 2
    module = importlib.import_module(BENCHES[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


def script_parser(name: str, doc: str, default: Path) -> argparse.ArgumentParser:
    """The command line of a bench over call scripts: ``callbridge bench NAME [PATH ...] [--json]``; ``doc``'s first
    line is its description."""
    parser = argparse.ArgumentParser(prog=f"callbridge bench {name}", description=doc.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[default], help=f"scripts (default {default})")
    parser.add_argument("--json", action="store_true", help="the result as one JSON object")
    return parser


def print_result(result: dict[str, Any], human: Callable[[dict[str, Any]], str], as_json: bool) -> int:
    print(json.dumps(result) if as_json else human(result))
    return 0
