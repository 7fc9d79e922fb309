"""``callbridge``: one console script, one subcommand per job.

Subcommands import their module lazily, so ``callbridge dialplan check`` does not load pjsua2 and ``callbridge
emulator`` does not load numpy's resampler tables.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

# subcommand -> (module, function taking argv, one-line help). Each function parses its own arguments.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("bridge.devkit.demo", "main", "start Redis, the emulator and a worker; place one call per dialect"),
    "serve": ("bridge.serve.pool", "main", "run the SIP worker pool"),
    "drain": ("bridge.serve.front", "drain_main", "stop new calls to a node or worker behind the front (--undo)"),
    "call": ("bridge.devkit.softphone", "call_main", "place a call with the pjsua2 softphone"),
    "phone": ("bridge.devkit.softphone", "phone_main", "softphone utilities (listen: answer and record)"),
    "emulator": ("bridge.emulator.server", "main", "run the local model emulator (Realtime beta and GA, GPT-Live)"),
    "dialplan": ("bridge.dialplan", "main", "dialplan tools (check)"),
    "replay": ("bridge.replay.cli", "main", "replay call scripts through beta and GA and compare them"),
    "scripts": ("bridge.replay.cli", "scripts_main", "call-script tools (check, from-recording)"),
    "tokens": ("bridge.serve.broker", "main", "run the credential broker (short-lived credentials for workers)"),
    "rollout": ("bridge.rollout.cli", "main", "show or move the beta/GA rollout flag of a dialplan"),
    "calls": ("bridge.store.cli", "main", "live calls across all workers (--watch, --json)"),
    "bench": ("bench", "main", "benchmarks (audio, calls)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "usage: callbridge COMMAND [ARGS...]\n\ncommands:\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"callbridge: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    module_name, func_name, _ = COMMANDS[name]
    func: Callable[[list[str]], int] = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A subcommand's parser, named so that ``--help`` reads ``callbridge <prog>``."""
    return argparse.ArgumentParser(prog=f"callbridge {prog}", description=description)


if __name__ == "__main__":
    raise SystemExit(main())
