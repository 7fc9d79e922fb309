"""``callbridge config show``: the settings ``serve`` would run with, each with its source, secrets masked.

::

    callbridge config show [the flags of serve] [--json]

The settings come from the same sources as ``serve`` (bridge/config.py): defaults, the ``--config`` file, the
environment (``CALLBRIDGE_<FIELD>``, secrets also from ``<VARIABLE>_FILE``), the flags. Every bad value is reported
at once with its source and field (exit 2).
"""

from __future__ import annotations

import json
import sys

from bridge.config import masked
from bridge.errors import ConfigError

EXIT_OK, EXIT_USAGE = 0, 2


def main(argv: list[str]) -> int:
    from bridge.cli import build_parser
    from bridge.serve.pool import add_settings_flags, settings_from_args

    parser = build_parser("config", "the effective settings of serve and where each comes from")
    sub = parser.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", help="every setting, its value (secrets masked) and its source")
    add_settings_flags(show)
    show.add_argument("--json", action="store_true", help="{FIELD: {value, source}} as JSON")
    args = parser.parse_args(argv)
    try:
        settings, sources = settings_from_args(args)
    except ConfigError as exc:
        print(f"callbridge config {args.action}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    values = masked(settings)
    rows = {name: {"value": value, "source": sources.get(name, "default")} for name, value in values.items()}
    if args.json:
        print(json.dumps(rows))
        return EXIT_OK
    width = max(map(len, rows))
    for name, row in rows.items():
        print(f"{name:<{width}}  {json.dumps(row['value']):<40}  {row['source']}")
    return EXIT_OK
