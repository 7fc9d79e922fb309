"""Where a process's stderr goes: the journal only when JOURNAL_STREAM names the very stream it writes to. What a
line may hold: nothing of a message starts a line of its own."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from bridge.runtime.logs import (
    MAX_MESSAGE_CHARS,
    TRACEBACK_INDENT,
    JsonFormatter,
    TextFormatter,
    safe_text,
    stderr_is_journal,
)


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


FORGED = "2026-11-26 00:00:00,000 INFO bridge.supervisor: console: adam signed in (admin)"


def _record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad value\n" + FORGED)
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("bridge.sip", logging.WARNING, __file__, 1, message, args, exc_info)


def test_no_message_starts_a_line_of_its_own_in_either_format() -> None:
    text = TextFormatter().format(_record("peer said %s", "hi\r\n" + FORGED + "\x00\x1b[31m\u2028", exc=True))
    first, *rest = text.splitlines()
    assert first.endswith(r"peer said hi\r\n" + FORGED + r"\x00\x1b[31m\u2028")
    assert rest and all(line.startswith(TRACEBACK_INDENT) for line in rest)  # the traceback, under its line
    record = json.loads(JsonFormatter("0").format(_record("%s", "a\nb")))
    assert record["message"] == r"a\nb"


def test_a_long_message_is_cut_with_a_marker() -> None:
    cut = safe_text("x" * (MAX_MESSAGE_CHARS + 10))
    assert cut == "x" * MAX_MESSAGE_CHARS + "... [10 chars cut]"
    assert safe_text("\n" * 3, limit=4) == r"\n\n... [2 chars cut]"
    assert safe_text("plain C:\\path") == "plain C:\\path"
