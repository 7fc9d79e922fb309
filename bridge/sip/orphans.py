"""BYE for calls whose worker died: the caller hears the call end instead of holding a silent line.

A worker killed mid-call (OOM, SIGKILL, a crash in native code) takes its pjsua2 dialogs with it and cannot hang
up. The caller would keep a dead line until its RTP timeout or session timer fires, if it has either. So each
call's dialog (Call-ID, both tags, the caller's Contact, the route set; :class:`bridge.sip.sipmsg.Dialog`) is kept
in its Redis hash once the caller's ACK confirms it, sealed (bridge/store/dialogseal.py), and whoever finds the
call orphaned (the restarted worker, or another worker's reaper) opens it and sends the caller an in-dialog BYE
built from it (RFC 3261 §15.1.1). The caller answers 200 (or 481 if the dialog is gone already); no answer is
awaited, and the request is sent twice over UDP in case one datagram is lost. No pjsua2 here: a plain socket, so
it works before the new endpoint is up.
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

from bridge.sip.sipmsg import Dialog, Transport, build_bye

_LOG = logging.getLogger("bridge.sip")
UDP_COPIES = 2  # the same request (same branch) twice: a retransmission as far as the caller is concerned


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
            for _ in range(UDP_COPIES):
                sock.send(request)
                await asyncio.sleep(0.05)
        return True
    except (OSError, TimeoutError) as exc:
        _LOG.warning("BYE for orphaned call %s to %s failed: %s", dialog.call_id, destination, exc)
        return False


async def end_orphans(dialogs_json: Iterable[str], local_host: str | None = None) -> int:
    """BYE for every dialog (JSON text, as opened from the call's Redis hash), sent from ``local_host`` (None: the
    address the kernel picks); returns how many were sent."""
    sent = 0
    for text in dialogs_json:
        try:
            dialog = Dialog.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError):
            _LOG.warning("unusable stored dialog (%d chars): no BYE sent", len(text))
            continue
        if await send_bye(dialog, local_host=local_host):
            sent += 1
            _LOG.warning("call %s: its worker died; sent the caller a BYE", dialog.call_id)
    return sent
