"""BYE for calls whose worker died: the caller hears the call end instead of holding a silent line.

A worker killed mid-call (OOM, SIGKILL, a crash in native code) takes its pjsua2 dialogs with it and cannot hang
up. The caller would keep a dead line until its RTP timeout or session timer fires, if it has either. So each
call's dialog (Call-ID, both tags, the caller's Contact, the route set; :class:`bridge.sip.sipmsg.Dialog`) is kept
in its Redis hash once the caller's ACK confirms it, sealed (bridge/store/dialogseal.py), and whoever finds the
call orphaned (the restarted worker, or another worker's reaper) opens it and sends the caller an in-dialog BYE
built from it (RFC 3261 §15.1.1). The caller answers 200 (or 481 if the dialog is gone already). Over UDP the BYE
is a non-INVITE client transaction (§17.1.2.2): sent again after T1 (0.5 s), doubling up to T2 (4 s), until a final
answer with its branch comes back or ``UDP_ANSWER_WITHIN_S`` has passed, so a lost datagram (the caller's or its
answer) costs half a second, not the caller's hang-up; the dialogs of one dead worker are sent all at once. No
pjsua2 here: a plain socket, so it works before the new endpoint is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
import time
from collections.abc import Iterable

from bridge.sip.sipmsg import Dialog, Transport, build_bye, response_status

_LOG = logging.getLogger("bridge.sip")
T1_S, T2_S = 0.5, 4.0  # RFC 3261's round-trip estimate and its cap on a non-INVITE retransmission interval
UDP_ANSWER_WITHIN_S = 2.0  # sent at 0, 0.5 and 1.5 s at most: a dead worker's restart waits this long at most


def _cseq() -> int:
    """Above any CSeq pjsip chose for the dialog (it starts below 2^16 and we send few requests): seconds since
    the epoch, which stays below 2^31 (§8.1.1.5) until 2038."""
    return int(time.time()) % (2**31)


async def send_bye(
    dialog: Dialog, *, local_host: str | None = None, user_agent: str = "", timeout_s: float = 2.0
) -> bool:
    """Send one BYE for ``dialog``; False if it could not be sent (no usable destination, connect refused).

    ``local_host``: the worker's own SIP address, sent from: a front relays a request from the callee's side of a
    dialog only when it comes from one of its workers (bridge/serve/kamailio/kamailio.cfg, route[WITHINDLG])."""
    destination = dialog.destination()
    if destination is None:
        return False
    branch = "z9hG4bK" + secrets.token_hex(8)
    try:
        if dialog.transport is Transport.TCP:
            local = (local_host, 0) if local_host else None
            opening = asyncio.open_connection(*destination, local_addr=local)
            reader, writer = await asyncio.wait_for(opening, timeout_s)
            host, port = writer.get_extra_info("sockname")[:2]
            writer.write(build_bye(dialog, f"{host}:{port}", branch, _cseq(), user_agent))
            await writer.drain()
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(reader.read(1024), timeout_s)  # the answer, so the caller sees a clean close
            writer.close()
            return True
        family = socket.AF_INET6 if ":" in destination[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            if local_host:
                sock.bind((local_host, 0))
            sock.connect(destination)  # picks the local address the caller can answer to
            host, port = sock.getsockname()[:2]
            request = build_bye(dialog, f"{host}:{port}", branch, _cseq(), user_agent)
            status = await _udp_transaction(sock, request, branch, UDP_ANSWER_WITHIN_S)
        if status is None:
            _LOG.warning("call %s: no answer to its BYE within %g s", dialog.call_id, UDP_ANSWER_WITHIN_S)
        return True
    except (OSError, TimeoutError) as exc:
        _LOG.warning("BYE for orphaned call %s to %s failed: %s", dialog.call_id, destination, exc)
        return False


def _final_status(data: bytes, branch: str) -> int | None:
    """The status of a final response to our request (its top Via carries ``branch``); None for anything else."""
    status = response_status(data)
    if status is None or status < 200 or f"branch={branch}".encode() not in data.partition(b"\r\n")[2]:
        return None
    return status


async def _udp_transaction(sock: socket.socket, request: bytes, branch: str, within: float) -> int | None:
    """Send ``request`` on the connected, non-blocking ``sock`` and again after T1, 2*T1... (at most T2 apart) until
    a final response with ``branch`` comes back (its status) or ``within`` s have passed (None). A refused port
    (ICMP) ends it too: nobody is there to hear the BYE."""
    loop = asyncio.get_running_loop()
    deadline, interval = loop.time() + within, T1_S
    while True:
        sock.send(request)
        resend_at = min(loop.time() + interval, deadline)
        while (left := resend_at - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), left)
            except TimeoutError:
                break
            except ConnectionRefusedError:
                return None
            status = _final_status(data, branch)
            if status is not None:
                return status
        if loop.time() >= deadline:
            return None
        interval = min(2 * interval, T2_S)


async def end_orphans(dialogs_json: Iterable[str], local_host: str | None = None) -> int:
    """BYE for every dialog (JSON text, as opened from the call's Redis hash), sent from ``local_host`` (None: the
    address the kernel picks), all at once; returns how many were sent."""
    dialogs: list[Dialog] = []
    for text in dialogs_json:
        try:
            dialogs.append(Dialog.from_json(json.loads(text)))
        except (ValueError, KeyError, TypeError, AttributeError):
            _LOG.warning("unusable stored dialog (%d chars): no BYE sent", len(text))
    sent = await asyncio.gather(*(send_bye(d, local_host=local_host) for d in dialogs))
    for dialog, ok in zip(dialogs, sent, strict=True):
        if ok:
            _LOG.warning("call %s: its worker died; sent the caller a BYE", dialog.call_id)
    return sum(sent)
