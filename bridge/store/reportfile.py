"""The report file (``Settings.report_file``): one JSON line per finished call, appended by every worker of a node.

A record can be longer than one ``write()`` makes atomic, so both sides lock the file: a writer appends a whole line
under an exclusive ``flock``, a reader reads under a shared one. A reader also leaves out a last line without its
newline (a writer that does not lock, or a file system without ``flock``), so it never parses half a record.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any


def append_report(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one line. A new file is made mode 0600 (it holds transcripts and tools' arguments); an
    existing file keeps its mode."""
    line = json.dumps(record, default=str) + "\n"
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(line)


def read_reports(path: Path) -> list[dict[str, Any]]:
    """Every complete record in the file, in the order written ([] while the file does not exist)."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return []
    with f:
        fcntl.flock(f, fcntl.LOCK_SH)
        data = f.read()
    complete = data[: data.rfind(b"\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]
