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
sockets admits only IPv4 datagrams from that address; the kernel drops the rest before pjmedia can read them,
counting them in the socket's drop counter (``SO_MEMINFO``, ``SK_MEMINFO_DROPS``); what a stranger got queued before
the filter (pjsua opens the sockets when the INVITE arrives) is read and dropped right then. A stranger can then neither
reach the model nor latch the call. A caller behind NAT announces a private address it does not send from: then
the filter admits the address its INVITE came from instead (:func:`media_source`), the host that pjmedia latches to
when its first packets arrive. The filter admits any port of that host (some carriers send RTP from another port
than the one they announce).

The filter needs no privilege. The gateway finds a call's sockets in ``/proc/self/fd`` when its INVITE arrives
(:func:`unclaimed_media_sockets`) and keeps a duplicate of each until the call ends, to read the drop count then.
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


def source_filter(ip: str) -> bytes:
    """The BPF program, as ``struct sock_filter[]`` bytes, that keeps IPv4 datagrams from ``ip`` and drops the rest."""
    address = int(ipaddress.IPv4Address(ip))
    program = (
        (BPF_LD_W_ABS, 0, 0, (SKF_NET_OFF + IPV4_SOURCE_OFFSET) & 0xFFFFFFFF),  # A = source address
        (BPF_JEQ_K, 0, 1, address),  # A == ip ? next : skip one
        (BPF_RET_K, 0, 0, 0xFFFFFFFF),  # keep the whole datagram
        (BPF_RET_K, 0, 0, 0),  # drop it
    )
    return b"".join(struct.pack("HBBI", *insn) for insn in program)


def _private(ip: ipaddress.IPv4Address) -> bool:
    return ip.is_private or ip.is_unspecified or ip in ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598 CGN


def media_source(sdp_ip: str | None, signalling_ip: str | None) -> str | None:
    """The one IPv4 address a call's media may come from, or None (no IPv4 address known: no filter).

    The SDP's address, unless it is private or unspecified (RFC 1918, RFC 6598, ``0.0.0.0`` of an old-style hold)
    while the INVITE came from a public address: a caller behind NAT, whose media comes from where its signalling
    does."""
    sdp = _ipv4(sdp_ip)
    signalling = _ipv4(signalling_ip)
    if sdp is not None and (signalling is None or not _private(sdp) or _private(signalling) or sdp == signalling):
        return None if sdp.is_unspecified else str(sdp)
    return str(signalling) if signalling is not None else None


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


@dataclass(slots=True)
class MediaGuard:
    """One call's filter over its sockets (inode -> duplicate): :meth:`lock` to an address (again after a
    re-INVITE), :meth:`dropped` so far, :meth:`close` at the end (returns the final count)."""

    sockets: dict[str, socket.socket] = field(default_factory=dict)
    source: str | None = None
    _final: int = 0

    def lock(self, source: str | None) -> None:
        if source is None or source == self.source:
            return
        program = source_filter(source)
        code = ctypes.create_string_buffer(program, len(program))
        fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(code))  # struct sock_fprog
        first = self.source is None
        for sock in self.sockets.values():
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            except OSError as exc:
                _LOG.warning("media source filter refused: %s", exc)
            else:
                if first:
                    self._discard_queued(sock)
        self.source = source

    def _discard_queued(self, sock: socket.socket) -> None:
        """A filter applies to datagrams as they arrive: those queued between the socket's opening (pjsua opened it
        for the INVITE) and the filter are read here and dropped, before pjmedia reads (and latches to) them. The
        call is not answered yet, so none of them is the caller's media. Counted as dropped."""
        sock.setblocking(False)
        while True:
            try:
                sock.recv(65536)
            except OSError:
                return
            self._final += 1

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


def random_rtp_start(first: int, span: int) -> int:
    """An even port in ``[first, first + span)`` chosen at random (RTP even, RTCP odd: RFC 3550 §11), so that the
    next call's port cannot be guessed from the last one's."""
    return first + secrets.randbelow(max(1, span // 2)) * 2
