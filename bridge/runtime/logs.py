r"""The log's format (``log_format``): plain text, or one JSON object a line that always names the process (``worker``:
its index, or ``serve``) and the call being handled (``call_id``; null outside a call).

Only the product writes lines: whatever a message quotes (a peer's packet, a header, a name), its newlines and other
control characters are escaped (``\n``, ``\r``, ``\t``, ``\xNN``; :func:`safe_text`) and a message longer than
:data:`MAX_MESSAGE_CHARS` is cut with a marker, in both formats, so no logger can start a line of its own from
data. A traceback's lines (text format) are indented under the line that logged it.

A worker sets :data:`CALL_ID` at the start of each call's task; every task the call starts copies it (asyncio copies
the context at task creation), so every line logged on the call's behalf carries it, whichever module logs it. A
traced call's JSON lines also carry its ``trace_id`` and ``span_id`` (the call's root span;
:data:`bridge.runtime.tracecontext.CURRENT`), so that a log line opens the call's trace.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Literal

from bridge.runtime import tracecontext

CALL_ID: ContextVar[str | None] = ContextVar("callbridge_call_id", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LogFormat = Literal["text", "json"]
MAX_MESSAGE_CHARS = 4000  # a message (escaped) longer than this is cut, with a marker saying how much was
TRACEBACK_INDENT = "    "
# C0 controls, DEL, C1 controls and Unicode's line and paragraph separators: each as an escape, never itself
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROLS = [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]
_ESCAPES = {c: _NAMED.get(chr(c), f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _CONTROLS}


def safe_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    r"""``text`` on one line: control characters escaped (``\n``, ``\r``, ``\t``, ``\xNN``, ``\u2028``), and cut
    after ``limit`` characters with a marker naming how many were cut."""
    escaped = text.translate(_ESCAPES)
    if len(escaped) > limit:
        return f"{escaped[:limit]}... [{len(escaped) - limit} chars cut]"
    return escaped


class TextFormatter(logging.Formatter):
    """:data:`TEXT_FORMAT` with the message made :func:`safe_text`, and a traceback's lines indented."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = safe_text(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    """Every line of ``text`` indented (a traceback's, whose exception message may quote data): none can pass for a
    line of its own."""
    return "\n".join(TRACEBACK_INDENT + line.translate(_ESCAPES) for line in text.splitlines())


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
            "message": safe_text(record.getMessage()),
        }
        trace = tracecontext.CURRENT.get()
        if trace is not None:
            line |= trace.ids()  # trace_id, span_id: a traced (and sampled) call's
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(log_format: LogFormat, worker: str) -> None:
    """Every handler of the root logger writes ``log_format`` from now on."""
    formatter: logging.Formatter = JsonFormatter(worker) if log_format == "json" else TextFormatter()
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
