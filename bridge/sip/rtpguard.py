"""Media from the caller only: a kernel source filter on each call's RTP and RTCP sockets. No pjsua2 here.

pjmedia 2.15.1 latches a call's RTP to whoever sends it (``stream.c``, ``on_rx_rtp``): before the first packet
from the SDP address arrives, the first packet from *any* source with an acceptable SSRC switches the remote
address at once; afterwards ``PJMEDIA_RTP_NAT_PROBATION_CNT`` (10) consecutive packets from another source do. The
stream hands every packet it does not discard to the decoder, and the UDP transport then sends the call's audio to
the new address. pjsua2 offers no switch against it: ``PJMEDIA_UDP_NO_SRC_ADDR_CHECKING`` is an option of
``pjmedia_transport_udp_attach`` that pjsua never passes (``pjsua_media.c`` creates every media transport with
options 0), no account or NAT setting reaches it, and even with it the stream would still decode the stranger's
packets.

So the bridge filters below pjmedia. Once a call's remote media address is known (the offer's ``c=`` line, or a
re-INVITE's), a classic BPF socket filter (``SO_ATTACH_FILTER``, Linux ``socket(7)``) on the call's RTP and RTCP
sockets admits only IPv4 datagrams from the call's media hosts (:func:`media_sources`); the kernel drops the rest
before pjmedia can read them, counting them in the socket's drop counter (``SO_MEMINFO``, ``SK_MEMINFO_DROPS``); what
a stranger got queued before the filter (pjsua opens the sockets when the INVITE arrives) is read and dropped right
then. A stranger can then neither reach the model nor latch the call. The media hosts are the offer's ``c=`` host and
the host the INVITE came from (symmetric RTP: most softphones and NATs send media from where they signal, whatever
their SDP says); a private or unspecified ``c=`` from a caller who signals from a public address (a phone behind NAT)
is left out. The filter admits any port of those hosts (some carriers send RTP from another port than the one they
announce).

Every media socket of the process has one owner (:class:`MediaClaims`): an incoming call claims the sockets pjsua
opened for its INVITE, a warm transfer's outbound leg those pjsua opened for its INVITE, each until it ends. The
filter needs no privilege. The gateway finds a call's sockets in ``/proc/self/fd`` (:func:`unclaimed_media_sockets`)
and keeps a duplicate of each until the call ends, to read the drop count then.

A caller whose every packet is dropped (an offer naming one host, media from a third) is heard by nobody: the
gateway notices it (:class:`bridge.sip.callermedia.CallerMedia`) and, to name the address the caller sends from,
lets the strangers' datagrams through the RTP socket for a moment cut to their UDP header (:meth:`MediaGuard.sample`):
pjmedia reads them as empty keep-alives (``stream.c`` ignores anything shorter than an RTP header), never decodes or
latches to them, and records their source address, which pjsua2 reports (``MediaTransportInfo.srcRtpName``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import os
import secrets
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

_LOG = logging.getLogger("bridge.sip")

SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>
SO_MEMINFO = 55
SK_MEMINFO_DROPS = 8  # index in the u32 array SO_MEMINFO returns (<linux/sock_diag.h>, SK_MEMINFO_VARS = 9)
SKF_NET_OFF = -0x100000  # <linux/filter.h>: BPF loads relative to the network (IP) header
IPV4_SOURCE_OFFSET = 12  # RFC 791 §3.1: the source address field
# classic BPF opcodes (<linux/bpf_common.h>)
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06


UDP_HEADER_BYTES = 8  # what a sampled stranger's datagram is cut to: its payload is empty (RFC 768)


def source_filter(sources: Sequence[str], stranger_bytes: int = 0) -> bytes:
    """The BPF program, as ``struct sock_filter[]`` bytes, that keeps IPv4 datagrams from any of ``sources`` whole
    and cuts the rest to ``stranger_bytes`` (0: drops them)."""
    addresses = [int(ipaddress.IPv4Address(ip)) for ip in sources]
    count = len(addresses)
    program = [(BPF_LD_W_ABS, 0, 0, (SKF_NET_OFF + IPV4_SOURCE_OFFSET) & 0xFFFFFFFF)]  # A = source address
    # the k-th comparison (1-based) jumps over the rest and over the strangers' return, to "keep" on a match
    program += [(BPF_JEQ_K, count - k + 1, 0, address) for k, address in enumerate(addresses, 1)]
    program += [(BPF_RET_K, 0, 0, stranger_bytes), (BPF_RET_K, 0, 0, 0xFFFFFFFF)]
    return b"".join(struct.pack("HBBI", *insn) for insn in program)


def _private(ip: ipaddress.IPv4Address) -> bool:
    return ip.is_private or ip.is_unspecified or ip in ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598 CGN


def media_sources(sdp_ip: str | None, signalling_ip: str | None) -> tuple[str, ...]:
    """The IPv4 hosts a call's media may come from; empty: none known (no filter).

    The SDP's ``c=`` host and the host the INVITE came from (the caller's, as a trusted front reports it). The SDP's
    host is left out when it is unspecified (``0.0.0.0``, an old-style hold) or private (RFC 1918, RFC 6598) while
    the INVITE came from a public address: a caller behind NAT, whose announced address is not reachable."""
    sdp = _ipv4(sdp_ip)
    signalling = _ipv4(signalling_ip)
    found: list[str] = []
    if sdp is not None and not sdp.is_unspecified and not (_private(sdp) and signalling and not _private(signalling)):
        found.append(str(sdp))
    if signalling is not None and not signalling.is_unspecified and str(signalling) not in found:
        found.append(str(signalling))
    return tuple(found)


def _ipv4(text: str | None) -> ipaddress.IPv4Address | None:
    if not text:
        return None
    try:
        return ipaddress.IPv4Address(text.strip())
    except ValueError:
        return None


def sdp_connection_ip(sdp: str) -> str | None:
    """The audio stream's connection address in an SDP body (RFC 4566 §5.7: the media-level ``c=`` overrides the
    session-level one), or None."""
    session: str | None = None
    audio: str | None = None
    in_media = in_audio = False
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if audio is not None or in_audio:
                break  # the first audio stream is the call's
            in_media, in_audio = True, line.startswith("m=audio ")
        elif line.startswith("c=IN IP4 ") and len(line.split()) > 2:
            value = line.split()[2].split("/")[0]
            if in_audio:
                audio = value
            elif not in_media:
                session = value
    return audio or session


def unclaimed_media_sockets(sip_port: int, claimed: set[str], ports: range | None = None) -> dict[str, socket.socket]:
    """Duplicates of this process's media sockets not in ``claimed`` (socket inodes), by inode: unconnected IPv4
    UDP sockets on another port than SIP's. When an INVITE reaches ``onIncomingCall``, pjsua has just opened its
    call's RTP and RTCP sockets, and every earlier guarded call has claimed its own, so these are the new call's
    (or a refused call's, about to close). pjsua2 cannot name them yet: ``getMedTransportInfo`` fails until the
    SDP is negotiated (the transports are "provisional" until then). ``ports``: the RTP range, when one is set."""
    found: dict[str, socket.socket] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{name}")
            if not link.startswith("socket:") or link in claimed:
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except (OSError, ValueError):
            continue
        if _is_media(sock, sip_port) and (ports is None or sock.getsockname()[1] in ports):
            found[link] = sock
        else:
            sock.close()
    return found


def _is_media(sock: socket.socket, sip_port: int) -> bool:
    try:
        if sock.type != socket.SOCK_DGRAM or sock.family != socket.AF_INET or sock.getsockname()[1] == sip_port:
            return False
    except OSError:
        return False
    try:
        sock.getpeername()
    except OSError:
        return True  # not connected: not a resolver's socket
    return False


class MediaClaims:
    """Which call or transfer leg owns each media socket of the process (socket inode -> owner). Sockets are taken
    when pjsua has just opened them (an INVITE received or sent) and are nobody else's until released."""

    def __init__(self, sip_port: int, ports: range | None = None) -> None:
        self.sip_port = sip_port
        self.ports = ports  # the RTP range, when one is set
        self.owners: dict[str, str] = {}

    def take(self, owner: str) -> dict[str, socket.socket]:
        """Duplicates of the media sockets nobody owns yet, now ``owner``'s (by inode)."""
        found = unclaimed_media_sockets(self.sip_port, set(self.owners), self.ports)
        self.owners.update(dict.fromkeys(found, owner))
        return found

    def release(self, inodes: Iterable[str]) -> None:
        for inode in inodes:
            self.owners.pop(inode, None)


@dataclass(slots=True)
class MediaGuard:
    """One call's filter over its sockets (inode -> duplicate): :meth:`lock` to its media hosts (again after a
    re-INVITE), :meth:`sample` strangers for a moment, :meth:`dropped` so far, :meth:`close` at the end (returns the
    final count). ``seen``: the sources of the datagrams it read and dropped itself (queued before the filter)."""

    sockets: dict[str, socket.socket] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    seen: list[str] = field(default_factory=list)
    _final: int = 0

    def lock(self, sources: tuple[str, ...]) -> None:
        if not sources or sources == self.sources:
            return
        first = not self.sources
        self.sources = sources
        for sock in self.sockets.values():
            if self._attach(sock, source_filter(sources)) and first:
                self._discard_queued(sock)

    def sample(self, port: int) -> bool:
        """Let strangers' datagrams through the socket on ``port`` cut to their UDP header (empty), so that pjmedia
        records their source; :meth:`strict` ends it. False if no socket of the guard has that port."""
        program = source_filter(self.sources, UDP_HEADER_BYTES)
        return any([self._attach(sock, program) for sock in self.sockets.values() if _port(sock) == port])

    def strict(self) -> None:
        """Back to dropping every stranger's datagram (after :meth:`sample`)."""
        for sock in self.sockets.values():
            self._attach(sock, source_filter(self.sources))

    @staticmethod
    def _attach(sock: socket.socket, program: bytes) -> bool:
        code = ctypes.create_string_buffer(program, len(program))
        fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(code))  # struct sock_fprog
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        except OSError as exc:
            _LOG.warning("media source filter refused: %s", exc)
            return False
        return True

    def _discard_queued(self, sock: socket.socket) -> None:
        """A filter applies to datagrams as they arrive: those queued between the socket's opening (pjsua opened it
        for the INVITE) and the filter are read here and dropped, before pjmedia reads (and latches to) them. The
        call is not answered yet, so none of them is the caller's media. Counted as dropped."""
        sock.setblocking(False)
        while True:
            try:
                _data, (host, _port_number) = sock.recvfrom(65536)
            except (OSError, ValueError):
                return
            self._final += 1
            if host not in self.seen and len(self.seen) < 4:
                self.seen.append(host)

    def dropped(self) -> int:
        total = self._final
        for sock in self.sockets.values():
            with contextlib.suppress(OSError):
                total += struct.unpack("9I", sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36))[SK_MEMINFO_DROPS]
        return total

    def close(self) -> int:
        self._final = self.dropped()
        sockets, self.sockets = self.sockets, {}
        for sock in sockets.values():
            sock.close()
        return self._final


def _port(sock: socket.socket) -> int | None:
    try:
        return int(sock.getsockname()[1])
    except OSError:
        return None


def random_rtp_start(first: int, span: int, host: str = "", avoid: int = 0) -> int:
    """An even port in ``[first, first + span)`` chosen at random (RTP even, RTCP odd: RFC 3550 §11), so that the
    next call's port cannot be guessed from the last one's; among those whose pair ``host`` can bind now (a live
    call holds its own: pjsua, handed a held one, logs "Address already in use" and tries the next pair), ``avoid``
    last of them. A random one if none is free."""
    starts = [first + 2 * i for i in range(max(1, span // 2))]
    secrets.SystemRandom().shuffle(starts)
    starts.sort(key=lambda port: port == avoid)  # stable: the shuffled order, with ``avoid`` moved to the end
    return next((port for port in starts if _pair_free(host, port)), starts[0])


def _pair_free(host: str, port: int) -> bool:
    """Can UDP ``port`` and ``port + 1`` be bound on ``host`` ("" any address) right now?"""
    try:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtcp,
        ):
            rtp.bind((host, port))
            rtcp.bind((host, port + 1))
    except OSError:
        return False
    return True
