"""An impairment relay between a caller and the side it calls: a small userspace stand-in for ``tc netem``.

The caller calls the relay's SIP address (UDP); the relay forwards every request to its one ``target`` (a
bridge worker, a listening softphone) under a Via of its own and every response back the way it came, and
rewrites the SDP of the INVITE's offer and of the answer so that each call's media runs through two sockets of
its own (:class:`MediaPair`): the caller sends its RTP to socket ``a``, the callee to socket ``b``, each side
sees the other's RTP come from the address the SDP named. In-dialog requests (ACK of a 200, BYE) go from Contact
to Contact, past the relay: only the INVITE's offer and answer need it.

Each direction runs through a :class:`~bridge.devkit.netem.Line` (``uplink``: caller to callee, ``downlink``:
back): loss at random and in bursts, delay, jitter, reordering, all seeded. RTCP (payload types 200-204) is
forwarded as it comes, unimpaired. The relay counts what it did (:class:`~bridge.devkit.netem.LineStats`),
including how many packets it delivered behind one that came in after them. Its sockets (SIP, each call's two)
take ports of ``CALLBRIDGE_PORT_RANGE`` when that is set (``bridge.devkit.ports.listen_port``).

::

    async with RtpRelay(("127.0.0.1", worker_port), uplink=Impairment(loss=0.03), downlink=...) as relay:
        ... call sip:4000@127.0.0.1:{relay.sip_port} ...
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.devkit.netem import Impairment, Line
from bridge.devkit.ports import listen_port
from bridge.runtime.service import Service

_LOG = logging.getLogger("bridge.devkit.rtprelay")
Address = tuple[str, int]
BRANCH_PREFIX = "z9hG4bKnetem"
_RTCP_TYPES = range(200, 205)  # SR, RR, SDES, BYE, APP: the second byte of an RTCP packet


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport (not a subclass here)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.on_datagram(data, addr)

    def send(self, data: bytes, addr: Address) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class _Way:
    """One direction of one call's media: its line, where it delivers, and the order it delivered in."""

    line: Line
    rtp_to: Address | None = None
    rtcp_to: Address | None = None
    arrived: int = 0
    latest_delivered: int = -1


@dataclass
class MediaPair:
    """One call's media through the relay: socket ``a`` faces the caller, ``b`` the callee."""

    up: _Way
    down: _Way
    a: _Socket = field(init=False)
    b: _Socket = field(init=False)

    async def open(self, host: str) -> MediaPair:
        loop = asyncio.get_running_loop()
        self.a = _Socket(lambda data, _addr: self._relay(self.up, self.b, data))
        self.b = _Socket(lambda data, _addr: self._relay(self.down, self.a, data))
        await loop.create_datagram_endpoint(lambda: self.a, local_addr=(host, listen_port()))
        await loop.create_datagram_endpoint(lambda: self.b, local_addr=(host, listen_port()))
        return self

    def caller_media(self, rtp: Address, rtcp: Address) -> None:
        self.down.rtp_to, self.down.rtcp_to = rtp, rtcp

    def callee_media(self, rtp: Address, rtcp: Address) -> None:
        self.up.rtp_to, self.up.rtcp_to = rtp, rtcp

    def _relay(self, way: _Way, out: _Socket, data: bytes) -> None:
        if len(data) >= 2 and data[1] in _RTCP_TYPES:
            if way.rtcp_to is not None:
                out.send(data, way.rtcp_to)
            return
        if way.rtp_to is None:  # the far side's address is not known yet (no answer)
            return
        index = way.arrived
        way.arrived += 1
        delay = way.line.fate()
        if delay is None:
            return
        if delay <= 0:
            self._deliver(way, out, data, index)
        else:
            asyncio.get_running_loop().call_later(delay, self._deliver, way, out, data, index)

    @staticmethod
    def _deliver(way: _Way, out: _Socket, data: bytes, index: int) -> None:
        stats = way.line.stats
        stats.delivered += 1
        if index < way.latest_delivered:
            stats.reordered += 1
        way.latest_delivered = max(way.latest_delivered, index)
        if way.rtp_to is not None:
            out.send(data, way.rtp_to)

    def close(self) -> None:
        self.a.close()
        self.b.close()


class RtpRelay(Service):
    """Relays SIP (UDP) to ``target`` and every call's RTP through the impairments of each direction."""

    def __init__(
        self,
        target: Address,
        uplink: Impairment | None = None,
        downlink: Impairment | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.target = target
        self.host = host
        self._port = port
        # One line per direction for every call through the relay: a run's fates follow from its seed.
        self.uplink = Line(uplink or Impairment())
        self.downlink = Line(downlink or Impairment())
        self.pairs: dict[str, MediaPair] = {}  # by Call-ID
        self._sip: _Socket | None = None
        self._origins: dict[str, Address] = {}  # our branch -> where the request came from

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sip = self._sip = _Socket(self._on_sip)
        await loop.create_datagram_endpoint(lambda: sip, local_addr=(self.host, self._port or listen_port()))

    @property
    def sip_port(self) -> int:
        assert self._sip is not None, "RtpRelay not started"
        return self._sip.port

    async def new_pair(self) -> MediaPair:
        """Sockets for one call's media; :meth:`MediaPair.caller_media` and ``callee_media`` say where to."""
        return await MediaPair(_Way(self.uplink), _Way(self.downlink)).open(self.host)

    async def close(self) -> None:
        for pair in self.pairs.values():
            pair.close()
        self.pairs.clear()
        if self._sip is not None:
            self._sip.close()

    # -- SIP ------------------------------------------------------------------------------------------------

    def _on_sip(self, data: bytes, addr: Address) -> None:
        text = data.decode("latin-1")
        if not text.strip():
            return  # a keep-alive
        task = asyncio.get_running_loop().create_task(self._forward(text, addr))
        task.add_done_callback(_log_failure)

    async def _forward(self, text: str, addr: Address) -> None:
        head, _, body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        call_id = _header(lines, "call-id", "i")
        sdp = "application/sdp" in _header(lines, "content-type", "c").lower() and "m=audio" in body
        assert self._sip is not None
        if lines[0].startswith("SIP/2.0"):
            branch, lines = _pop_our_via(lines)
            origin = self._origins.get(branch)
            if origin is None:
                return  # not a response to anything we sent
            pair = self.pairs.get(call_id)
            if sdp and pair is not None:
                body, rtp, rtcp = rewrite_sdp(body, self.host, pair.a.port)
                pair.callee_media(rtp, rtcp)
            self._sip.send(_message(lines, body), origin)
            return
        branch = _our_branch(lines)
        self._origins[branch] = addr
        lines.insert(1, f"Via: SIP/2.0/UDP {self.host}:{self.sip_port};rport;branch={branch}")
        if sdp and lines[0].startswith("INVITE "):
            pair = self.pairs.get(call_id)
            if pair is None:
                pair = self.pairs[call_id] = await self.new_pair()
            body, rtp, rtcp = rewrite_sdp(body, self.host, pair.b.port)
            pair.caller_media(rtp, rtcp)
        self._sip.send(_message(lines, body), self.target)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _LOG.error("relaying a SIP message failed", exc_info=task.exception())


def _header(lines: list[str], name: str, compact: str) -> str:
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in (name, compact):
            return value.strip()
    return ""


def _our_branch(lines: list[str]) -> str:
    """The branch of our Via for a request: derived from the sender's top branch, so that a retransmission, the
    CANCEL of an INVITE and the ACK of its failure get the same one (RFC 3261 §16.11, stateless proxies)."""
    top = _header(lines, "via", "v")
    match = re.search(r";\s*branch=([^;,\s]+)", top)
    seed = match.group(1) if match else top
    return BRANCH_PREFIX + hashlib.sha1(seed.encode()).hexdigest()[:16]


def _pop_our_via(lines: list[str]) -> tuple[str, list[str]]:
    """A response's top Via, if it is ours (its branch), and the lines without it."""
    for i, line in enumerate(lines[1:], 1):
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("via", "v"):
            first, comma, rest = value.partition(",")
            match = re.search(r";\s*branch=([^;,\s]+)", first)
            branch = match.group(1) if match else ""
            if not branch.startswith(BRANCH_PREFIX):
                return "", lines
            kept = lines[:i] + ([f"{key}:{rest}"] if comma else []) + lines[i + 1 :]
            return branch, kept
    return "", lines


def _message(lines: list[str], body: str) -> bytes:
    """The message with its Content-Length set to the body it now has."""
    out = []
    for line in lines:
        key = line.partition(":")[0].strip().lower()
        out.append(f"Content-Length: {len(body.encode('latin-1'))}" if key in ("content-length", "l") else line)
    return ("\r\n".join(out) + "\r\n\r\n" + body).encode("latin-1")


def rewrite_sdp(body: str, host: str, port: int) -> tuple[str, Address, Address]:
    """The SDP with its audio at ``host:port`` (``c=``, ``m=audio``, ``a=rtcp``: RTCP to the same socket), and the
    RTP and RTCP addresses it named."""
    newline = "\r\n" if "\r\n" in body else "\n"
    lines = body.split(newline)
    media_host, media_port, rtcp = "", 0, None
    out = []
    for line in lines:
        if line.startswith("c=IN IP4 "):
            media_host = line.split()[2]
            line = f"c=IN IP4 {host}"
        elif line.startswith("m=audio "):
            parts = line.split(" ")
            media_port = int(parts[1])
            parts[1] = str(port)
            line = " ".join(parts)
        elif line.startswith("a=rtcp:"):
            parts = line[len("a=rtcp:") :].split()
            rtcp = (parts[3] if len(parts) >= 4 else "", int(parts[0]))
            line = f"a=rtcp:{port} IN IP4 {host}"
        out.append(line)
    rtcp_addr = (rtcp[0] or media_host, rtcp[1]) if rtcp else (media_host, media_port + 1)
    return newline.join(out), (media_host, media_port), rtcp_addr
