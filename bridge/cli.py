"""``callbridge``: one console script, one subcommand per job.

Subcommands import their module lazily, so ``callbridge dialplan check`` does not load pjsua2 and ``callbridge
emulator`` does not load numpy's resampler tables.

Exit codes, the same for every command (docs/operating.md): 0 success, 1 a failure of the work (a call not
answered, Redis unreachable, a front that does not answer), 2 a usage or configuration error (a bad flag, setting
or file; the message names it).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

# subcommand -> (module, function taking argv, one-line help). Each function parses its own arguments.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("bridge.devkit.demo", "main", "start Redis, the emulator and a worker; place one call per dialect"),
    "serve": ("bridge.serve.pool", "main", "run the SIP worker pool (and the front, the HTTP API when configured)"),
    "config": ("bridge.serve.config_cli", "main", "the settings serve would run with and their sources (show)"),
    "health": ("bridge.serve.health", "main", "is this node's serve healthy? (exit 0 yes, 1 no; the HEALTHCHECK)"),
    "drain": ("bridge.serve.drain_cli", "drain_main", "stop new calls to a node or worker behind the front (--undo)"),
    "reload": ("bridge.serve.control_cli", "reload_main", "serve reads users, dialplans, HTTP certificate again"),
    "restart": ("bridge.serve.control_cli", "restart_main", "--rolling: replace serve's workers one by one"),
    "call": ("bridge.devkit.softphone", "call_main", "place a call with the pjsua2 softphone"),
    "phone": ("bridge.devkit.softphone", "phone_main", "softphone utilities (listen: answer and record)"),
    "emulator": ("bridge.emulator.server", "main", "run the local model emulator (every dialect: Realtime, GPT-Live)"),
    "dialplan": ("bridge.dialplan", "main", "dialplan tools (check)"),
    "replay": ("bridge.replay.cli", "main", "replay call scripts through every dialect and compare them"),
    "scripts": ("bridge.replay.cli", "scripts_main", "call-script tools (check, from-recording)"),
    "tokens": ("bridge.serve.broker", "main", "run the credential broker (short-lived credentials for workers)"),
    "rollout": ("bridge.serve.rollout_cli", "main", "show or change a rollout dialplan's variants (weights, kill)"),
    "calls": ("bridge.supervisor.remote", "calls_main", "live calls across all workers (Redis, or --api URL)"),
    # every name of bench.BENCHES (tests/unit/test_cli_benches.py): this module imports nothing of ours
    "bench": ("bench", "main", "benchmarks: audio, calls, replay, echo, recording, soak, network, rollout, capacity"),
    "users": ("bridge.serve.control_cli", "users_main", "console accounts: add, token, remove, list, unlock"),
    "webhooks": ("bridge.webhooks.cli", "main", "pending webhook deliveries and dead letters (list, retry)"),
}


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("callbridge")
    except PackageNotFoundError:  # a checkout on sys.path without an install
        return "unknown"


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return (
        "usage: callbridge [--version] COMMAND [ARGS...]\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\noptions:\n  -h, --help  this list\n  --version   the installed version\n\n"
        + "`callbridge COMMAND --help` describes a command. Exit codes: 0 success, 1 the work failed, "
        + "2 a usage or configuration error."
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(_usage(), file=sys.stdout if args else sys.stderr)
        return EXIT_OK if args else EXIT_USAGE
    if args[0] in {"-V", "--version"}:
        print(f"callbridge {version()}")
        return EXIT_OK
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"callbridge: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    module_name, func_name, _ = COMMANDS[name]
    func: Callable[[list[str]], int] = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A subcommand's parser, named so that ``--help`` reads ``callbridge <prog>``."""
    return argparse.ArgumentParser(prog=f"callbridge {prog}", description=description)


if __name__ == "__main__":
    raise SystemExit(main())
