"""Where a process's stderr goes: the journal only when JOURNAL_STREAM names the very stream it writes to."""

from __future__ import annotations

import os
from pathlib import Path

from bridge.runtime.logs import stderr_is_journal


def test_the_journal_is_the_stream_journal_stream_names_and_no_other(tmp_path: Path) -> None:
    journal, other = tmp_path / "journal", tmp_path / "redirected"
    journal.touch()
    other.touch()
    stream = f"{journal.stat().st_dev}:{journal.stat().st_ino}"
    with journal.open("wb") as j, other.open("wb") as o:
        assert stderr_is_journal({"JOURNAL_STREAM": stream}, j.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": stream}, o.fileno())  # stderr redirected since systemd set it
        assert not stderr_is_journal({}, j.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, j.fileno())
    fd = os.open(journal, os.O_RDONLY)
    os.close(fd)
    assert not stderr_is_journal({"JOURNAL_STREAM": stream}, fd)  # a closed descriptor
