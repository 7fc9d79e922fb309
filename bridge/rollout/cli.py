"""``callbridge rollout``: show and change the per-dialplan beta/GA rollout flags in Redis.

::

    callbridge rollout show [DIALPLAN] [--json] [--redis-url URL]
    callbridge rollout set DIALPLAN [--ga-percent N] [--kill | --unkill] [--allow NUMBER]... [--deny NUMBER]...
                           [--unallow NUMBER]... [--undeny NUMBER]... [--sticky caller|call]
                           [--model-selection auto|new|legacy] --reason TEXT [--who NAME] [--json] [--redis-url URL]

``--allow`` moves a number onto the allow list (and off the deny list), ``--deny`` the other way round. Every change
lands in the audit stream with ``--who`` (default: the login name), the time, the old and new values, and the reason.
The Redis URL comes from ``--redis-url`` or ``REDIS_URL``. Exit codes: 0 done, 1 Redis unreachable or refused,
2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from typing import Any

from bridge.errors import ConfigError
from bridge.rollout.policy import RolloutFlag, WindowStats
from bridge.rollout.store import AuditEntry, RolloutStore
from bridge.store.calls import StoreUnavailable

EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE = 0, 1, 2
PROG = "callbridge rollout"


class UsageError(Exception):
    pass


def _redis_url(args: argparse.Namespace) -> str:
    url = args.redis_url or os.environ.get("REDIS_URL")
    if not url:
        raise UsageError("no Redis: pass --redis-url URL or set REDIS_URL")
    return str(url)


def build_parser() -> argparse.ArgumentParser:
    from bridge.cli import build_parser as base

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--redis-url", help="redis://, rediss:// or unix:// URL (default: $REDIS_URL)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    parser = base("rollout", "show and change the beta/GA rollout flag of each dialplan")
    sub = parser.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", parents=[common], help="the flag, its health window and recent changes")
    show.add_argument("dialplan", nargs="?", help="one dialplan (default: every dialplan with a stored flag)")
    show.add_argument("--changes", type=int, default=5, help="recent audit entries to show (default 5)")
    change = sub.add_parser("set", parents=[common], help="change a flag (audited)")
    change.add_argument("dialplan")
    change.add_argument("--ga-percent", type=float, metavar="N", help="share of callers on GA, 0-100")
    kill = change.add_mutually_exclusive_group()
    kill.add_argument("--kill", action="store_true", help="kill switch on: every call on beta")
    kill.add_argument("--unkill", action="store_true", help="kill switch off")
    change.add_argument("--allow", action="append", default=[], metavar="NUMBER", help="force this caller to GA")
    change.add_argument("--deny", action="append", default=[], metavar="NUMBER", help="force this caller to beta")
    change.add_argument("--unallow", action="append", default=[], metavar="NUMBER", help="remove from the allow list")
    change.add_argument("--undeny", action="append", default=[], metavar="NUMBER", help="remove from the deny list")
    change.add_argument("--sticky", choices=["caller", "call"])
    change.add_argument("--model-selection", choices=["auto", "new", "legacy"])
    change.add_argument("--reason", help="why (required; goes into the audit stream)")
    change.add_argument("--who", help="who makes the change (default: the login name)")
    return parser


def check_set_args(args: argparse.Namespace) -> None:
    """``rollout set`` errors that need no Redis."""
    if not (args.reason or "").strip():
        raise UsageError("--reason is required (say why; it goes into the audit stream)")
    if args.ga_percent is not None and not 0 <= args.ga_percent <= 100:
        raise UsageError(f"--ga-percent must be between 0 and 100 (got {args.ga_percent:g})")
    options = (args.ga_percent is not None, args.kill, args.unkill, args.allow, args.deny, args.unallow, args.undeny)
    if not any(options) and not args.sticky and not args.model_selection:
        raise UsageError("nothing to change: give --ga-percent, --kill/--unkill, --allow, --deny, ...")


def changes_from_args(args: argparse.Namespace, old: RolloutFlag) -> dict[str, Any]:
    """The settings to change, from ``rollout set`` options applied to the current flag."""
    from bridge.rollout.policy import normalize_number

    changes: dict[str, Any] = {}
    if args.ga_percent is not None:
        changes["ga_percent"] = args.ga_percent
    if args.kill or args.unkill:
        changes["kill"] = bool(args.kill)
    if args.sticky:
        changes["sticky"] = args.sticky
    if args.model_selection:
        changes["model_selection"] = args.model_selection
    allow, deny = list(old.allow), list(old.deny)
    for number in args.allow:
        n = normalize_number(number)
        deny = [d for d in deny if d != n]
        allow += [n] if n not in allow else []
    for number in args.deny:
        n = normalize_number(number)
        allow = [a for a in allow if a != n]
        deny += [n] if n not in deny else []
    for number in args.unallow:
        allow = [a for a in allow if a != normalize_number(number)]
    for number in args.undeny:
        deny = [d for d in deny if d != normalize_number(number)]
    if tuple(allow) != old.allow:
        changes["allow"] = allow
    if tuple(deny) != old.deny:
        changes["deny"] = deny
    return changes


def _percent(stats: WindowStats) -> str:
    return f"{stats.failures}/{stats.calls} failed ({stats.failure_rate:.1%})" if stats.calls else "no calls"


def _value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _audit_line(entry: AuditEntry) -> str:
    diff = "; ".join(f"{k} {_value(entry.old.get(k))} -> {_value(v)}" for k, v in entry.new.items())
    return f"  {entry.when}  {entry.who:<14} {diff}  ({entry.reason})"


def describe(
    name: str, flag: RolloutFlag, stored: bool, window: dict[str, WindowStats], audit: list[AuditEntry]
) -> str:
    lines = [
        f"dialplan      {name}" + ("" if stored else "  (no stored flag: default)"),
        f"ga_percent    {flag.ga_percent:g}%   sticky per {flag.sticky}   salt {flag.salt}",
        f"kill switch   {_value(flag.kill)}" + ("   (every call on beta)" if flag.kill else ""),
        f"allow (GA)    {_value(flag.allow)}",
        f"deny (beta)   {_value(flag.deny)}",
        f"models        {flag.model_selection}: GA {flag.ga_model}, legacy {flag.legacy_model}; "
        f"fallback voice {flag.fallback_voice}",
        f"rollback      over {flag.window_s} s, at least {flag.min_calls} GA calls, "
        f"GA failure rate > {flag.failure_rate_threshold:.1%} and worse than beta",
        f"window        GA {_percent(window['ga'])}; beta {_percent(window['beta'])}",
    ]
    if audit:
        lines.append("recent changes (newest first):")
        lines += [_audit_line(e) for e in audit]
    return "\n".join(lines)


def _stats_json(stats: WindowStats) -> dict[str, Any]:
    return {
        "calls": stats.calls,
        "connect_failures": stats.connect_failures,
        "dropped": stats.dropped,
        "failure_rate": round(stats.failure_rate, 4),
    }


def _flag_json(flag: RolloutFlag) -> dict[str, Any]:
    return flag.model_dump(mode="json")


async def _show(store: RolloutStore, args: argparse.Namespace) -> int:
    names = [args.dialplan] if args.dialplan else await store.dialplans()
    out: list[dict[str, Any]] = []
    texts: list[str] = []
    for name in names:
        stored = await store.stored_flag(name)
        flag = stored or store.default_for(name)
        window = await store.window_stats(name, flag.window_s)
        audit = await store.audit(name, args.changes)
        out.append(
            {
                "dialplan": name,
                "stored": stored is not None,
                "flag": _flag_json(flag),
                "window": {d: _stats_json(s) for d, s in window.items()},
                "audit": [e.to_json() for e in audit],
            }
        )
        texts.append(describe(name, flag, stored is not None, window, audit))
    if args.json:
        print(json.dumps({"dialplans": out}, indent=2))
    elif not texts:
        print("no rollout flags stored yet (every rollout dialplan is on its default: beta)")
    else:
        print("\n\n".join(texts))
    return EXIT_OK


async def _set(store: RolloutStore, args: argparse.Namespace) -> int:
    who = args.who or _login()
    # The lists are edited on the flag as read inside the transaction: concurrent edits do not lose each other.
    change = await store.update_flag(args.dialplan, lambda old: changes_from_args(args, old), who, args.reason)
    if args.json:
        print(
            json.dumps(
                {
                    "dialplan": args.dialplan,
                    "changed": change.changed,
                    "audit_id": change.audit_id,
                    "old": _flag_json(change.old),
                    "new": _flag_json(change.new),
                },
                indent=2,
            )
        )
    elif not change.changed:
        print(f"{args.dialplan}: unchanged (already so)")
    else:
        for name in type(change.new).model_fields:
            before, after = getattr(change.old, name), getattr(change.new, name)
            if before != after:
                print(f"{args.dialplan}: {name} {_value(before)} -> {_value(after)}")
        print(f"recorded by {who}: {args.reason.strip()}  (audit {change.audit_id})")
    return EXIT_OK


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


async def _run(args: argparse.Namespace, url: str) -> int:
    store = RolloutStore(url, read_timeout_s=2.0)
    try:
        return await (_show(store, args) if args.action == "show" else _set(store, args))
    finally:
        await store.close()


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.action == "set":
            check_set_args(args)
        url = _redis_url(args)
        return asyncio.run(_run(args, url))
    except UsageError as exc:
        print(f"{PROG} {args.action}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"{PROG} {args.action}: {exc.field}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except StoreUnavailable as exc:
        print(f"{PROG} {args.action}: {exc}", file=sys.stderr)  # names the URL without its password
        return EXIT_UNAVAILABLE
