"""The log's format (``log_format``): plain text, or one JSON object a line that always names the process (``worker``:
its index, or ``serve``) and the call being handled (``call_id``; null outside a call).

A worker sets :data:`CALL_ID` at the start of each call's task; every task the call starts copies it (asyncio copies
the context at task creation), so every line logged on the call's behalf carries it, whichever module logs it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Literal

CALL_ID: ContextVar[str | None] = ContextVar("callbridge_call_id", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LogFormat = Literal["text", "json"]


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: str) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "worker": self.worker,
            "call_id": getattr(record, "call_id", None) or CALL_ID.get(),
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(log_format: LogFormat, worker: str) -> None:
    """Every handler of the root logger writes ``log_format`` from now on."""
    formatter = JsonFormatter(worker) if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO)
    for handler in root.handlers:
        handler.setFormatter(formatter)


def stderr_is_journal(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """Is ``fd`` (stderr) the journal? systemd sets ``JOURNAL_STREAM`` to ``DEVICE:INODE`` of the stream it connects a
    service's stdout and stderr to (systemd.exec(5)); a process whose stderr was redirected since does not match."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))
