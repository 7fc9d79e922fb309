"""``callbridge webhooks``: the pending deliveries and the dead letters, from Redis.

::

    callbridge webhooks list [--dead] [--json] [--redis-url URL]      pending deliveries (by due time), or the
                                                                       dead letters (by when they were given up)
    callbridge webhooks retry ID... | --all [--redis-url URL]         send dead letters again, from the start of
                                                                       the schedule

An ID is a delivery (``<endpoint>|<webhook id>``, as ``list`` shows it) or a webhook id (every endpoint's delivery of
that event). A listing shows each delivery's event, endpoint, attempts, last failure and times, never its body (the
call's data); one being sent now shows as in flight, with its deliverer (host and pid) and its lease's end. The
Redis URL is ``serve``'s (``--config``, ``CALLBRIDGE_REDIS_URL``); ``--redis-url`` wins. Exit codes: 0 done, 1 Redis
unreachable or nothing to retry, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from bridge.config import add_config_flag, load_settings
from bridge.errors import ConfigError
from bridge.store.connection import REDIS_ERRORS, connect, safe_url
from bridge.webhooks import queue
from bridge.webhooks.body import iso

PROG = "callbridge webhooks"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    from bridge.cli import build_parser

    parser = build_parser("webhooks", "pending webhook deliveries and dead letters (list, retry)")
    add_config_flag(parser)
    parser.add_argument("--redis-url", help="redis://, rediss:// or unix:// URL (default: serve's redis_url)")
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="pending deliveries, or the dead letters (--dead)")
    listing.add_argument("--dead", action="store_true", help="the dead letters")
    listing.add_argument("--json", action="store_true", help="one JSON array")
    retry = sub.add_parser("retry", help="send dead letters again (their attempts start over)")
    retry.add_argument("ids", nargs="*", help="deliveries (endpoint|id) or webhook ids")
    retry.add_argument("--all", action="store_true", help="every dead letter")
    return parser


def shown(
    d: queue.Delivery, due: float | None, dead_at: float | None, lease: queue.Lease | None = None
) -> dict[str, Any]:
    """A delivery as the listing shows it: no body. ``in_flight``: who is sending it now, and until when its lease
    runs (None: nobody; ``due`` is then when it will be sent)."""
    return {
        "delivery": d.key,
        "id": d.id,
        "endpoint": d.endpoint,
        "type": d.type,
        "attempts": d.attempts,
        "last": d.last,
        "created": iso(d.created),
        "due": iso(due) if due is not None else None,  # None: it waits for an earlier event of its call
        "in_flight": {"by": lease.holder, "until": iso(lease.until)} if lease is not None else None,
        "dead_since": iso(dead_at) if dead_at is not None else None,
    }


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.action == "retry" and not args.ids and not args.all:
        parser.error("name the dead letters to retry, or --all")
    try:
        settings = load_settings(args.config, redis_url=args.redis_url)
        url = settings.redis_url
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not url:
        print(f"{PROG}: no redis_url (--redis-url, CALLBRIDGE_REDIS_URL or serve's settings file)", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(_run(args, url, settings.webhook_dead_letter_ttl_s))
    except REDIS_ERRORS as exc:
        print(f"{PROG}: Redis at {safe_url(url)} unreachable: {type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILURE


async def _run(args: argparse.Namespace, url: str, dead_ttl_s: float) -> int:
    client = connect(url)
    try:
        if args.action == "list":
            return await _list(client, args.dead, args.json)
        dead = await queue.listing(client, dead=True)
        chosen = [] if args.all else [d.key for d in dead if d.key in args.ids or d.id in args.ids]
        if not args.all and not chosen:
            print(f"{PROG}: no dead letter {' '.join(args.ids)} (`{PROG} list --dead`)", file=sys.stderr)
            return EXIT_FAILURE
        n = await queue.retry_dead(client, chosen, time.time(), dead_ttl_s)
        print(f"{n} dead letter(s) sent again")
        return EXIT_OK if n or args.all else EXIT_FAILURE
    finally:
        await client.aclose()


async def _list(client: Any, dead: bool, as_json: bool) -> int:
    found = await queue.listing(client, dead=dead)
    due = await queue.due_times(client)
    dead_at = await queue.dead_times(client) if dead else {}
    leased = {} if dead else await queue.leases(client, time.time())
    rows = [shown(d, due.get(d.key), dead_at.get(d.key), leased.get(d.key)) for d in found]
    if as_json:
        print(json.dumps(rows))
        return EXIT_OK
    if not rows:
        print("no dead letters" if dead else "no pending deliveries")
    for r in rows:
        when = f"dead since {r['dead_since']}" if dead else f"due {r['due'] or 'after an earlier event of its call'}"
        if flight := r["in_flight"]:
            when = f"in flight: leased by {flight['by']} until {flight['until']}"
        print(f"{r['delivery']}  {r['type']}  {r['attempts']} attempt(s)  last: {r['last'] or '-'}  {when}")
    return EXIT_OK
