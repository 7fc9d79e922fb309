"""``callbridge reload``, ``callbridge restart --rolling`` and ``callbridge users unlock``: they read ``serve``'s
settings (the same file, variables and flags) to find its control socket (``bridge.serve.control``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from bridge.errors import ConfigError
from bridge.serve.control import ask


def _main(
    prog: str,
    description: str,
    argv: list[str],
    word: Callable[[argparse.Namespace], str | None],
    *,
    options: Callable[[argparse.ArgumentParser], None] = lambda parser: None,
    refused: str = "",
    timeout_s: float | None = None,
) -> int:
    """Parse serve's settings flags (and ``options``), send ``word(args)`` (None: ``refused``) to its control socket."""
    from bridge.cli import build_parser
    from bridge.serve.pool import add_settings_flags, settings_from_args

    parser = build_parser(prog, description)
    add_settings_flags(parser)
    options(parser)
    args = parser.parse_args(argv)
    command = word(args)
    if command is None:
        parser.error(refused)
    try:
        settings, _ = settings_from_args(args)
    except ConfigError as exc:
        print(f"callbridge {prog}: {exc}", file=sys.stderr)
        return 2
    return ask(settings, command, timeout_s)


def reload_main(argv: list[str]) -> int:
    """``callbridge reload``: as SIGHUP to serve."""
    return _main(
        "reload", "read the users file, the dialplans and the HTTP certificate again (no call is touched)", argv,
        lambda _args: "reload",
    )  # fmt: skip


def restart_main(argv: list[str]) -> int:
    """``callbridge restart --rolling``: replace serve's workers one at a time; returns when done."""
    return _main(
        "restart", "replace the workers one at a time (drain, restart, ready); returns when done", argv,
        lambda args: "restart" if getattr(args, "rolling", False) else None,
        options=_rolling_option,
        refused="only --rolling is supported: a restart that drops no call",
    )  # fmt: skip


def users_main(argv: list[str]) -> int:
    """``callbridge users``: the users file (``bridge.supervisor.users_cli``), and ``unlock [NAME] [--source ADDR]``,
    which asks the running serve to forget the failed sign-ins of the account NAME (from every address) and/or from
    the address ADDR, so they may sign in again at once."""
    if argv[:1] != ["unlock"]:
        from bridge.supervisor.users_cli import main

        return main(argv)
    return _main(
        "users unlock",
        "clear failed console sign-ins in the running serve",
        argv[1:],
        _unlock_word,
        options=_unlock_options,
        refused="name an account and/or --source ADDR (no spaces)",
        timeout_s=10.0,
    )


def _rolling_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rolling", action="store_true", help="one worker at a time, dropping no call")


def _unlock_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", default="", help="the account whose failures (from every address) to clear")
    parser.add_argument("--source", default="", help="the address whose failures to clear")


def _unlock_word(args: argparse.Namespace) -> str | None:
    named = [f"{key}={value}" for key, value in (("account", args.name), ("source", args.source)) if value]
    if not named or any(c.isspace() for part in named for c in part):
        return None
    return "unlock " + " ".join(named)
