"""Every ``sh`` block of the README and docs/ (and call_scripts/README.md) is either run as written by
tests/integration/docs/test_docs_commands.py (marked ``<!-- doctest -->``) or says why not (``<!-- no-doctest:
REASON -->``, the reason naming what it needs that CI lacks, or which test runs the same)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "call_scripts" / "README.md"]
RUN = re.compile(r"^<!-- doctest(?:: \w+)? -->$")
SKIP = re.compile(r"^<!-- no-doctest: (?P<why>.{20,}) -->$")


def test_every_shell_block_is_run_or_says_why_not() -> None:
    unmarked = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.startswith("```sh"):
                mark = lines[i - 1] if i else ""
                if not (RUN.match(mark) or SKIP.match(mark)):
                    unmarked.append(f"{page.relative_to(REPO)}:{i + 1}: {mark!r}")
    assert not unmarked, "shell blocks neither run nor excused:\n" + "\n".join(unmarked)
