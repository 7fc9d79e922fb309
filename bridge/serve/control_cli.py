"""``callbridge reload`` and ``callbridge restart --rolling``: they read ``serve``'s settings (the same file,
variables and flags) to find its control socket (``bridge.serve.control``)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from bridge.errors import ConfigError
from bridge.serve.control import ask


def _main(prog: str, description: str, argv: list[str], word: Callable[[object], str | None]) -> int:
    from bridge.cli import build_parser
    from bridge.serve.pool import add_settings_flags, settings_from_args

    parser = build_parser(prog, description)
    add_settings_flags(parser)
    if prog == "restart":
        parser.add_argument("--rolling", action="store_true", help="one worker at a time, dropping no call")
    args = parser.parse_args(argv)
    command = word(args)
    if command is None:
        parser.error("only --rolling is supported: a restart that drops no call")
    try:
        settings, _ = settings_from_args(args)
    except ConfigError as exc:
        print(f"callbridge {prog}: {exc}", file=sys.stderr)
        return 2
    return ask(settings, command)


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
    )  # fmt: skip
