"""A SIPp caller's media, both ways, for the bridge tests that call with SIPp.

* :func:`write_rtp_pcap`: the caller's audio as a classic libpcap file of Ethernet/IPv4/UDP/RTP packets (PCMU,
  payload type 0, one 20 ms packet every 20 ms, RFC 3550/3551), which SIPp's ``play_pcap_audio`` sends paced by
  the capture timestamps, to the port the bridge's SDP names.
* :class:`LoopbackCapture`: what arrived at SIPp's ports, captured off the wire with a raw socket (``SOCK_RAW``,
  ``IPPROTO_UDP``: a copy of every UDP datagram the host receives; needs ``CAP_NET_RAW``). SIPp keeps no
  recording of the RTP it receives, so this is how a test hears what the SIPp caller heard: the bridge's ``200
  OK`` (the answer's time and its SDP) and its RTP stream, decoded from G.711 μ-law and laid out by RTP
  timestamp (a lost packet leaves silence where it belonged, never shifts what follows).
"""

from __future__ import annotations

import re
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bridge.audio.g711 import ulaw_decode, ulaw_encode

RATE = 8000
PACKET_SAMPLES = 160  # 20 ms at 8 kHz (RFC 3551 §4.5.14: PCMU's default packetization)
PT_PCMU = 0
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux <asm-generic/socket.h>
SCM_TIMESTAMPNS = SO_TIMESTAMPNS


def raw_capture_allowed() -> bool:
    """True if this process may open a raw socket (root or CAP_NET_RAW)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close()
    except PermissionError:
        return False
    return True


def write_rtp_pcap(path: Path, pcm: NDArray[np.float64], dst_port: int = 6000) -> None:
    """``pcm`` (8 kHz) as PCMU RTP packets in a libpcap file (link type 1, Ethernet), 20 ms apart."""
    samples = np.clip(np.round(pcm), -32768, 32767).astype("<i2")
    samples = np.concatenate([samples, np.zeros(-len(samples) % PACKET_SAMPLES, dtype="<i2")])
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    ssrc = 0x5EED1234
    for n in range(len(samples) // PACKET_SAMPLES):
        payload = ulaw_encode(samples[n * PACKET_SAMPLES : (n + 1) * PACKET_SAMPLES].tobytes())
        rtp = struct.pack("!BBHII", 0x80, (0x80 if n == 0 else 0) | PT_PCMU, n & 0xFFFF, n * PACKET_SAMPLES, ssrc)
        udp = struct.pack("!HHHH", dst_port + 2, dst_port, 8 + len(rtp) + len(payload), 0) + rtp + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n & 0xFFFF, 0, 64, 17, 0, bytes(4), bytes(4))
        frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
        usec = n * 20_000
        out += struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))


@dataclass
class Datagram:
    t: float  # when it arrived (the kernel's receive timestamp, epoch seconds)
    src_port: int
    dst_port: int
    payload: bytes


@dataclass
class Heard:
    """The bridge's RTP as the SIPp caller received it."""

    audio: NDArray[np.float64]  # 8 kHz, from the first packet's RTP timestamp on
    first_packet_s: float  # when the first packet arrived, in seconds after the answer (the 200 OK)
    packets: int
    payload_types: set[int] = field(default_factory=set)


class LoopbackCapture:
    """Every UDP datagram this host receives, with its arrival time, while the context is open."""

    def __init__(self) -> None:
        self.datagrams: list[Datagram] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        # each datagram stamped by the kernel as it arrives: a busy test process reading it late changes nothing
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loopback-capture", daemon=True)

    def __enter__(self) -> LoopbackCapture:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.05)
            if not ready:
                continue
            packet, ancillary, _, _ = self._sock.recvmsg(65535, 64)
            t = time.time()  # the kernel's receive time instead, when it gives one (below)
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(data) >= 16:
                    sec, nsec = struct.unpack_from("@qq", data)
                    t = sec + nsec / 1e9
            ihl = (packet[0] & 0x0F) * 4
            if len(packet) < ihl + 8:
                continue
            src, dst = struct.unpack_from("!HH", packet, ihl)
            self.datagrams.append(Datagram(t, src, dst, packet[ihl + 8 :]))

    def answer(self, sip_port: int) -> tuple[float, int]:
        """(arrival time, the bridge's RTP port from its SDP) of the first ``200 OK`` to an INVITE at ``sip_port``."""
        for d in self.datagrams:
            text = d.payload.decode("latin-1")
            if d.dst_port == sip_port and text.startswith("SIP/2.0 200") and re.search(r"CSeq:\s*\d+ INVITE", text):
                found = re.search(r"^m=audio (\d+) ", text, re.MULTILINE)
                assert found is not None, f"a 200 OK without an audio offer:\n{text}"
                return d.t, int(found.group(1))
        raise AssertionError(f"no 200 OK to the INVITE reached port {sip_port}")

    def heard(self, sip_port: int, media_port: int) -> Heard:
        """The bridge's RTP stream to ``media_port`` (from the port its 200 OK's SDP named), decoded."""
        answered, rtp_port = self.answer(sip_port)
        packets = [d for d in self.datagrams if d.dst_port == media_port and d.src_port == rtp_port]
        assert packets, f"no RTP from port {rtp_port} reached port {media_port}"
        first_ts: int | None = None
        pieces: list[tuple[int, bytes]] = []
        types: set[int] = set()
        last_ts = 0
        for d in packets:
            b = d.payload
            if len(b) < 12 or b[0] >> 6 != 2:
                continue
            pt, ts = b[1] & 0x7F, struct.unpack_from("!I", b, 4)[0]
            types.add(pt)
            if pt != PT_PCMU:
                continue  # a telephone-event or comfort noise is no audio
            header = 12 + 4 * (b[0] & 0x0F)
            first_ts = ts if first_ts is None else first_ts
            offset = (ts - first_ts) & 0xFFFFFFFF
            pieces.append((offset, ulaw_decode(b[header:])))
            last_ts = max(last_ts, offset + (len(b) - header))
        audio = np.zeros(last_ts)
        for offset, pcm in pieces:
            x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
            audio[offset : offset + len(x)] = x
        return Heard(audio, packets[0].t - answered, len(packets), types)
