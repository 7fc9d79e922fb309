"""``callbridge calls``: the supervisor's first view of live calls, read from Redis across every worker.

::

    callbridge calls [--watch [--interval S]] [--json] [--redis-url URL]     live calls: id, phase, dialect, duration,
                                                                              last transcript line
    callbridge calls CALL_ID [--events N] [--json] [--redis-url URL]         one call: its state and recent events

``--watch`` redraws every ``--interval`` seconds until Ctrl-C (with ``--json``: one JSON document per line).
The Redis URL is ``serve``'s: its settings file (``--config``, default ``$CALLBRIDGE_CONFIG``) and variables
(``CALLBRIDGE_REDIS_URL``, ``REDIS_URL``, or the file their ``_FILE`` form names), read by
``bridge.supervisor.remote``; ``--redis-url`` wins over them. With ``--api URL`` (and an account token) the calls are
read through the supervisor HTTP API instead, with its roles (``bridge.supervisor.remote``). Exit codes: 0 done,
1 Redis or the API unreachable, refused, or no such call, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.store import keys
from bridge.store.connection import StoreUnavailable, connect, safe_url
from bridge.store.read import CallDetail, CallSummary, read_call, read_live_calls
from bridge.store.times import stamped

EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE = 0, 1, 2
PROG = "callbridge calls"
CLEAR = "\x1b[H\x1b[2J"


def build_parser() -> argparse.ArgumentParser:
    from bridge.cli import build_parser as base

    parser = base("calls", "live calls across all workers (from Redis)")
    parser.add_argument("call_id", nargs="?", help="show one call: its state and recent events")
    parser.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)  # --watch refreshes, then exit (tests)
    parser.add_argument("--events", type=int, default=50, help="recent events of one call (default 50)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--redis-url", help="redis://, rediss:// or unix:// URL (default: serve's redis_url)")
    return parser


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def table(calls: list[CallSummary], width: int = 120) -> str:
    if not calls:
        return "no live calls"
    header = ("CALL ID", "WORKER", "PHASE", "DIALECT", "DIALPLAN", "CALLER", "DURATION")
    rows = [
        (
            c.call_id,
            c.worker + ("" if c.worker_alive else " (dead)"),
            c.phase,
            c.dialect,
            c.dialplan,
            c.caller,
            duration(c.duration_s),
        )
        for c in calls
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    used = sum(widths) + 2 * len(widths)
    last_width = max(20, width - used)

    def line(cells: tuple[str, ...], last: str) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + "  " + last

    out = [line(header, "LAST LINE")]
    for row, c in zip(rows, calls, strict=True):
        text = c.last_transcript.replace("\n", " ")
        out.append(line(row, text if len(text) <= last_width else text[: last_width - 1] + "…"))
    return "\n".join(out)


def detail(d: CallDetail) -> str:
    s = d.state
    names = [n for n in keys.CALL_FIELDS if n in s] + sorted(set(s) - set(keys.CALL_FIELDS))
    lines = [f"{name:<20} {s[name]}" for name in names]
    lines.append("events (oldest first):")
    t0 = next((e.t for e in d.events if e.t is not None), None)
    for e in d.events:
        at = f"+{e.t - t0:.2f}s" if e.t is not None and t0 is not None else ""
        lines.append(f"  {at:>9}  {e.kind:<18} {e.summary}")
    return "\n".join(lines)


LiveCalls = Callable[[], Awaitable[list[CallSummary]]]
OneCall = Callable[[str], Awaitable[CallDetail | None]]


async def show(args: argparse.Namespace, live_calls: LiveCalls, one_call: OneCall, where: str) -> int:
    """Print the live calls (``--watch``: again and again) or one call, read through ``live_calls``/``one_call``
    (Redis here, the supervisor API in ``bridge.supervisor.remote``)."""
    if args.call_id:
        found = await one_call(args.call_id)
        if found is None:
            print(f"{PROG}: no call {args.call_id!r} in {where} (unknown, or expired)", file=sys.stderr)
            return EXIT_UNAVAILABLE
        print(json.dumps(stamped(found.to_json()), indent=2) if args.json else detail(found))
        return EXIT_OK
    shown = 0
    while True:
        calls = await live_calls()
        if args.json:
            doc: dict[str, Any] = stamped({"at": round(time.time(), 3), "calls": [c.to_json() for c in calls]})
            print(json.dumps(doc) if args.watch else json.dumps(doc, indent=2), flush=True)
        else:
            width = shutil.get_terminal_size((120, 24)).columns
            prefix = CLEAR if args.watch and sys.stdout.isatty() else ""
            print(prefix + table(calls, width), flush=True)
        shown += 1
        if not args.watch or (args.count and shown >= args.count):
            return EXIT_OK
        await asyncio.sleep(args.interval)


async def _run(args: argparse.Namespace, url: str) -> int:
    where = safe_url(url)
    client = connect(url, timeout_s=2.0)
    try:
        return await show(
            args,
            lambda: read_live_calls(client, where=where),
            lambda call_id: read_call(client, call_id, count=args.events, where=where),
            f"Redis ({where})",
        )
    finally:
        await client.aclose()


def check_args(args: argparse.Namespace) -> str | None:
    """A usage error in the arguments shared by every mode, or None."""
    return "--interval must be positive" if args.interval <= 0 else None


NO_REDIS = (
    "no Redis: set redis_url in serve's settings (the file CALLBRIDGE_CONFIG names, CALLBRIDGE_REDIS_URL, REDIS_URL "
    "or REDIS_URL_FILE), pass --redis-url URL, or use --api URL"
)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return run(args, args.redis_url or os.environ.get("REDIS_URL"))


def run(args: argparse.Namespace, url: str | None) -> int:
    """The Redis mode (the node itself), on ``url`` (serve's, or ``--redis-url``)."""
    if not url:
        print(f"{PROG}: {NO_REDIS}", file=sys.stderr)
        return EXIT_USAGE
    problem = check_args(args)
    if problem:
        print(f"{PROG}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(_run(args, url))
    except StoreUnavailable as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return EXIT_OK
