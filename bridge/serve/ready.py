"""A worker's readiness, on a channel of its own, and what its process prints, forwarded to the log.

The pool gives each worker the write end of a pipe (``--ready-fd``, inherited through ``pass_fds``); the worker
writes one JSON object on it once its SIP endpoint listens (:func:`send_ready`) and closes it. Native libraries
write to stdout as they please (pjlib before its log settings apply, more of it at higher ``pjsua_log_level``), so
stdout is never parsed: :func:`forward_output` logs each of its lines. A report that does not parse, or a channel
that closes without one, is a reason the pool names when it restarts the worker (:func:`parse_ready`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass

READY_REPORT_MAX = 4096  # bytes: a report is a few dozen; anything longer is not one
OUTPUT_LINE_MAX = 2000  # characters of one forwarded stdout line (the rest is cut, and counted)
OUTPUT_STREAM_LIMIT = 64 * 1024  # a longer stdout line is dropped whole, with a note

output_log = logging.getLogger("bridge.serve.output")


@dataclass(frozen=True, slots=True)
class ReadyReport:
    """What a worker reports when it is ready: its SIP port, its call cap and how it is scheduled."""

    sip_port: int
    max_calls: int
    scheduling: str

    def to_json(self, index: int) -> str:
        return json.dumps(
            {"worker": index, "sip_port": self.sip_port, "max_calls": self.max_calls, "scheduling": self.scheduling}
        )


def parse_ready(data: bytes) -> ReadyReport:
    """The report a worker wrote on its ready channel; :class:`ValueError` saying what is wrong with it."""
    shown = data[:200]
    if len(data) > READY_REPORT_MAX:
        raise ValueError(f"its ready report is over {READY_REPORT_MAX} bytes: {shown!r}...")
    try:
        info = json.loads(data)
    except ValueError:  # not UTF-8, or not JSON
        raise ValueError(f"its ready report is not JSON: {shown!r}") from None
    if not isinstance(info, dict):
        raise ValueError(f"its ready report is not a JSON object: {shown!r}")
    port, cap, scheduling = info.get("sip_port"), info.get("max_calls", 0), info.get("scheduling", "")
    if type(port) is not int or not 0 < port < 65536:
        raise ValueError(f"its ready report has no SIP port (sip_port: {port!r})")
    if type(cap) is not int or cap < 0:
        raise ValueError(f"its ready report has no call cap (max_calls: {cap!r})")
    if not isinstance(scheduling, str):
        raise ValueError(f"its ready report's scheduling is not text: {scheduling!r}")
    return ReadyReport(port, cap, scheduling)


async def read_report(fd: int) -> bytes:
    """What arrives on the read end ``fd`` of a ready channel up to its first newline or its end (the writer closed
    it, or died), at most :data:`READY_REPORT_MAX` + 1 bytes. Takes ``fd`` over and closes it."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READY_REPORT_MAX + 1)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    data = b""
    try:
        while len(data) <= READY_REPORT_MAX and b"\n" not in data:
            chunk = await reader.read(READY_REPORT_MAX + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        transport.close()
    return data.partition(b"\n")[0]


def send_ready(fd: int, report: ReadyReport, index: int) -> None:
    """The worker's side: write the report on the channel ``fd`` and close it."""
    payload = (report.to_json(index) + "\n").encode()
    try:
        while payload:
            payload = payload[os.write(fd, payload) :]
    finally:
        os.close(fd)


async def forward_output(stream: asyncio.StreamReader, index: int) -> None:
    """Log every line worker ``index``'s process writes on ``stream`` (its stdout) until it closes."""
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # over the stream's limit: asyncio drops the line
            output_log.info("worker %d: [a line over %d bytes, not logged]", index, OUTPUT_STREAM_LIMIT)
            continue
        if not line:
            return
        text = line.decode(errors="replace").rstrip()
        if len(text) > OUTPUT_LINE_MAX:
            text = f"{text[:OUTPUT_LINE_MAX]}... [{len(text) - OUTPUT_LINE_MAX} more chars]"
        if text:
            output_log.info("worker %d: %s", index, text)
