"""Is a worker whose heartbeat expired dead, or only cut off from Redis? Ask the worker itself, over SIP.

A worker's id is its SIP address, ``host:port`` (``bridge.serve.worker``). A worker cut off from Redis still carries
its calls and still answers SIP; a dead one does not. :func:`answers_sip` sends an out-of-dialog ``OPTIONS`` over
plain UDP (no pjsua2: the reaper runs in any process) and waits up to ``timeout_s`` for any answer: ``200``, ``403``,
``503``, whatever the code, the worker is alive. No answer in time, an ICMP port unreachable (a connected UDP socket
raises ``ConnectionRefusedError``), or an id that is not a SIP address: dead, as far as the probe can tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket

PROBE_TIMEOUT_S = 1.0  # how long a worker has to answer
RESEND_S = 0.25  # the OPTIONS again this often within the timeout (a lost datagram is not a dead worker)


def sip_address(worker: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` or ``v6:port``) -> (host, port); None for an id that is not a SIP address
    (pure)."""
    host, sep, port = worker.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def options_request(host: str, port: int, local: tuple[str, int], call_id: str) -> bytes:
    """An out-of-dialog OPTIONS to ``host:port`` sent from ``local`` (pure)."""

    def hostport(h: str, p: int) -> str:
        return f"[{h}]:{p}" if ":" in h else f"{h}:{p}"

    target = hostport(host, port)
    lines = [
        f"OPTIONS sip:{target} SIP/2.0",
        f"Via: SIP/2.0/UDP {hostport(*local)};branch=z9hG4bK{secrets.token_hex(8)};rport",
        "Max-Forwards: 70",
        f"From: <sip:liveness@callbridge.invalid>;tag={secrets.token_hex(4)}",
        f"To: <sip:{target}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def is_answer(data: bytes, call_id: str) -> bool:
    """A SIP response (any status) to the request with ``call_id`` (pure)."""
    head, _, _ = data.partition(b"\r\n\r\n")
    return head.startswith(b"SIP/2.0 ") and call_id.encode() in head


async def answers_sip(worker: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True if the worker ``worker`` (its id, ``host:port``) answers an OPTIONS within ``timeout_s``."""
    address = sip_address(worker)
    if address is None:
        return False
    host, port = address
    loop = asyncio.get_running_loop()
    call_id = secrets.token_hex(12)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect((host, port))  # connected: only the worker's datagrams, and its ICMP errors, come back
            request = options_request(host, port, sock.getsockname()[:2], call_id)
            deadline = loop.time() + timeout_s
            while (left := deadline - loop.time()) > 0:
                sock.send(request)  # the same transaction each time: a retransmission to the worker
                with contextlib.suppress(TimeoutError):
                    while True:
                        data = await asyncio.wait_for(loop.sock_recv(sock, 65535), min(left, RESEND_S))
                        if is_answer(data, call_id):
                            return True
    except OSError:  # ConnectionRefusedError: nothing listens there; no route, bad address
        return False
    return False
