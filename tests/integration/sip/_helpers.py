"""Shared helpers for the SIP integration tests: free ports, subprocesses (gateway test app, softphone), raw SIP.

Every pjsua2 side runs in its own subprocess (a pjsua2 Endpoint is a per-process singleton); the pytest process
only orchestrates and speaks raw SIP over sockets. Processes are stopped by their own pid, never by name.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
APP = Path(__file__).with_name("_echo_app.py")
SCENARIOS = Path(__file__).with_name("scenarios")
LOCALHOST = "127.0.0.1"


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIP listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOCALHOST, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOCALHOST, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free UDP+TCP port")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# -- raw SIP over UDP --------------------------------------------------------------------------------------


@dataclass
class SipResponse:
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names, first occurrence
    raw: str = ""


def parse_response(data: bytes) -> SipResponse:
    text = data.decode("utf-8", "replace")
    head = text.split("\r\n\r\n", 1)[0]
    lines = head.split("\r\n")
    _version, status, reason = [*lines[0].split(" ", 2), ""][:3]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers.setdefault(name.strip().lower(), value.strip())
    return SipResponse(int(status), reason, headers, text)


class RawSip:
    """A minimal UDP SIP client: enough to send OPTIONS and INVITE and read the responses."""

    def __init__(self, target_port: int, target_host: str = LOCALHOST) -> None:
        self.target = (target_host, target_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOCALHOST, 0))
        self.port = int(self.sock.getsockname()[1])
        self.tag = secrets.token_hex(4)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawSip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        uri: str,
        call_id: str,
        cseq: int,
        branch: str,
        to_tag: str = "",
        body: str = "",
        extra: str = "",
    ) -> bytes:
        to = f"<{uri}>" + (f";tag={to_tag}" if to_tag else "")
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {LOCALHOST}:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:raw@{LOCALHOST}:{self.port}>;tag={self.tag}",
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:raw@{LOCALHOST}:{self.port}>",
            "User-Agent: callbridge-tests-raw",
        ]
        if extra:
            lines.append(extra)
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def _read_final(self, timeout: float) -> tuple[SipResponse, list[int]]:
        seen: list[int] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no final response (saw {seen})")
            self.sock.settimeout(remaining)
            data, _addr = self.sock.recvfrom(65535)
            if not data.startswith(b"SIP/2.0"):
                continue  # a request (e.g. a retransmitted BYE) is not what we wait for
            response = parse_response(data)
            seen.append(response.status)
            if response.status >= 200:
                return response, seen

    def options(self, user: str = "100", timeout: float = 3.0) -> SipResponse:
        uri = f"sip:{user}@{self.target[0]}:{self.target[1]}"
        self.sock.sendto(
            self._request("OPTIONS", uri, secrets.token_hex(8), 1, "z9hG4bK" + secrets.token_hex(6)), self.target
        )
        return self._read_final(timeout)[0]

    def invite(
        self, sdp: str, user: str = "100", timeout: float = 5.0, extra: str = ""
    ) -> tuple[SipResponse, list[int]]:
        """INVITE, wait for the final response, ACK it (a non-2xx ACK reuses the INVITE branch, RFC 3261
        §17.1.1.3); a 2xx is ACKed and then ended with BYE so that no call is left behind."""
        uri = f"sip:{user}@{self.target[0]}:{self.target[1]}"
        call_id = secrets.token_hex(8)
        branch = "z9hG4bK" + secrets.token_hex(6)
        self.sock.sendto(self._request("INVITE", uri, call_id, 1, branch, body=sdp, extra=extra), self.target)
        final, seen = self._read_final(timeout)
        to_tag = final.headers.get("to", "").partition("tag=")[2].split(";")[0]
        if final.status >= 300:
            self.sock.sendto(self._request("ACK", uri, call_id, 1, branch, to_tag), self.target)
        else:
            ack_branch = "z9hG4bK" + secrets.token_hex(6)
            self.sock.sendto(self._request("ACK", uri, call_id, 1, ack_branch, to_tag), self.target)
            bye_branch = "z9hG4bK" + secrets.token_hex(6)
            self.sock.sendto(self._request("BYE", uri, call_id, 2, bye_branch, to_tag), self.target)
        return final, seen


@dataclass
class Dialog:
    uri: str
    call_id: str
    to_tag: str
    cseq: int = 1


def _tag(response: SipResponse) -> str:
    return response.headers.get("to", "").partition("tag=")[2].split(";")[0]


def open_dialog(raw: RawSip, sdp: str, user: str = "100", timeout: float = 5.0) -> tuple[SipResponse, Dialog]:
    """INVITE and ACK a 2xx, leaving the call up (end it with :func:`in_dialog` ``BYE``)."""
    uri = f"sip:{user}@{raw.target[0]}:{raw.target[1]}"
    call_id = secrets.token_hex(8)
    raw.sock.sendto(raw._request("INVITE", uri, call_id, 1, "z9hG4bK" + secrets.token_hex(6), body=sdp), raw.target)
    final, _seen = raw._read_final(timeout)
    dialog = Dialog(uri, call_id, _tag(final))
    raw.sock.sendto(raw._request("ACK", uri, call_id, 1, "z9hG4bK" + secrets.token_hex(6), dialog.to_tag), raw.target)
    return final, dialog


def in_dialog(raw: RawSip, dialog: Dialog, method: str, extra: str = "", timeout: float = 5.0) -> SipResponse:
    dialog.cseq += 1
    branch = "z9hG4bK" + secrets.token_hex(6)
    request = raw._request(method, dialog.uri, dialog.call_id, dialog.cseq, branch, dialog.to_tag, extra=extra)
    raw.sock.sendto(request, raw.target)
    return raw._read_final(timeout)[0]


def sdp_offer(port: int, payloads: dict[int, str]) -> str:
    """An audio offer with the given payload types, e.g. ``{9: "G722/8000"}`` (RFC 3551 clock rate quirk)."""
    pts = " ".join(str(pt) for pt in payloads)
    rtpmaps = "".join(f"a=rtpmap:{pt} {name}\r\n" for pt, name in payloads.items())
    return (
        "v=0\r\n"
        f"o=raw 1 1 IN IP4 {LOCALHOST}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {LOCALHOST}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP {pts}\r\n"
        f"{rtpmaps}"
        "a=sendrecv\r\n"
    )


def tcp_options(port: int, user: str = "100", timeout: float = 3.0) -> SipResponse:
    """One OPTIONS over a TCP connection (RFC 3261 §18.2: Content-Length frames the message)."""
    with socket.create_connection((LOCALHOST, port), timeout=timeout) as conn:
        local_port = conn.getsockname()[1]
        uri = f"sip:{user}@{LOCALHOST}:{port};transport=tcp"
        request = (
            f"OPTIONS {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {LOCALHOST}:{local_port};branch=z9hG4bK{secrets.token_hex(6)}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:raw@{LOCALHOST}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <{uri}>\r\n"
            f"Call-ID: {secrets.token_hex(8)}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        conn.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65535)
            if not chunk:
                break
            data += chunk
    return parse_response(data)


def wait_sip_ready(port: int, timeout: float = 10.0, proc: subprocess.Popen[str] | None = None) -> None:
    """Probe with OPTIONS until the UA answers (any final response means it is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with RawSip(port) as raw:
            try:
                raw.options(timeout=0.3)
                return
            except (TimeoutError, ConnectionRefusedError, OSError):
                pass
        time.sleep(0.05)
    raise TimeoutError(f"nothing answered SIP OPTIONS on port {port}")


# -- subprocesses ------------------------------------------------------------------------------------------


@dataclass
class Finished:
    returncode: int
    report: dict[str, Any] | None
    stdout: str
    stderr: str


def last_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    return None


class GatewayApp:
    """The gateway test app (``_echo_app.py``) in a subprocess, ready when it answers OPTIONS."""

    def __init__(self, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        fd, status = tempfile.mkstemp(prefix="sip-app-", suffix=".json")
        os.close(fd)
        self.status_file = Path(status)
        self.proc = subprocess.Popen(
            [sys.executable, str(APP), "--port", str(self.port), "--status-file", status, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=REPO,
        )
        try:
            wait_sip_ready(self.port, proc=self.proc)
        except BaseException:
            self.stop()
            raise

    @property
    def uri(self) -> str:
        return f"sip:100@{LOCALHOST}:{self.port}"

    def wait_live_calls(self, count: int, timeout: float = 15.0) -> None:
        """Block until the app has ``count`` answered calls up (it rewrites its status file on each change)."""
        deadline = time.monotonic() + timeout
        live = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with {self.proc.returncode}")
            try:
                live = int(json.loads(self.status_file.read_text() or "{}").get("live", 0))
            except (OSError, ValueError):
                live = 0
            if live >= count:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{live} live calls after {timeout} s, wanted {count}")

    def stop(self, timeout: float = 15.0) -> Finished:
        self.status_file.unlink(missing_ok=True)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return Finished(self.proc.returncode, last_json(out), out, err)

    def wait(self, timeout: float = 20.0) -> Finished:
        """Wait for the app to exit by itself (``--exit-after-calls``)."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            return self.stop()
        return Finished(self.proc.returncode, last_json(out), out, err)


def softphone(*args: str) -> subprocess.Popen[str]:
    """``python -m bridge.sip.softphone ARGS --json`` in a subprocess."""
    return subprocess.Popen(
        [sys.executable, "-m", "bridge.sip.softphone", *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=REPO,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 30.0) -> Finished:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return Finished(proc.returncode, last_json(out), out, err)


def run_softphone(*args: str, timeout: float = 30.0) -> Finished:
    return finish(softphone(*args), timeout)


def describe(finished: Finished) -> str:
    """Context for an assertion message: exit code and the tail of stderr."""
    return f"rc={finished.returncode} stderr tail:\n{finished.stderr[-3000:]}"


def pcap_rtp_payloads(path: Path) -> list[tuple[int, bytes]]:
    """(payload type, payload) of each RTP packet in a classic libpcap file of Ethernet/IPv4/UDP frames."""
    import struct

    data = path.read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    if linktype != 1:
        raise ValueError(f"{path}: link type {linktype}, expected Ethernet (1)")
    packets: list[tuple[int, bytes]] = []
    offset = 24
    while offset + 16 <= len(data):
        _sec, _usec, incl, _orig = struct.unpack_from(endian + "IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + incl]
        offset += 16 + incl
        if len(frame) < 14 + 20 + 8 + 12 or frame[12:14] != b"\x08\x00":
            continue
        ihl = (frame[14] & 0x0F) * 4
        if frame[14 + 9] != 17:  # not UDP
            continue
        rtp = frame[14 + ihl + 8 :]
        if len(rtp) < 12 or rtp[0] >> 6 != 2:  # RFC 3550 §5.1: version 2
            continue
        csrc = (rtp[0] & 0x0F) * 4
        packets.append((rtp[1] & 0x7F, rtp[12 + csrc :]))
    return packets
