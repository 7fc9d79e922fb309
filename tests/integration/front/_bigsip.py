"""Large INVITEs as carriers send them (a STIR/SHAKEN ``Identity`` of about 1 KB per PASSporT, P-headers, a long
SDP), over TCP or UDP, with a caller's RTP: what the front's and the workers' size tests need.

:func:`large_invite` builds one INVITE of about the size asked for; :class:`TcpCaller` speaks SIP over one TCP
connection (Content-Length frames each message, RFC 3261 §18.3); :class:`RtpCaller` sends a PCMU tone and keeps
what comes back."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import socket
import struct
import time
from dataclasses import dataclass, field

import numpy as np
from _front import Answer, parse_answer

from bridge.audio.g711 import ulaw_encode

ASSERTED = "+15557654321"  # the caller a trusted trunk asserts (P-Asserted-Identity), not its From
PILOT = "+15551230000"  # the trunk's own number in From


@dataclass
class Call:
    """What one call's requests share."""

    uri: str
    local: str
    lport: int
    transport: str = "TCP"
    call_id: str = field(default_factory=lambda: secrets.token_hex(10))
    tag: str = field(default_factory=lambda: secrets.token_hex(5))
    to_tag: str = ""

    def head(self, method: str, cseq: int, branch: str = "") -> list[str]:
        to = f"<{self.uri}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        return [
            f"{method} {self.uri} SIP/2.0",
            f"Via: SIP/2.0/{self.transport} {self.local}:{self.lport};branch={branch or new_branch()};rport",
            "Max-Forwards: 70",
            f"From: <sip:{PILOT}@carrier.example;user=phone>;tag={self.tag}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{PILOT}@{self.local}:{self.lport};transport={self.transport.lower()}>",
        ]

    def request(self, method: str, cseq: int, extra: list[str] | None = None, body: str = "") -> bytes:
        lines = [*self.head(method, cseq), *(extra or [])]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def passport(size: int = 900) -> str:
    """An ``Identity`` header's value as STIR/SHAKEN signs it (RFC 8224, RFC 8588): a compact JWS and its info."""
    part = base64.urlsafe_b64encode(secrets.token_bytes(size * 3 // 4)).decode().rstrip("=")
    return f"{part[:60]}.{part[60:-86]}.{part[-86:]};info=<https://cert.carrier.example/sti.pem>;alg=ES256;ppt=shaken"


def large_invite(call: Call, rtp_port: int, size: int) -> bytes:
    """An INVITE of ``size`` bytes: what every worker reads (Session-Expires, the asserted caller at the very end of
    the header block, in lower case, the offer's media) plus what none does (``Identity`` headers, P-headers, other
    headers, ICE candidates and SSRC lines of the SDP), grown until the INVITE is ``size`` long."""
    sdp = [
        "v=0",
        f"o=carrier 8123 8123 IN IP4 {call.local}",
        "s=-",
        f"c=IN IP4 {call.local}",
        "t=0 0",
        f"m=audio {rtp_port} RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=ptime:20",
        "a=sendrecv",
    ]
    headers = [
        "Supported: timer",
        "Session-Expires: 1800;refresher=uac",
        "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE",
        "P-Charging-Vector: icid-value=" + secrets.token_hex(24) + ";orig-ioi=carrier.example",
    ]
    late = [f"p-asserted-identity: <sip:{ASSERTED}@carrier.example;user=phone>"]  # header names have no case

    def build() -> bytes:
        body = "\r\n".join(sdp) + "\r\n"
        return call.request("INVITE", 1, [*headers, *late], body)

    n = 0
    while len(build()) < size - 1200:
        n += 1
        if n % 4 == 1 and sum(h.lower().startswith("identity:") for h in headers) < 3:
            headers.append(f"{'Identity' if n < 4 else 'identity'}: {passport()}")
        elif n % 4 == 2:
            sdp.append(f"a=candidate:{n} 1 UDP 2130706431 {call.local} {rtp_port + 2 * n} typ host generation 0")
            sdp.append(f"a=ssrc:{secrets.randbits(31)} cname:{secrets.token_hex(16)}")
        elif n % 4 == 3:
            headers.append(f"P-Carrier-Trace-{n}: " + secrets.token_hex(60))
        else:
            headers.append(f"X-Carrier-Route-{n}: " + secrets.token_hex(60))  # no worker reads it: not a P-header
    while len(build()) < size - 100:
        n += 1
        headers.append(f"P-Carrier-Trace-{n}: " + secrets.token_hex(30))
    pad = size - len(build()) - len("P-Carrier-Pad: \r\n")
    if pad > 0:
        headers.append("P-Carrier-Pad: " + "x" * pad)
    return build()


def cut_in_a_header(call: Call, at: int = 4000) -> bytes:
    """An INVITE whose byte ``at`` falls inside a ``Route`` URI: cut there (a datagram longer than pjsip's buffer),
    what is left does not parse."""
    pad = [f"P-Carrier-Trace-{i}: " + "x" * 90 for i in range(60)]
    kept = call.head("INVITE", 1)
    for count in range(len(pad), 0, -1):
        start = len("\r\n".join([*kept, *pad[:count]]).encode()) + 2
        if start + 40 < at:
            route = "Route: <sip:edge.carrier.example:5060;lr;transport=udp;x=" + "a" * 200 + ">"
            body = "v=0\r\n"
            rest = [*kept, *pad[:count], route, "Content-Type: application/sdp", f"Content-Length: {len(body)}"]
            return ("\r\n".join(rest) + "\r\n\r\n" + body).encode()
    raise AssertionError("no room for the Route header")


class TcpCaller:
    """One TCP connection from ``local`` to a SIP server: requests out, messages in (framed by Content-Length)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.lport = int(writer.get_extra_info("sockname")[1])

    @classmethod
    async def connect(cls, local: str, host: str, port: int) -> TcpCaller:
        reader, writer = await asyncio.open_connection(host, port, local_addr=(local, 0))
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def message(self, within_s: float) -> bytes:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), within_s)
        length = 0
        for line in head.decode(errors="replace").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() in ("content-length", "l"):
                length = int(value.strip() or 0)
        body = await asyncio.wait_for(self.reader.readexactly(length), within_s) if length else b""
        return head + body

    async def final(self, call_id: str, method: str, within_s: float = 15.0) -> Answer:
        """The final answer to ``method`` of ``call_id``; requests that arrive meanwhile are answered 200."""
        deadline = time.monotonic() + within_s
        while (left := deadline - time.monotonic()) > 0:
            data = await self.message(left)
            found = parse_answer(data)
            if found is None:
                await self.send(ok_for(data))
                continue
            if (
                found.headers.get("call-id") == call_id
                and method in found.headers.get("cseq", "")
                and found.status >= 200
            ):
                return found
        raise TimeoutError(f"no final answer to {method} {call_id}")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def ok_for(request: bytes) -> bytes:
    """A 200 to an in-dialog request (a session refresh, a BYE): its Via, From, To, Call-ID and CSeq copied."""
    lines = request.decode(errors="replace").split("\r\n\r\n", 1)[0].split("\r\n")
    kept = [
        line for line in lines[1:] if line.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq")
    ]
    return ("\r\n".join(["SIP/2.0 200 OK", *kept, "Content-Length: 0"]) + "\r\n\r\n").encode()


def sdp_media(body: str) -> tuple[str, int]:
    """(connection address, audio port) of an answer's SDP."""
    host, port = "", 0
    for line in body.splitlines():
        if line.startswith("c=IN IP4 "):
            host = line.split()[2]
        elif line.startswith("m=audio "):
            port = int(line.split()[1])
    return host, port


class RtpCaller:
    """A caller's RTP on ``host``: 20 ms PCMU packets to ``remote`` once started, silent until :attr:`speaking`
    (then a tone of ``hz``: the caller does not talk over the agent's greeting), and what comes back."""

    def __init__(self, host: str, hz: float) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.hz = hz
        self.speaking = False
        self.remote: tuple[str, int] | None = None
        self.received: list[bytes] = []  # payloads of the PCMU packets that came back
        self.sent = 0
        self.packets = 0  # every datagram that came back
        self._task: asyncio.Task[None] | None = None

    def start(self, remote: tuple[str, int]) -> None:
        self.remote = remote
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        seq, ts, ssrc, phase = 0, 0, secrets.randbits(32), 0.0
        step = 2 * np.pi * self.hz / 8000
        next_at = time.monotonic()
        while True:
            self._drain()
            next_at += 0.02
            phases = phase + step * np.arange(160)
            phase = float((phase + step * 160) % (2 * np.pi))
            pcm = (32767 * 0.3 * np.sin(phases) * self.speaking).astype("<i2").tobytes()
            packet = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + ulaw_encode(pcm)
            seq, ts = seq + 1, ts + 160
            assert self.remote is not None
            with contextlib.suppress(OSError):
                await loop.sock_sendto(self.sock, packet, self.remote)
                self.sent += 1
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(2048)
            except (BlockingIOError, OSError):
                return
            self.packets += 1
            if len(data) > 12 and data[0] >> 6 == 2 and data[1] & 0x7F == 0:
                self.received.append(data[12 + (data[0] & 0x0F) * 4 :])

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sock.close()
