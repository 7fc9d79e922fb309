"""``callbridge rollout``: show and change the variant weights of each rollout dialplan.

::

    callbridge rollout show [DIALPLAN] [--json] [--changes N] [--dialplans DIR] [--redis-url URL]
    callbridge rollout set DIALPLAN [--weights NAME=W,NAME=W] [--kill | --unkill]
                           [--allow NAME:CALLER]... [--deny NAME:CALLER]... [--unallow NAME:CALLER]...
                           [--undeny NAME:CALLER]... [--sticky caller|call] --reason TEXT [--who NAME] [--json]
                           [--dialplans DIR] [--redis-url URL]

The variants come from the dialplan files (``--dialplans``, default ``./dialplans``, as ``serve``); ``show`` lists
every rollout dialplan there (and any other with a stored flag) with its variants, weights, shares, the safe
variant, the health of each variant over the rollback window and the recent changes, with the dialplan's own
defaults where nobody stored a flag yet. Without Redis ``show`` prints the defaults alone.

``--weights`` sets every variant's weight (a variant not named gets 0); weights are relative. ``--allow V:CALLER``
puts a caller on variant V whatever the weights (and takes them off other allow lists and V's deny list);
``--deny V:CALLER`` keeps them off V (they get the safe variant where the draw would give them V). ``--kill`` sends
every call to the safe variant. Every change lands in the audit stream with ``--who`` (default: the login name), the
time, the old and new values, and the reason. Errors name the field (``weights.NAME``, ``allow.NAME``, ...). The
Redis URL comes from ``--redis-url`` or ``REDIS_URL``. Exit codes: 0 done, 1 Redis unreachable or refused, 2 bad
arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.dialplan import RolloutPlans as Plans
from bridge.dialplan import load_dialplans, rollout_plans
from bridge.errors import ConfigError
from bridge.rollout import catalog
from bridge.rollout.health import WindowStats
from bridge.rollout.policy import (
    RolloutFlag,
    RolloutSpec,
    describe_variants,
    legacy_spec,
    normalize_number,
    parse_weights,
    shares,
)
from bridge.rollout.store import AuditEntry, RolloutStore
from bridge.store.connection import StoreUnavailable

EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE = 0, 1, 2
PROG = "callbridge rollout"


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    from bridge.cli import build_parser as base

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--redis-url", help="redis://, rediss:// or unix:// URL (default: $REDIS_URL)")
    common.add_argument("--dialplans", type=Path, default=Path("dialplans"), help="the dialplan files (./dialplans)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    parser = base("rollout", "show and change the variant weights of each rollout dialplan")
    sub = parser.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", parents=[common], help="variants, weights, health per variant, recent changes")
    show.add_argument("dialplan", nargs="?", help="one dialplan (default: every rollout dialplan)")
    show.add_argument("--changes", type=int, default=5, help="recent audit entries to show (default 5)")
    change = sub.add_parser("set", parents=[common], help="change a flag (audited)")
    change.add_argument("dialplan")
    change.add_argument("--weights", metavar="NAME=W,NAME=W", help="every variant's weight (unnamed ones: 0)")
    kill = change.add_mutually_exclusive_group()
    kill.add_argument("--kill", action="store_true", help="kill switch on: every call on the safe variant")
    kill.add_argument("--unkill", action="store_true", help="kill switch off")
    for option, what in (
        ("--allow", "always put this caller on variant NAME"),
        ("--deny", "never put this caller on variant NAME"),
        ("--unallow", "take this caller off NAME's allow list"),
        ("--undeny", "take this caller off NAME's deny list"),
    ):
        change.add_argument(option, action="append", default=[], metavar="NAME:CALLER", help=what)
    change.add_argument("--sticky", choices=["caller", "call"])
    change.add_argument("--reason", help="why (required; goes into the audit stream)")
    change.add_argument("--who", help="who makes the change (default: the login name)")
    return parser


def _pair(text: str, option: str) -> tuple[str, str]:
    name, sep, caller = text.partition(":")
    if not sep or not name.strip() or not normalize_number(caller):
        raise UsageError(f"{option} wants NAME:CALLER (a variant and a caller number), got {text!r}")
    return name.strip(), normalize_number(caller)


def check_set_args(args: argparse.Namespace) -> None:
    """``rollout set`` errors that need neither Redis nor the dialplans."""
    if not (args.reason or "").strip():
        raise UsageError("--reason is required (say why; it goes into the audit stream)")
    lists = (args.allow, args.deny, args.unallow, args.undeny)
    if args.weights is None and not (args.kill or args.unkill or args.sticky or any(lists)):
        raise UsageError("nothing to change: give --weights, --kill/--unkill, --allow, --deny, ...")
    if args.weights is not None:
        parse_weights(args.weights)
    for option, values in zip(("--allow", "--deny", "--unallow", "--undeny"), lists, strict=True):
        for value in values:
            _pair(value, option)


def changes_from_args(args: argparse.Namespace, old: RolloutFlag, spec: RolloutSpec) -> dict[str, Any]:
    """The settings to change, from ``rollout set`` options applied to the current flag."""
    changes: dict[str, Any] = {}
    if args.weights is not None:
        given = parse_weights(args.weights)
        changes["weights"] = {**dict.fromkeys(spec.names, 0.0), **given}
    if args.kill or args.unkill:
        changes["kill"] = bool(args.kill)
    if args.sticky:
        changes["sticky"] = args.sticky
    allow = {k: list(v) for k, v in old.allow.items()}
    deny = {k: list(v) for k, v in old.deny.items()}

    def drop(lists: dict[str, list[str]], name: str | None, number: str) -> None:
        for key in list(lists) if name is None else [name]:
            lists[key] = [n for n in lists.get(key, []) if n != number]

    for text in args.allow:
        name, number = _pair(text, "--allow")
        drop(allow, None, number)
        drop(deny, name, number)
        allow.setdefault(name, []).append(number)
    for text in args.deny:
        name, number = _pair(text, "--deny")
        drop(allow, name, number)
        drop(deny, name, number)
        deny.setdefault(name, []).append(number)
    for text in args.unallow:
        drop(allow, *_pair(text, "--unallow"))
    for text in args.undeny:
        drop(deny, *_pair(text, "--undeny"))
    allow = {k: v for k, v in allow.items() if v}
    deny = {k: v for k, v in deny.items() if v}
    if allow != {k: list(v) for k, v in old.allow.items()}:
        changes["allow"] = allow
    if deny != {k: list(v) for k, v in old.deny.items()}:
        changes["deny"] = deny
    return changes


# ------------------------------------------------------------------------------------------------ show
def _value(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_value(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value) or "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value is None else str(value)


def _audit_line(entry: AuditEntry) -> str:
    diff = "; ".join(f"{k} {_value(entry.old.get(k))} -> {_value(v)}" for k, v in entry.new.items())
    return f"  {entry.when}  {entry.who:<14} {diff}  ({entry.reason})"


def _rule_text(flag: RolloutFlag) -> str:
    parts = [f"failure rate > {flag.failure_rate_threshold:.1%} and above the safe variant's"]
    if flag.first_audio_p95_excess_ms is not None:
        parts.append(f"first-audio p95 more than {flag.first_audio_p95_excess_ms:g} ms above")
    if flag.barge_in_failure_excess is not None:
        parts.append(f"barge-in recovery failures more than {flag.barge_in_failure_excess:.1%} above")
    if flag.function_call_success_drop is not None:
        parts.append(f"function-call success more than {flag.function_call_success_drop:.1%} below")
    if flag.cost_ratio_threshold is not None:
        parts.append(f"cost per call above {flag.cost_ratio_threshold:g}x")
    return f"over {flag.window_s} s, at least {flag.min_calls} calls of a variant: " + "; or ".join(parts)


def _health_row(name: str, s: WindowStats) -> str:
    p95 = "n/a" if s.first_audio_p95_ms is None else f"{s.first_audio_p95_ms:.0f} ms"
    fn = s.function_call_success_rate
    cost = s.cost_per_call
    return (
        f"  {name:<22} {s.calls:>5} {s.connect_failures:>9} {s.dropped:>7} {s.failure_rate:>7.1%} {p95:>10} "
        f"{s.truncate_failures:>4}/{s.truncates:<4} {'n/a' if fn is None else f'{fn:.0%}':>6} "
        f"{'n/a' if cost is None else f'${cost:.4f}':>9}"
    )


def describe(
    name: str,
    spec: RolloutSpec,
    flag: RolloutFlag,
    stored: bool | None,
    window: Mapping[str, WindowStats] | None,
    audit: list[AuditEntry],
    *,
    voice: str,
    known: bool = True,
    today: dt.date | None = None,
) -> str:
    """The text of one dialplan for ``rollout show``. ``stored`` None and ``window`` None: Redis was not asked."""
    today = today or dt.datetime.now(dt.UTC).date()
    head = f"dialplan      {name}"
    if stored is None:
        head += "  (no Redis: the dialplan's defaults)"
    elif not stored:
        head += "  (no stored flag: the dialplan's defaults)"
    if not known:
        head += "  (not in the dialplan files: GA against beta)"
    lines = [head, "variants      weight  share   dialect model (fallback)  voice      (* safe)"]
    for v in describe_variants(spec, flag, voice, catalog.shutdown_dates(), today):
        model = v["model"] + (f" ({v['fallback_model']})" if v["fallback_model"] else "")
        mark = "*" if v["safe"] else " "
        lines.append(
            f"  {mark} {v['name']:<20} {v['weight']:>6g} {v['share_percent']:>6.2f}% {v['dialect']:<7} {model:<40} "
            f"{v['voice']}"
        )
        for key in ("allow", "deny"):
            if v[key]:
                lines.append(f"      {key} {' '.join(v[key])}")
        if v["shutdown"] is not None:
            lines.append(f"      {v['model']}: shutdown announced for {v['shutdown']} ({v['shutdown_days']} days)")
        if v["fallback_shutdown"] is not None:
            lines.append(f"      fallback {v['fallback_model']}: shutdown announced for {v['fallback_shutdown']}")
    lines += [
        f"kill switch   {_value(flag.kill)}" + (f"   (every call on {spec.safe})" if flag.kill else ""),
        f"sticky        per {flag.sticky}, salt {flag.salt}; fallback voice {flag.fallback_voice}",
        f"rollback      {_rule_text(flag)}",
    ]
    if window is None:
        lines.append("health        n/a (no Redis)")
    else:
        lines.append(f"health        last {flag.window_s} s")
        lines.append(
            f"  {'variant':<22} {'calls':>5} {'conn.fail':>9} {'dropped':>7} {'fail%':>7} {'1st p95':>10} "
            f"{'barge-in':>9} {'fn ok':>6} {'cost/call':>9}"
        )
        lines += [_health_row(n, window.get(n, WindowStats())) for n in spec.names]
    if audit:
        lines.append("recent changes (newest first):")
        lines += [_audit_line(e) for e in audit]
    return "\n".join(lines)


def _flag_json(flag: RolloutFlag) -> dict[str, Any]:
    return flag.model_dump(mode="json")


def load_plans(directory: Path) -> Plans:
    """Rollout dialplan name -> (its variants, its profile's voice), from the dialplan files (none if the
    directory does not exist). Raises ConfigError for a broken dialplan."""
    if not directory.is_dir():
        return {}
    return rollout_plans(load_dialplans(directory))


async def _show(store: RolloutStore | None, args: argparse.Namespace, plans: Plans) -> int:
    stored_names = await store.dialplans() if store is not None else []
    names = [args.dialplan] if args.dialplan else sorted(set(plans) | set(stored_names))
    out: list[dict[str, Any]] = []
    texts: list[str] = []
    today = dt.datetime.now(dt.UTC).date()
    for name in names:
        spec, voice = plans.get(name, (legacy_spec(), "alloy"))
        stored_flag = await store.stored_flag(name) if store is not None else None
        flag = stored_flag or spec.default_flag()
        window = await store.window(name, flag.window_s) if store is not None else None
        audit = await store.audit(name, args.changes) if store is not None else []
        stored = None if store is None else stored_flag is not None
        out.append(
            {
                "dialplan": name,
                "in_dialplan_files": name in plans,
                "stored": stored,
                "safe": spec.safe,
                "variants": describe_variants(spec, flag, voice, catalog.shutdown_dates(), today),
                "flag": _flag_json(flag),
                "window": None if window is None else {n: s.to_json() for n, s in window.items()},
                "audit": [e.to_json() for e in audit],
            }
        )
        texts.append(describe(name, spec, flag, stored, window, audit, voice=voice, known=name in plans, today=today))
    if args.json:
        print(json.dumps({"dialplans": out}, indent=2))
    elif not texts:
        print(f"no rollout dialplan in {args.dialplans} and no stored flag")
    else:
        print("\n\n".join(texts))
    return EXIT_OK


async def _set(store: RolloutStore, args: argparse.Namespace, spec: RolloutSpec) -> int:
    who = args.who or _login()
    # The lists are edited on the flag as read inside the transaction: concurrent edits do not lose each other.
    change = await store.update_flag(args.dialplan, lambda old: changes_from_args(args, old, spec), who, args.reason)
    if args.json:
        print(
            json.dumps(
                {
                    "dialplan": args.dialplan,
                    "changed": change.changed,
                    "audit_id": change.audit_id,
                    "old": _flag_json(change.old),
                    "new": _flag_json(change.new),
                    "shares": shares(spec, change.new),
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
        print(f"{args.dialplan}: shares now {_value({k: f'{v:g}%' for k, v in shares(spec, change.new).items()})}")
        print(f"recorded by {who}: {args.reason.strip()}  (audit {change.audit_id})")
    return EXIT_OK


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


async def _run(args: argparse.Namespace, url: str | None, plans: Plans) -> int:
    store = RolloutStore(url, specs={n: s for n, (s, _) in plans.items()}, read_timeout_s=2.0) if url else None
    try:
        if args.action == "show":
            return await _show(store, args, plans)
        if args.dialplan not in plans:
            where = f"{args.dialplans} (--dialplans)"
            raise ConfigError(f"rollout {args.dialplan}", "dialplan", f"no rollout dialplan of that name in {where}")
        assert store is not None  # main() asks for a URL before a change
        return await _set(store, args, plans[args.dialplan][0])
    finally:
        if store is not None:
            await store.close()


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.action == "set":
            check_set_args(args)
        url = args.redis_url or os.environ.get("REDIS_URL") or None
        if url is None and args.action == "set":
            raise UsageError("no Redis: pass --redis-url URL or set REDIS_URL")
        plans = load_plans(args.dialplans)
        return asyncio.run(_run(args, url, plans))
    except UsageError as exc:
        print(f"{PROG} {args.action}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"{PROG} {args.action}: {exc.field}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except StoreUnavailable as exc:
        print(f"{PROG} {args.action}: {exc}", file=sys.stderr)  # names the URL without its password
        return EXIT_UNAVAILABLE
