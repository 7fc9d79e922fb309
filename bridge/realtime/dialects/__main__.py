"""``python -m bridge.realtime.dialects [--check] [PATH]``: rewrite docs/protocol.md's generated section from the
dialect tables, or (``--check``) exit 1 if it is stale."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bridge.realtime.dialects import DIALECTS
from bridge.realtime.dialects.eventmap import DOCUMENT, refresh


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.realtime.dialects", description=__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=DOCUMENT, help="the document (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the section is stale")
    args = parser.parse_args(argv)
    text = args.path.read_text()
    fresh = refresh(text, tuple(DIALECTS.values()))
    if args.check:
        if fresh != text:
            print(
                f"{args.path}: the generated section is stale; run python -m bridge.realtime.dialects", file=sys.stderr
            )
            return 1
        return 0
    if fresh != text:
        args.path.write_text(fresh)
        print(f"{args.path}: updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
