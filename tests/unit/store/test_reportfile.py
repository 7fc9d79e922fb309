"""The report file: whole records only, whatever a writer is doing at the time of the read."""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import time
from pathlib import Path

from bridge.store.reportfile import append_report, read_reports


def test_records_read_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    assert read_reports(path) == []
    append_report(path, {"call_id": "a", "worker": 0})
    append_report(path, {"call_id": "b", "worker": 1, "at": Path("/x")})
    assert read_reports(path) == [{"call_id": "a", "worker": 0}, {"call_id": "b", "worker": 1, "at": "/x"}]


def test_a_last_line_without_its_newline_is_left_out(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    append_report(path, {"call_id": "a"})
    with path.open("a") as f:
        f.write('{"call_id": "b", "transcript": "half a li')
    assert read_reports(path) == [{"call_id": "a"}]


def test_a_reader_waits_for_the_writer_holding_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    append_report(path, {"call_id": "a"})
    read: list[list[dict[str, object]]] = []
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write('{"call_id": "b", ')
        f.flush()
        reader = threading.Thread(target=lambda: read.append(read_reports(path)))
        reader.start()
        time.sleep(0.1)
        assert not read  # blocked on the lock, not reading half a record
        f.write('"worker": 1}\n')
    reader.join(5)
    assert read == [[{"call_id": "a"}, {"call_id": "b", "worker": 1}]]


def test_a_new_report_file_is_the_owners_alone_and_an_existing_one_keeps_its_mode(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # the usual umask, which would leave a plain open()'s file readable by all
    try:
        path = tmp_path / "calls.jsonl"
        append_report(path, {"call_id": "a", "transcript": "my card number is ..."})
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        kept = tmp_path / "kept.jsonl"
        kept.touch(mode=0o640)
        kept.chmod(0o640)  # an operator's choice (a log reader's group): appended to, not changed
        append_report(kept, {"call_id": "b"})
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640
    finally:
        os.umask(old_umask)
