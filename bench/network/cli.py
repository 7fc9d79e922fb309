"""``callbridge bench network``'s command line, its runs and its table."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import bench.network
from bench.network.paths import PATHS, BridgePath, Floors, Heard, Lines, anchor_call, impairments
from bench.network.score import have_pesq, score
from bench.network.signals import build
from bridge.audio.wav import read_wav

HEARD_GOALS = {0.0: 4.0, 3.0: 3.5}  # loss % -> caller-heard PESQ goal (at the bench's jitter)


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, not {text!r}") from None
    if not values or any(not 0 <= v < 50 for v in values):
        raise argparse.ArgumentTypeError(f"expected loss percentages 0 <= x < 50, not {text!r}")
    return values


def _paths(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = sorted(set(names) - set(PATHS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown path(s) {unknown or text!r}: choose from {', '.join(PATHS)}")
    return names


def _parser() -> argparse.ArgumentParser:
    doc = (bench.network.__doc__ or "").split("\n\n")[0].replace("\n", " ")
    parser = argparse.ArgumentParser(prog="callbridge bench network", description=doc)
    parser.add_argument("--loss", type=_floats, default=[0.0, 1.0, 3.0, 5.0], help="loss levels in %% (0,1,3,5)")
    parser.add_argument("--jitter-ms", type=float, default=40.0, help="jitter: each packet 0..J ms later (40)")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="one-way delay under the jitter (20)")
    parser.add_argument(
        "--burst-share", type=float, default=0.5, help="share of the loss in Gilbert-Elliott bursts, the rest random"
    )
    parser.add_argument("--paths", type=_paths, default=list(PATHS), help=f"paths to run ({','.join(PATHS)})")
    parser.add_argument("--seed", type=int, default=4, help="the relay's seed (each direction its own)")
    parser.add_argument(
        "--phone-jb-ms", type=int, default=0, help="every softphone's jitter buffer floor, ms (0: pjmedia's defaults)"
    )
    parser.add_argument(
        "--bridge-jb-ms", type=int, help="the bridge's jitter buffer floor, ms (default: sip_jitter_buffer_ms's)"
    )
    parser.add_argument("--keep", type=Path, help="keep the recordings and logs in this directory")
    parser.add_argument("--json", action="store_true", help="one JSON object per row, then a summary")
    return parser


def _row(path: str, loss: float, figures: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "row", "path": path, "loss_pct": loss, **figures}


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def _print_row(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row), flush=True)
        return
    up, down = row["line"].get("up", {}), row["line"].get("down", {})
    lost = f"{up.get('loss_pct', 0):.1f}/{down.get('loss_pct', 0):.1f}"
    line = f"{lost:>9}  {up.get('reordered', 0)}/{down.get('reordered', 0)}"
    print(
        f"{row['path']:<10} {row['loss_pct']:>4g} %  {_fmt(row['caller_pesq']):>5}  {_fmt(row['model_pesq']):>5}  "
        f"{_fmt(row['caller_gaps']):>4}/{_fmt(row['model_gaps']):<4} {_fmt(row['turns']):>5}   {line}"
        + (f"   !! {'; '.join(row['errors'])}" if row["errors"] else ""),
        flush=True,
    )


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The goals, per path: caller-heard PESQ on the clean line and at 3 % loss, turns at 3 % against clean."""
    out: dict[str, Any] = {"kind": "summary", "goals": {}}
    for path in dict.fromkeys(r["path"] for r in rows):
        by_loss = {r["loss_pct"]: r for r in rows if r["path"] == path}
        goals: dict[str, Any] = {}
        for loss, goal in HEARD_GOALS.items():
            got = by_loss.get(loss, {}).get("caller_pesq")
            goals[f"heard_at_{loss:g}pct"] = None if got is None else {"pesq": got, "goal": goal, "met": got >= goal}
        clean, lossy = by_loss.get(0.0, {}).get("turns"), by_loss.get(3.0, {}).get("turns")
        goals["turns_3pct_vs_clean"] = (
            None if clean is None or lossy is None else {"clean": clean, "at_3pct": lossy, "met": lossy <= clean}
        )
        out["goals"][path] = goals
    return out


async def _run(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    signals = build(work / "signals")
    log = work / "bench-network.log"
    agent_ref = np.frombuffer(read_wav(signals.agent_ref), "<i2")
    caller_ref = np.frombuffer(read_wav(signals.caller_ref), "<i2")
    rows: list[dict[str, Any]] = []
    floors = Floors(args.phone_jb_ms, args.bridge_jb_ms)

    def add(path: str, loss: float, heard: Heard) -> None:
        rows.append(_row(path, loss, score(heard, agent_ref, caller_ref)))
        _print_row(rows[-1], args.json)

    for path in args.paths:
        if path == "anchor":
            for loss in args.loss:
                add(path, loss, await anchor_call(signals, _lines(args, loss), _dir(work, path, loss), log, floors))
            continue
        async with BridgePath(path, signals, work, log, floors).running() as bridge:
            for loss in args.loss:
                add(path, loss, await bridge.call(_lines(args, loss), f"{loss:g}"))
    return rows


def _lines(args: argparse.Namespace, loss: float) -> Lines:
    return impairments(loss, args.jitter_ms, args.delay_ms, args.burst_share, args.seed)


def _dir(work: Path, path: str, loss: float) -> Path:
    directory = work / f"{path}-{loss:g}"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _header(args: argparse.Namespace, signals_note: str) -> None:
    print(
        f"bench network: {args.delay_ms:g} ms delay + 0..{args.jitter_ms:g} ms jitter, loss "
        f"{100 * args.burst_share:g} % in bursts (mean 3 packets), seed {args.seed}; {signals_note}; "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    print("path        loss   heard  model  gaps c/m turns   line lost% up/down  reordered up/down", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not 0 <= args.burst_share <= 1 or args.jitter_ms < 0 or args.delay_ms < 0:
        parser.error("--burst-share must be 0..1, --jitter-ms and --delay-ms >= 0")
    missing = have_pesq()
    if missing:
        print(f"bench network: cannot measure PESQ: {missing}", file=sys.stderr, flush=True)
        return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-network-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not args.json:
            _header(args, "speech both ways (PESQ P.862 narrow band)")
        rows = asyncio.run(_run(args, work))
    result = summary(rows)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["load_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result) if args.json else f"summary: {json.dumps(result['goals'])}", flush=True)
    return 1 if any(r["errors"] for r in rows) else 0
