"""The console's copy of the report vocabulary: ``static/kinds.js``, generated from :mod:`bridge.events` (each
report's ``kind``), the closed sets the console's scripts compare (the call's phases, a tool call's outcome, a
live row's status, ...) and the marks a call can carry with their labels (:data:`bridge.supervisor.flags.FLAGS`, the
lists' mark filters), so that no script or page spells a kind, a value or a mark itself.

Write it after a change to the vocabulary (a unit test fails until the committed file matches)::

    python -m bridge.supervisor.kinds --js bridge/supervisor/static/kinds.js
"""

from __future__ import annotations

import argparse
import enum
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from bridge import events as ev
from bridge.call.state import Phase
from bridge.supervisor.flags import FLAGS
from bridge.supervisor.rollout_view import Editor
from bridge.supervisor.stream import RowStatus

KINDS_JS = Path("bridge/supervisor/static/kinds.js")  # from the repository's root
# (the module's name for a set, the set): what the scripts compare against
ENUMS: tuple[tuple[str, type[enum.StrEnum]], ...] = (
    ("PHASE", Phase),
    ("ITEM_TYPE", ev.ItemType),
    ("ROW_STATUS", RowStatus),
    ("EDITOR", Editor),
)


def _frozen(name: str, values: Mapping[str, str]) -> list[str]:
    lines = [f"export const {name} = Object.freeze({{"]
    lines += [f"  {key}: {json.dumps(value)}," for key, value in values.items()]
    return [*lines, "});"]


def js_module() -> str:
    """``static/kinds.js``: ``KIND`` (each report's kind, by its name in capitals), one frozen object per set, and
    ``MARK_LABEL`` (each mark's label, by its flag, in the order marks are shown)."""
    lines = [
        f"// Generated from bridge/events.py by `python -m bridge.supervisor.kinds --js {KINDS_JS}`:",
        "// do not edit. KIND: the kind of each report a call's stream entry stores; the rest: the values of the",
        "// closed sets the scripts compare (members by their Python names).",
        "",
    ]
    lines += _frozen("KIND", {kind.upper(): kind for kind in sorted(ev.REPORTS)})
    for name, cls in ENUMS:
        lines += ["", *_frozen(name, {member.name: member.value for member in cls})]
    lines += ["", *_frozen("MARK_LABEL", {str(flag): label for flag, (label, _severity) in FLAGS.items()})]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.supervisor.kinds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--js", type=Path, help="write the module here (default: print it)")
    args = parser.parse_args(argv)
    if args.js is None:
        print(js_module(), end="")
    else:
        args.js.write_text(js_module(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
