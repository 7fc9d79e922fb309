"""``callbridge rollout``: show and change the variant weights of each rollout dialplan.

::

    callbridge rollout show [DIALPLAN] [--json] [--changes N] [--config YAML] [--dialplans DIR] [--redis-url URL]
    callbridge rollout set DIALPLAN [--weights NAME=W,NAME=W] [--kill | --unkill]
                           [--allow NAME:CALLER]... [--deny NAME:CALLER]... [--unallow NAME:CALLER]...
                           [--undeny NAME:CALLER]... [--sticky caller|call] --reason TEXT [--who NAME] [--json]
                           [--config YAML] [--dialplans DIR] [--redis-url URL]
    callbridge rollout export [FILE]                 every stored flag, refusal and audit entry, as JSON
    callbridge rollout import FILE [--replace]       put them back (bridge/rollout/backup.py)
    callbridge rollout records DIALPLAN [--since 7d]  the plan's outcome records as JSON lines (experiment_cli.py)
    callbridge rollout evaluate DIALPLAN --dialplans DIR --records FILE|- [--follow] [--json]   their replay, no Redis
    callbridge rollout rearm DIALPLAN VARIANT --reason TEXT [--share P]  a rolled-back candidate tested afresh
    callbridge rollout attest DIALPLAN --report DIR/report.json [--variant V]  a green replay report registered

The settings are ``serve``'s: its settings file (``--config``, default ``$CALLBRIDGE_CONFIG``) and its variables
(``CALLBRIDGE_REDIS_URL``, ``REDIS_URL``, their ``_FILE`` forms, ``CALLBRIDGE_DIALPLANS``, ...); ``--redis-url`` and
``--dialplans`` win over them. The variants come from the dialplan files (default ``./dialplans``; a folder that is
not there is an error naming it, exit 2, but for ``export`` and ``import``); ``show`` lists
every rollout dialplan there (and any other with a stored flag) with its variants, weights, shares, the safe
variant, the window's rollback rule (only for a plan whose file names ``rollout.rollback``: the workers run no other),
the health of each variant over the window, the guarded rollout's verdicts and estimates and the recent changes,
with the dialplan's own defaults where nobody stored a flag yet, and a stored flag that is not obeyed (``NOT OBEYED``,
``flag_refused`` in ``--json``: why, and what calls follow instead). Without Redis ``show`` prints the defaults alone.

``--weights`` sets every variant's weight (a variant not named gets 0); weights are relative. ``--allow V:CALLER``
puts a caller on variant V whatever the weights (and takes them off other allow lists and V's deny list);
``--deny V:CALLER`` keeps them off V (they get the safe variant where the draw would give them V). ``--kill`` sends
every call to the safe variant, held by ``--who`` with the role admin: the command line on the node holds Redis and
the rollout key, so it counts as admin, turns off any kill switch and takes over a supervisor's
(``bridge.supervisor.kill_switch``); ``show`` says who holds each switch. Every change lands in the audit stream
with ``--who`` (default: the login name) and the OS user this command runs as (whatever ``--who`` claims), the
time, the old and new values, and the reason, signed with ``rollout_key``'s first key when it is set (``serve``
obeys no flag without its audit entry, signed with one of its own keys: bridge/rollout/seal.py).
Errors name the field (``weights.NAME``, ``allow.NAME``, ...).
``export`` writes the rollout state Redis alone holds to FILE (or standard output); ``import`` restores it: flags
where none is stored (``--replace``: over the stored ones too, each audited), refusals, the audit stream merged by
entry id. With ``--api URL`` ``show`` and ``set`` go through a node's supervisor HTTP API
instead (an account token from ``--token-file`` or ``CALLBRIDGE_API_TOKEN``; its roles decide, its audit names the
account; ``bridge.supervisor.remote``), with no Redis and no dialplan files here; ``--kill``/``--unkill`` alone go
to the kill switch's route, which a supervisor's token may use (and which refuses it another's switch it may not
turn off, naming the holder and the role needed). Exit codes: 0 done, 1 Redis or the
API unreachable or refused, 2 bad arguments.

Under ``rollout.require_gate`` (bridge/rollout/attest.py) ``set``, ``rearm`` and ``import`` arm a candidate (its
weight from 0) only with a green replay report of its configuration registered by ``attest``, or with
``--override-gate REASON`` (kept in the audit; through ``--api`` too); a refusal names the plan, the variant and the
configuration's digest (exit 2), and ``show`` names each candidate's digest and the report that attests it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.config import add_config_flag, load_settings
from bridge.dialplan import RolloutPlans as Plans
from bridge.dialplan import load_dialplans, require_folder, rollout_plans
from bridge.errors import ConfigError
from bridge.rollout import arming, attest, backup, catalog, refusals
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
from bridge.serve import experiment_cli
from bridge.store.connection import StoreUnavailable
from bridge.store.times import stamped
from bridge.supervisor import kill_switch
from bridge.supervisor.remote import ApiClient, ApiError, add_api_flags, api_token

EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE = 0, 1, 2
PROG = "callbridge rollout"
NO_REDIS = (
    "no Redis: set redis_url in serve's settings (the file CALLBRIDGE_CONFIG names, CALLBRIDGE_REDIS_URL, REDIS_URL "
    "or REDIS_URL_FILE) or pass --redis-url URL"
)


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    from bridge.cli import build_parser as base

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--redis-url", help="a Redis URL, as redis_url takes (default: serve's)")
    common.add_argument("--dialplans", type=Path, help="the dialplan files (default: serve's, ./dialplans)")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    add_config_flag(common)
    add_api_flags(common)
    parser = base("rollout", "show and change the variant weights of each rollout dialplan")
    sub = parser.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", parents=[common], help="variants, weights, health per variant, recent changes")
    show.add_argument("dialplan", nargs="?", help="one dialplan (default: every rollout dialplan)")
    show.add_argument("--changes", type=int, default=5, help="recent audit entries to show (default 5)")
    change = sub.add_parser("set", parents=[common], help="change a flag (audited)")
    change.add_argument("dialplan", help="the rollout dialplan to change")
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
    change.add_argument("--sticky", choices=["caller", "call"], help="one variant per caller, or a new draw per call")
    change.add_argument("--reason", help="why (required; goes into the audit stream)")
    change.add_argument("--who", help="who makes the change (default: the login name)")
    change.add_argument("--override-gate", metavar="REASON", help="arm a candidate no green replay report attests")
    unrefuse = sub.add_parser(
        "unrefuse", parents=[common], help="take a variant off the refused list (its model is taken again)"
    )
    unrefuse.add_argument("dialplan", help="the rollout dialplan")
    unrefuse.add_argument("variant", help="the variant the service takes again")
    export = sub.add_parser("export", parents=[common], help="back up every flag, refusal and audit entry (JSON)")
    export.add_argument("file", nargs="?", type=Path, help="where to write it (default: standard output)")
    restore = sub.add_parser("import", parents=[common], help="restore a backup made by export")
    restore.add_argument("file", type=Path, help="the backup")
    restore.add_argument("--replace", action="store_true", help="also over flags stored since (audited)")
    restore.add_argument("--who", help="who restores (default: the login name)")
    restore.add_argument("--override-gate", metavar="REASON", help="restore flags arming candidates no report attests")
    recs = sub.add_parser("records", parents=[common], help="a plan's outcome records, one JSON line per call")
    recs.add_argument("dialplan", help="the rollout dialplan")
    recs.add_argument("--since", help="records of calls that ended since: 7d, 24h, 30m, 90s or an ISO 8601 time")
    ev = sub.add_parser("evaluate", parents=[common], help="replay records through the decision engine (no Redis)")
    ev.add_argument("dialplan", help="the rollout dialplan whose experiment settings apply")
    ev.add_argument(
        "--records", type=Path, required=True, help="a JSON-lines file written by rollout records (-: standard input)"
    )
    ev.add_argument(
        "--follow",
        action="store_true",
        help="read records as they arrive and print each event at once (one JSON line each with --json)",
    )
    rearm = sub.add_parser("rearm", parents=[common], help="test a rolled-back candidate afresh, at a share (audited)")
    rearm.add_argument("dialplan", help="the rollout dialplan")
    rearm.add_argument("variant", help="the candidate")
    rearm.add_argument("--share", type=float, help="its share in percent (default: the first auto_promote step, or 5)")
    rearm.add_argument("--reason", help="why (required; goes into the audit stream)")
    rearm.add_argument("--who", help="who re-arms (default: the login name)")
    rearm.add_argument("--override-gate", metavar="REASON", help="re-arm it though no green replay report attests it")
    att = sub.add_parser("attest", parents=[common], help="register a green replay report of a plan's candidates")
    att.add_argument("dialplan", help="the rollout dialplan")
    att.add_argument("--report", type=Path, required=True, help="report.json of `callbridge replay --report DIR`")
    att.add_argument("--variant", help="the candidate it attests (default: each whose configuration it ran)")
    att.add_argument("--who", help="who attests (default: the login name)")
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


def changes_from_args(args: argparse.Namespace, old: RolloutFlag, names: Sequence[str]) -> dict[str, Any]:
    """The settings to change, from ``rollout set`` options applied to the current flag (``names``: the variants)."""
    changes: dict[str, Any] = {}
    if args.weights is not None:
        given = parse_weights(args.weights)
        changes["weights"] = {**dict.fromkeys(names, 0.0), **given}
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
    shown = {k: v for k, v in entry.new.items() if not k.endswith("_unix")}  # the API puts a moment's beside it
    diff = "; ".join(f"{k} {_value(entry.old.get(k))} -> {_value(v)}" for k, v in shown.items())
    who = entry.who if entry.os_user in {"", entry.who} else f"{entry.who} (os user {entry.os_user})"
    return f"  {entry.when}  {who:<14} {diff}  ({entry.reason})"


def _rule_text(flag: RolloutFlag) -> str:
    parts = [f"model failure rate > {flag.failure_rate_threshold:.1%} and above the safe variant's"]
    if flag.first_audio_p95_excess_ms is not None:
        parts.append(f"greeting or first-reply p95 more than {flag.first_audio_p95_excess_ms:g} ms above")
    if flag.barge_in_failure_excess is not None:
        parts.append(f"barge-in recovery failures more than {flag.barge_in_failure_excess:.1%} above")
    if flag.function_call_success_drop is not None:
        parts.append(f"function-call success more than {flag.function_call_success_drop:.1%} below")
    if flag.cost_ratio_threshold is not None:
        parts.append(f"cost per call above {flag.cost_ratio_threshold:g}x")
    return f"over {flag.window_s} s, at least {flag.min_calls} calls of a variant: " + "; or ".join(parts)


def _health_row(name: str, s: WindowStats) -> str:
    greeting, reply = ("n/a" if v is None else f"{v:.0f} ms" for v in (s.greeting_p95_ms, s.first_reply_p95_ms))
    fn = s.function_call_success_rate
    cost = s.cost_per_call
    return (
        f"  {name:<22} {s.calls:>5} {s.failed_rate:>7.1%} {s.connect_failures:>9} {s.fallbacks:>8} {s.dropped:>7} "
        f"{s.failure_rate:>7.1%} {greeting:>10} {reply:>10} {s.truncate_failures:>4}/{s.truncates:<4} "
        f"{'n/a' if fn is None else f'{fn:.0%}':>6} "
        f"{'n/a' if cost is None else f'${cost:.4f}':>9}"
    )


@dataclass(frozen=True)
class Shown:
    """One dialplan as ``rollout show`` reads it: its variants and flag, and what Redis holds of it. ``stored``
    None and ``window`` None: Redis was not asked."""

    name: str
    spec: RolloutSpec
    flag: RolloutFlag
    voice: str
    stored: bool | None = None
    window: Mapping[str, WindowStats] | None = None
    audit: Sequence[AuditEntry] = ()
    known: bool = True  # in the dialplan files
    refused: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    flag_refused: str | None = None  # the stored flag is not obeyed: why, and what calls follow instead

    def variants(self, today: dt.date) -> list[dict[str, Any]]:
        return describe_variants(self.spec, self.flag, self.voice, catalog.shutdown_dates(), today, self.refused)


def describe(shown: Shown, today: dt.date | None = None) -> str:
    """The text of one dialplan for ``rollout show``."""
    today = today or dt.datetime.now(dt.UTC).date()
    name, spec, flag, window, audit = shown.name, shown.spec, shown.flag, shown.window, shown.audit
    head = f"dialplan      {name}"
    if shown.stored is None:
        head += "  (no Redis: the dialplan's defaults)"
    elif not shown.stored:
        head += "  (no stored flag: the dialplan's defaults)"
    if not shown.known:
        head += "  (not in the dialplan files: GA against beta)"
    lines = [head]
    if shown.flag_refused is not None:
        lines.append(f"NOT OBEYED    {shown.flag_refused} (docs/operating.md, Runbook: rollout flag refused)")
    lines += _variant_lines(shown.variants(today), name)
    ruled = "rollback" in spec.model_fields_set  # the worker runs the window's rule only for a plan that names one
    lines += [
        f"kill switch   {_value(flag.kill)}" + (f"   (every call on {spec.safe})" if flag.kill else ""),
        *_holder_lines(kill_switch.holder_of(flag)),
        f"sticky        per {flag.sticky}, salt {flag.salt}; fallback voice {flag.fallback_voice}",
    ]
    if ruled:
        lines.append(f"rollback      {_rule_text(flag)}")
    if window is None:
        lines.append("health        n/a (no Redis)")
    else:
        lines.append(f"health        last {flag.window_s} s" + ("" if ruled else " (for reference: no rollback rule)"))
        lines.append(
            f"  {'variant':<22} {'calls':>5} {'failed%':>7} {'conn.fail':>9} {'fallback':>8} {'dropped':>7} "
            f"{'model%':>7} {'greet p95':>10} {'reply p95':>10} {'barge-in':>9} {'fn ok':>6} {'cost/call':>9}"
        )
        lines.append(
            "  failed%: calls that failed their caller (a call on the fallback model is recovered, not failed); "
            "fallback: connect failures recovered on fallback; model%: connect failures + dropped per call (the rule's)"
        )
        lines += [_health_row(n, window.get(n, WindowStats())) for n in spec.names]
    if audit:
        lines.append("recent changes (newest first):")
        lines += [_audit_line(e) for e in audit]
    return "\n".join(lines)


def _holder_lines(holder: kill_switch.Holder | None) -> list[str]:
    """Who holds a kill switch that is on, and who may turn it off."""
    if holder is None:
        return []
    setter = f" or {holder.by}, who turned it on" if holder.by else ""
    return [f"  held by {holder.text()}; turning it off needs the {holder.role} role{setter}"]


def _variant_lines(variants: list[dict[str, Any]], plan: str) -> list[str]:
    lines = ["variants      weight  share   dialect model (fallback)  voice      (* safe)"]
    for v in variants:
        model = v["model"] + (f" ({v['fallback_model']})" if v["fallback_model"] else "")
        mark = "*" if v["safe"] else " "
        lines.append(
            f"  {mark} {v['name']:<20} {v['weight']:>6g} {v['share_percent']:>6.2f}% {v['dialect']:<7} {model:<40} "
            f"{v['voice']}"
        )
        if (r := v.get("refused")) is not None:
            lines.append(
                f"      REFUSED: the service refuses {r.get('model', '?')} ({r.get('code', '?')}); no calls go here "
                f"(`{PROG} unrefuse {plan} {v['name']}` once it names a model the service takes)"
            )
        for key in ("allow", "deny"):
            if v[key]:
                lines.append(f"      {key} {' '.join(v[key])}")
        if v["shutdown"] is not None:
            lines.append(f"      {v['model']}: shutdown announced for {v['shutdown']} ({v['shutdown_days']} days)")
        if v["fallback_shutdown"] is not None:
            lines.append(f"      fallback {v['fallback_model']}: shutdown announced for {v['fallback_shutdown']}")
    return lines


def _flag_json(flag: RolloutFlag) -> dict[str, Any]:
    return kill_switch.flag_json(flag)


def load_plans(directory: Path, *, required: bool = True) -> Plans:
    """Rollout dialplan name -> (its variants, its profile's voice), from the dialplan files. Raises ConfigError for
    a broken dialplan, or a directory that does not exist (unless not ``required``: then none)."""
    if not directory.is_dir() and not required:
        return {}
    require_folder(directory)
    return rollout_plans(load_dialplans(directory))


async def _show(store: RolloutStore | None, args: argparse.Namespace, plans: Plans) -> int:
    stored_names = await store.dialplans() if store is not None else []
    names = [args.dialplan] if args.dialplan else sorted(set(plans) | set(stored_names))
    unknown = [n for n in names if n not in plans and n not in stored_names]
    if unknown:
        where = f"{args.dialplans} (--dialplans)"
        raise ConfigError(f"rollout {unknown[0]}", "dialplan", f"no rollout dialplan of that name in {where}")
    out: list[dict[str, Any]] = []
    texts: list[str] = []
    today = dt.datetime.now(dt.UTC).date()
    files = {p.name: p for p in load_dialplans(args.dialplans)} if store is not None and plans else {}
    for name in names:
        spec, voice = plans.get(name, (legacy_spec(), "alloy"))
        stored_flag = await store.stored_flag(name) if store is not None else None
        flag = stored_flag or spec.default_flag()
        window = await store.window(name, flag.window_s) if store is not None else None
        audit = await store.audit(name, args.changes) if store is not None else []
        refused = await refusals.refused(store, name) if store is not None else {}
        stored = None if store is None else stored_flag is not None
        flag_refused = store.refusal(name) if store is not None else None
        shown = Shown(name, spec, flag, voice, stored, window, audit, name in plans, refused, flag_refused)
        experiment, experiment_text = (
            await experiment_cli.show_experiment(store, name, spec, flag) if store is not None else (None, "")
        )
        digests = attest.plan_digests(files[name]) if name in files else None
        gate = await arming.shown(store, name, digests) if store is not None and digests is not None else None
        out.append(
            {
                "dialplan": name,
                "in_dialplan_files": shown.known,
                "stored": shown.stored,
                "safe": spec.safe,
                "rollback_rule": "rollback" in spec.model_fields_set,
                "variants": shown.variants(today),
                "flag": _flag_json(flag),
                "flag_refused": flag_refused,  # null: the stored flag (or none) is obeyed
                "window": None if window is None else {n: s.to_json() for n, s in window.items()},
                "audit": [e.to_json() for e in audit],
                "experiment": experiment,
                "gate": gate,
            }
        )
        gate_line = f"replay gate   {arming.gate_text(gate)}" if gate is not None else ""
        texts.append("\n".join(t for t in (describe(shown, today), gate_line, experiment_text) if t))
    if args.json:
        print(json.dumps(stamped({"dialplans": out}), indent=2))
    elif not texts:
        print(f"no rollout dialplan in {args.dialplans} and no stored flag")
    else:
        print("\n\n".join(texts))
    return EXIT_OK


async def _set(store: RolloutStore, args: argparse.Namespace, spec: RolloutSpec) -> int:
    who, at = args.who or _login(), kill_switch.now_text()

    def compute(old: RolloutFlag) -> dict[str, Any]:
        # The lists are edited on the flag as read inside the transaction: concurrent edits do not lose each other;
        # the kill switch's holder is written (or checked) there too, as the command line's role.
        changes = changes_from_args(args, old, spec.names)
        holder = kill_switch.cli_holder(who)  # never an account's name: a console account named `who` holds nothing
        return kill_switch.kill_changes(args.dialplan, old, changes, holder, kill_switch.CLI_ROLE, at)

    digests = _digests(args)
    change = await arming.update_flag(
        store, args.dialplan, compute, who, args.reason, digests=digests, override=args.override_gate
    )
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
    elif change.old == change.new:
        print(
            f"{args.dialplan}: the stored flag, written outside callbridge and not obeyed, replaced by the one in force"
        )
        print(f"recorded by {who}: {args.reason.strip()}  (audit {change.audit_id})")
    else:
        for name in type(change.new).model_fields:
            before, after = getattr(change.old, name), getattr(change.new, name)
            if before != after and name not in kill_switch.HOLDER_FIELDS:
                print(f"{args.dialplan}: {name} {_value(before)} -> {_value(after)}")
        if (holder := kill_switch.holder_of(change.new)) is not None and change.new.kill_by != change.old.kill_by:
            print(f"{args.dialplan}: the kill switch is held by {holder.text()}")
        print(f"{args.dialplan}: shares now {_value({k: f'{v:g}%' for k, v in shares(spec, change.new).items()})}")
        print(f"recorded by {who}: {args.reason.strip()}  (audit {change.audit_id})")
    return EXIT_OK


async def _unrefuse(store: RolloutStore, args: argparse.Namespace, spec: RolloutSpec) -> int:
    if args.variant not in spec.names:
        raise ConfigError(f"rollout {args.dialplan}", "variant", f"no such variant (variants: {', '.join(spec.names)})")
    cleared = await refusals.clear_refused(store, args.dialplan, args.variant)
    if args.json:
        print(json.dumps({"dialplan": args.dialplan, "variant": args.variant, "cleared": cleared}))
    elif cleared:
        print(f"{args.dialplan}: {args.variant} is no longer refused; give it weight with `{PROG} set`")
    else:
        print(f"{args.dialplan}: {args.variant} was not refused")
    return EXIT_OK


async def _backup(store: RolloutStore, args: argparse.Namespace) -> int:
    """``export``: the backup to a file (0600) or standard output. ``import``: restore one."""
    if args.action == "export":
        text = json.dumps(await backup.export(store), indent=2) + "\n"
        if args.file is None or str(args.file) == "-":
            sys.stdout.write(text)
            return EXIT_OK
        fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        print(f"rollout state of {store.where} written to {args.file}", file=sys.stderr)
        return EXIT_OK
    try:
        doc = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"file {args.file}", "(file)", f"cannot read a backup: {exc}") from None
    override = args.override_gate
    stored = doc.get("flags") if isinstance(doc, dict) else None
    if isinstance(stored, dict) and any(store.spec_for(str(n)).require_gate for n in stored):
        flags = backup.check(doc, str(args.file), store)
        digests = {p.name: attest.plan_digests(p) for p in load_dialplans(args.dialplans) if p.name in flags}
        await arming.require_restore(store, flags, digests, override, args.replace)
    note = f"override of the replay gate: {override.strip()}" if override and override.strip() else ""
    who = args.who or _login()
    done = await backup.restore(store, doc, str(args.file), who=who, replace=args.replace, note=note)
    if args.json:
        print(json.dumps(done.to_json(), indent=2))
        return EXIT_OK
    for name, what in done.flags.items():
        print(f"{name}: {what}" + ("  (stored one differs: --replace to restore over it)" if what == "kept" else ""))
    print(f"refused variants added: {done.refused}; audit entries put back: {done.audit}")
    return EXIT_OK


def _digests(args: argparse.Namespace) -> dict[str, str]:
    """The configuration digest of each variant of ``args.dialplan``, from its dialplan file."""
    plan = next((p for p in load_dialplans(args.dialplans) if p.name == args.dialplan), None)
    return attest.plan_digests(plan) if plan is not None else {}


async def _attest(store: RolloutStore, args: argparse.Namespace) -> int:
    """``attest``: a green replay report kept for the plan's candidates whose configuration it ran."""
    try:
        report = json.loads(Path(args.report).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(str(args.report), "--report", f"cannot read a replay report: {exc}") from None
    who = args.who or _login()
    done = await arming.register(store, args.dialplan, report, str(args.report), _digests(args), who, args.variant)
    if args.json:
        print(json.dumps({"dialplan": args.dialplan, "attested": done}, indent=2))
    for a in [] if args.json else done:
        print(f"{args.dialplan}: {a['variant']} #{a['digest']} attested by {args.report} ({len(a['runs'])} run(s))")
    return EXIT_OK


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _plan(args: argparse.Namespace, plans: Plans) -> RolloutSpec:
    if args.dialplan not in plans:
        where = f"{args.dialplans} (--dialplans)"
        raise ConfigError(f"rollout {args.dialplan}", "dialplan", f"no rollout dialplan of that name in {where}")
    return plans[args.dialplan][0]


async def _run(args: argparse.Namespace, url: str | None, plans: Plans, rollout_keys: tuple[bytes, ...] = ()) -> int:
    specs = {n: s for n, (s, _) in plans.items()}
    store = RolloutStore(url, specs=specs, read_timeout_s=2.0, rollout_keys=rollout_keys) if url else None
    try:
        if args.action == "show":
            return await _show(store, args, plans)
        assert store is not None  # main() asks for a URL before anything else
        if args.action in {"export", "import"}:
            return await _backup(store, args)
        spec = _plan(args, plans)
        if args.action == "records":
            return await experiment_cli.print_records(store, args.dialplan, args.since)
        if args.action == "unrefuse":
            return await _unrefuse(store, args, spec)
        if args.action == "rearm":
            return await experiment_cli.rearm(store, args, spec, args.who or _login(), _digests(args))
        if args.action == "attest":
            return await _attest(store, args)
        return await _set(store, args, spec)
    finally:
        if store is not None:
            await store.close()


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.action == "set":
            check_set_args(args)
        if args.action == "rearm" and not (args.reason or "").strip():
            raise UsageError("--reason is required (say why; it goes into the audit stream)")
        if args.api and args.action in {"export", "import", "records", "evaluate", "rearm", "attest"}:
            raise UsageError(f"{args.action} goes to Redis (or a file) itself, not through --api")
        if args.api:
            return asyncio.run(_via_api(args, api_token(args)))
        settings = load_settings(args.config, redis_url=args.redis_url, dialplans=args.dialplans)
        url, args.dialplans = settings.redis_url, settings.dialplans
        plans = load_plans(args.dialplans, required=args.action not in {"export", "import"})
        if args.action == "evaluate":
            return experiment_cli.run_evaluate(args.dialplan, _plan(args, plans), args.records, args.json, args.follow)
        if url is None and args.action != "show":
            raise UsageError(NO_REDIS)
        return asyncio.run(_run(args, url, plans, settings.rollout_keys))
    except UsageError as exc:
        print(f"{PROG} {args.action}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"{PROG} {args.action}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreUnavailable as exc:
        print(f"{PROG} {args.action}: {exc}", file=sys.stderr)  # names the URL without its password
        return EXIT_UNAVAILABLE
    except kill_switch.KillHeld as exc:
        print(f"{PROG} {args.action}: refused: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except ApiError as exc:
        print(f"{PROG} {args.action}: {exc}", file=sys.stderr)
        return EXIT_USAGE if exc.usage else EXIT_UNAVAILABLE


# ------------------------------------------------------------------------------------------------ --api
async def _via_api(args: argparse.Namespace, token: str) -> int:
    """``show`` and ``set`` through the supervisor API: its roles decide, its audit names the account."""
    async with ApiClient(args.api, token) as api:
        state = await api.request("GET", "/api/rollout")
        rollouts: dict[str, Any] = state["rollouts"]
        names = [args.dialplan] if args.dialplan else sorted(rollouts)
        for name in names:
            if name not in rollouts:
                known = ", ".join(sorted(rollouts)) or "none"
                raise ConfigError(f"rollout {name}", "dialplan", f"not a rollout dialplan at {args.api} ({known})")
        if args.action == "show":
            return _show_api(args, names, state)
        rollout = rollouts[args.dialplan]
        stored = state["flags"].get(args.dialplan)
        old = kill_switch.flag_from_json(stored) if stored else _flag_of(rollout["variants"])
        changes = changes_from_args(args, old, [v["name"] for v in rollout["variants"]])
        if set(changes) == {"kill"}:  # the kill switch alone: its own route, which a supervisor's token may use
            path, body = f"/api/rollout/{args.dialplan}/kill", {**changes, "reason": args.reason.strip()}
        else:
            path = f"/api/rollout/{args.dialplan}"
            body = {**changes, "reason": args.reason.strip(), **({"who": args.who} if args.who else {})}
            body |= {"override_gate": args.override_gate} if args.override_gate else {}
        done = await api.request("PUT", path, body)
    if args.json:
        print(json.dumps(done, indent=2))
    elif not done["changed"]:
        print(f"{args.dialplan}: unchanged (already so)")
    else:
        for name, before in old.model_dump(mode="json").items():
            if done["flag"].get(name) != before and name not in kill_switch.HOLDER_FIELDS:
                print(f"{args.dialplan}: {name} {_value(before)} -> {_value(done['flag'][name])}")
        print(f"recorded in the audit of {args.api}: {args.reason.strip()}")
    return EXIT_OK


def _flag_of(variants: list[dict[str, Any]]) -> RolloutFlag:
    """The flag a dialplan's defaults amount to, from the API's variants (no flag stored yet)."""
    return RolloutFlag(
        weights={v["name"]: v["weight"] for v in variants},
        allow={v["name"]: tuple(v["allow"]) for v in variants if v["allow"]},
        deny={v["name"]: tuple(v["deny"]) for v in variants if v["deny"]},
    )


def _show_api(args: argparse.Namespace, names: list[str], state: dict[str, Any]) -> int:
    out, texts = [], []
    for name in names:
        rollout, flag = state["rollouts"][name], state["flags"].get(name)
        audit = [a for a in state["audit"] if a["dialplan"] == name][: args.changes]
        out.append({"dialplan": name, **rollout, "flag": flag, "audit": audit})
        lines = [f"dialplan      {name}" + ("" if rollout["stored"] else "  (no stored flag: the dialplan's defaults)")]
        lines += _variant_lines(rollout["variants"], name)
        if flag is not None:
            lines.append(
                f"kill switch   {_value(flag['kill'])}"
                + (f"   (every call on {rollout['safe']})" if flag["kill"] else "")
            )
            lines += _holder_lines(kill_switch.holder_of(kill_switch.flag_from_json(flag)))
            lines.append(f"sticky        per {flag['sticky']}")
        if audit:
            lines.append("recent changes (newest first):")
            lines += [_audit_line(AuditEntry(**a)) for a in audit]
        texts.append("\n".join(lines))
    print(json.dumps({"dialplans": out}, indent=2) if args.json else "\n\n".join(texts))
    return EXIT_OK
