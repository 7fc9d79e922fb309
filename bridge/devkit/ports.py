"""Free loopback ports for the development harness and the tests: one port, or a block of consecutive ones.

Without ``CALLBRIDGE_PORT_RANGE`` the kernel picks (its ephemeral range); with it, ports come from that range, so
that processes given disjoint ranges (``./dev test``'s pytest workers) never take each other's. Everything the demo
and the benches listen on is picked here: SIP ports (:func:`free_port_block`), a server's one port
(:func:`listen_port`: Redis, the emulator, a tool server), the RTP ports pjsua is given (:func:`pool_rtp` for a
worker pool, :func:`rtp_block` for a softphone) and the softphone's own (:func:`softphone_port_args`).
"""

from __future__ import annotations

import os
import random
import socket
from typing import Final, TypedDict

PORT_RANGE_ENV = "CALLBRIDGE_PORT_RANGE"  # LOW-HIGH: pick free ports from this range (the test suite's workers)
# In the range, each worker of a pool gets this many RTP ports: RTP and RTCP of the wheel's 4 calls a process, twice
# over (a worker draws each call's pair at random within its ports: bridge/sip/rtpguard.py)
RTP_PORTS_PER_WORKER: Final = 16
_cursor: int | None = None  # where the next pick in the range starts (per process)


def free_port() -> int:
    if port_range() is not None:
        return free_port_block(1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listen_port() -> int:
    """The port for a server that binds it at once: 0 without ``CALLBRIDGE_PORT_RANGE`` (the kernel picks one, free
    by construction), a free port of the range with it."""
    return free_port_block(1) if port_range() is not None else 0


def rtp_block(count: int) -> int:
    """The first of ``count`` free ports of the range for pjsua's RTP, an even one (RTP even, RTCP odd: RFC 3550
    §11); 0 without ``CALLBRIDGE_PORT_RANGE`` (pjsua picks free ports)."""
    if port_range() is None:
        return 0
    base = free_port_block(count + 1)
    return base + base % 2


class PoolRtp(TypedDict):
    """A worker pool's RTP ports, as the ``Settings`` fields that hold them."""

    rtp_port: int
    rtp_ports_per_worker: int


def pool_rtp(workers: int) -> PoolRtp:
    """A worker pool's RTP ports as ``Settings`` fields: ``rtp_port`` 0 without ``CALLBRIDGE_PORT_RANGE`` (pjsua
    picks), with it a block of the range, :data:`RTP_PORTS_PER_WORKER` a worker (and the pair after the last: pjsua
    may take it)."""
    return PoolRtp(rtp_port=rtp_block(workers * RTP_PORTS_PER_WORKER + 2), rtp_ports_per_worker=RTP_PORTS_PER_WORKER)


def softphone_port_args() -> list[str]:
    """``callbridge call`` flags that keep the softphone's SIP port and RTP pair in ``CALLBRIDGE_PORT_RANGE``; none
    without it (the softphone takes any)."""
    if port_range() is None:
        return []
    return ["--local-port", str(free_port_block(1)), "--rtp-port", str(rtp_block(2))]


def port_range() -> tuple[int, int] | None:
    """``CALLBRIDGE_PORT_RANGE`` as (low, high), or None: then the kernel picks (its ephemeral range)."""
    text = os.environ.get(PORT_RANGE_ENV, "").strip()
    if not text:
        return None
    low, _, high = text.partition("-")
    try:
        first, last = int(low), int(high)
    except ValueError:
        first = last = 0
    if not 1024 <= first < last <= 65535:
        raise ValueError(f"{PORT_RANGE_ENV}={text!r}: expected LOW-HIGH within 1024-65535, e.g. 20000-23999")
    return first, last


def free_port_block(count: int) -> int:
    """A first port such that ``count`` consecutive ports are free for UDP and TCP on 127.0.0.1.

    With ``CALLBRIDGE_PORT_RANGE`` the blocks come from that range, one after another from a random start: a process
    never gets a port it was just given (and has not bound yet) again, and processes given disjoint ranges below
    the kernel's ephemeral range (``./dev test``'s workers) never get each other's, nor a client socket's."""
    if (span := port_range()) is not None:
        return _range_block(count, *span)
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count >= 65535:
            continue
        if all(_port_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no block of {count} free ports")


def _range_block(count: int, first: int, last: int) -> int:
    global _cursor
    size = last - first + 1
    if _cursor is None or not first <= _cursor <= last:
        _cursor = random.randrange(first, last + 1)
    base = _cursor
    for _ in range(size):
        if base + count - 1 > last:
            base = first
        if all(_port_free(base + i) for i in range(count)):
            _cursor = base + count if base + count <= last else first
            return base
        base += 1
    raise RuntimeError(f"no block of {count} free ports in {PORT_RANGE_ENV}={first}-{last}")


def _port_free(port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind(("127.0.0.1", port))
            tcp.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False


def can_bind(host: str) -> bool:
    """A UDP socket can bind ``host`` here (a loopback alias such as 127.0.0.2 the tests use as a second machine)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
        return True
    except OSError:
        return False
