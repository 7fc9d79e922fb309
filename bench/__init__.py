"""``callbridge bench NAME``: benchmarks that print ratios against their anchors, measured in the same run."""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "audio": "bench.audio",  # resamplers vs audioop and soxr, G.711 passthrough, wire encoding
    "calls": "bench.calls",  # concurrent real calls: bridge capacity vs pjsua2's own C loopback, latency p50/p99
    "replay": "bench.replay",  # direct replay of every call script in both dialects, as a multiple of real time
    "soak": "bench.soak",  # concurrent SIP calls for minutes with socket drops: drops, gaps, RSS
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHES:
        print(f"usage: callbridge bench {{{','.join(BENCHES)}}} [--json]", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHES[argv[0]])
    return int(module.main(argv[1:]) or 0)
