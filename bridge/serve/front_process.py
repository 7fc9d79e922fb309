"""Kamailio's process as ``serve`` runs it: its environment, its process group ended whole, its log relayed (one
line per message, peer data escaped, cut and its numbers masked), and the SIP probe that says it answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.privacy.masking import mask_sip_numbers
from bridge.runtime.logs import safe_text
from bridge.sip.sipmsg import response_status

log = logging.getLogger("bridge.serve.front")

FRONT_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")  # all of serve's environment Kamailio gets


def front_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Kamailio's environment: the locale, the time zone, ``PATH`` and ``TMPDIR`` (:data:`FRONT_ENV`), nothing
    else of serve's: no setting, and no tool secret (a plan's ``env:`` header, which only the workers read)."""
    return {name: environ[name] for name in FRONT_ENV if name in environ}


# -- a SIP health check ---------------------------------------------------------------------------------------------


async def options_status(host: str, port: int, timeout_s: float = 1.0, local_host: str = "") -> int | None:
    """Send one OPTIONS over UDP to ``host:port`` (from ``local_host``, if given); the final status code, or None if
    nothing answered in time."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        if local_host:
            sock.bind((local_host, 0))
        sock.connect((host, port))
        local_host, local_port = sock.getsockname()[:2]
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        via = f"[{local_host}]:{local_port}" if ":" in local_host else f"{local_host}:{local_port}"
        request = (
            f"OPTIONS sip:{target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {via};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:health@callbridge.invalid>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{target}>\r\n"
            f"Call-ID: {secrets.token_hex(12)}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        deadline = time.monotonic() + timeout_s
        try:
            sock.send(request)
            while (left := deadline - time.monotonic()) > 0:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), left)
                status = response_status(data)
                if status is not None and status >= 200:
                    return status
        except (TimeoutError, OSError):
            return None
    return None


# -- the process group -----------------------------------------------------------------------------------------------


def group_members(pgid: int) -> list[int]:
    """The live processes (zombies aside) of process group ``pgid``, from /proc; [] where /proc is not there."""
    members = []
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text(encoding="ascii", errors="replace")
            except OSError:
                continue  # gone meanwhile
            fields = stat.rpartition(")")[2].split()  # after "pid (comm)": state ppid pgrp ...
            if len(fields) > 2 and fields[0] != "Z" and fields[2] == str(pgid):
                members.append(int(entry.name))
    return members


async def end_group(pgid: int, within_s: float = 10.0) -> list[int]:
    """SIGKILL what is left of process group ``pgid`` (Kamailio's children outlive a killed main process and keep
    its sockets) and wait until none of it is left; returns the pids that were ended."""
    left = group_members(pgid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return left
        await asyncio.sleep(0.05)
    log.error("front: processes %s of the old Kamailio did not end within %.0f s", group_members(pgid), within_s)
    return left


# -- Kamailio's log ---------------------------------------------------------------------------------------------

# Kamailio writes one JSON object a line (its "json" log engine; M: the message without its trailing newline), so a
# message quoting a peer's bytes (a header without a colon, a folded Call-ID) has its newlines escaped; serve reads
# it and writes each line in Kamailio's own text format, the message escaped again, cut and its numbers masked.
LOG_ENGINE = "--log-engine=json:M"
LOG_LINE_CHARS = 400  # a message of Kamailio's (a bad header it quotes) is cut here, with a marker
LOG_READ_LIMIT = 1 << 16  # Kamailio's own cap of a log message is 32 KiB; a longer line is skipped, and said so
LOG_VISIBLE_DIGITS = 4  # a number in a quoted header keeps its last digits, as a refused caller's does at a worker


def kamailio_log_line(raw: bytes) -> str:
    """One line of Kamailio's output -> the line serve writes: `` IDX(PID) LEVEL: <module> [file:line]: function():
    message`` (Kamailio's text format) with the message :func:`~bridge.runtime.logs.safe_text`, cut at
    :data:`LOG_LINE_CHARS` and its numbers masked; any other line (its start-up banner) the same way as a whole."""
    text = raw.decode("utf-8", "replace").rstrip("\r\n")
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "message" not in record:
        return safe_text(mask_sip_numbers(text, LOG_VISIBLE_DIGITS), LOG_LINE_CHARS)
    idx, pid, level, module, file, line, function = (
        safe_text(str(record.get(key, "")), 64) for key in ("idx", "pid", "level", "module", "file", "line", "function")
    )
    head = f" {idx}({pid}) {level}: <{module}> [{file}:{line}]: {function}(): "
    return head + safe_text(mask_sip_numbers(str(record["message"]), LOG_VISIBLE_DIGITS), LOG_LINE_CHARS)


async def relay_log(stream: asyncio.StreamReader, out: Any) -> None:
    """Every line of Kamailio's output (``stream``) to ``out`` (a binary file, flushed a line at a time) as
    :func:`kamailio_log_line` writes it, until Kamailio closes it."""
    while True:
        try:
            raw = await stream.readuntil(b"\n")
        except asyncio.IncompleteReadError as end:
            raw = end.partial
            if not raw:
                return
        except asyncio.LimitOverrunError as over:
            await stream.readexactly(over.consumed)  # the start of a line longer than any Kamailio writes
            raw = f"[{over.consumed} bytes of a longer line of Kamailio's skipped]".encode()
        out.write((kamailio_log_line(raw) + "\n").encode())
        out.flush()
