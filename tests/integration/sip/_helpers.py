"""Shared helpers for the SIP integration tests: free ports, subprocesses (gateway test app, softphone), raw SIP.

Every pjsua2 side runs in its own subprocess (a pjsua2 Endpoint is a per-process singleton); the pytest process
only orchestrates and speaks raw SIP over sockets. Processes are stopped by their own pid, never by name.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.audio.g711 import ulaw_encode
from bridge.devkit.ports import free_port_block

REPO = Path(__file__).resolve().parents[3]
APP = Path(__file__).with_name("_echo_app.py")
SCENARIOS = Path(__file__).with_name("scenarios")
LOCALHOST = "127.0.0.1"


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIP listens on both)."""
    return free_port_block(1)


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
    """A minimal UDP SIP client: enough to send OPTIONS and INVITE and read the responses.

    ``local_host`` is the address it binds to and names in Via/From/Contact: another loopback address
    (``127.0.0.2``) makes a second source for allowlist tests.
    """

    def __init__(self, target_port: int, target_host: str = LOCALHOST, local_host: str = LOCALHOST) -> None:
        self.target = (target_host, target_port)
        self.local_host = local_host
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((local_host, 0))
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
        content_type: str = "application/sdp",
    ) -> bytes:
        to = f"<{uri}>" + (f";tag={to_tag}" if to_tag else "")
        host = self.local_host
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {host}:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:raw@{host}:{self.port}>;tag={self.tag}",
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:raw@{host}:{self.port}>",
            "User-Agent: callbridge-tests-raw",
        ]
        if extra:
            lines.append(extra)
        if body:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def _read_final(
        self, timeout: float, call_id: str | None = None, cseq: str | None = None
    ) -> tuple[SipResponse, list[int]]:
        """The next final response (to ``call_id`` / ``"<n> <METHOD>"`` if given; others are skipped)."""
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
            if call_id is not None and response.headers.get("call-id") != call_id:
                continue  # e.g. the 200 to the BYE that ended an earlier call
            if cseq is not None and " ".join(response.headers.get("cseq", "").split()) != cseq:
                continue
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
        self,
        sdp: str,
        user: str = "100",
        timeout: float = 5.0,
        extra: str = "",
        *,
        call_id: str | None = None,
        cseq: int = 1,
    ) -> tuple[SipResponse, list[int]]:
        """INVITE, wait for the final response, ACK it (a non-2xx ACK reuses the INVITE branch, RFC 3261
        §17.1.1.3); a 2xx is ACKed and then ended with BYE so that no call is left behind.

        A retry after a 401 passes the first INVITE's ``call_id`` and the next ``cseq`` (RFC 3261 §22.2)."""
        uri = f"sip:{user}@{self.target[0]}:{self.target[1]}"
        call_id = call_id or secrets.token_hex(8)
        branch = "z9hG4bK" + secrets.token_hex(6)
        self.sock.sendto(self._request("INVITE", uri, call_id, cseq, branch, body=sdp, extra=extra), self.target)
        final, seen = self._read_final(timeout, call_id, f"{cseq} INVITE")
        to_tag = final.headers.get("to", "").partition("tag=")[2].split(";")[0]
        if final.status >= 300:
            self.sock.sendto(self._request("ACK", uri, call_id, cseq, branch, to_tag), self.target)
        else:
            ack_branch = "z9hG4bK" + secrets.token_hex(6)
            self.sock.sendto(self._request("ACK", uri, call_id, cseq, ack_branch, to_tag), self.target)
            bye_branch = "z9hG4bK" + secrets.token_hex(6)
            self.sock.sendto(self._request("BYE", uri, call_id, cseq + 1, bye_branch, to_tag), self.target)
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
    final, _seen = raw._read_final(timeout, call_id, "1 INVITE")
    dialog = Dialog(uri, call_id, _tag(final))
    raw.sock.sendto(raw._request("ACK", uri, call_id, 1, "z9hG4bK" + secrets.token_hex(6), dialog.to_tag), raw.target)
    return final, dialog


def in_dialog(
    raw: RawSip,
    dialog: Dialog,
    method: str,
    extra: str = "",
    timeout: float = 5.0,
    *,
    body: str = "",
    content_type: str = "application/sdp",
) -> SipResponse:
    """A request inside the dialog and its final response; a re-INVITE's 2xx is ACKed."""
    dialog.cseq += 1
    branch = "z9hG4bK" + secrets.token_hex(6)
    request = raw._request(
        method, dialog.uri, dialog.call_id, dialog.cseq, branch, dialog.to_tag, body, extra, content_type
    )
    raw.sock.sendto(request, raw.target)
    final = raw._read_final(timeout, dialog.call_id, f"{dialog.cseq} {method}")[0]
    if method == "INVITE":  # a 2xx ACK is a new transaction; a non-2xx one reuses the branch (RFC 3261 §17.1.1.3)
        ack_branch = "z9hG4bK" + secrets.token_hex(6) if final.status < 300 else branch
        ack = raw._request("ACK", dialog.uri, dialog.call_id, dialog.cseq, ack_branch, dialog.to_tag)
        raw.sock.sendto(ack, raw.target)
    return final


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
    """The gateway test app (``_echo_app.py``) in a subprocess, ready when it answers OPTIONS.

    Its stderr goes to a temporary file, not a pipe: a test that makes it log a lot (garbage floods) must not
    block it on a full pipe that nobody reads until the end."""

    def __init__(self, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        fd, status = tempfile.mkstemp(prefix="sip-app-", suffix=".json")
        os.close(fd)
        self.status_file = Path(status)
        self._stderr = tempfile.TemporaryFile(mode="w+", prefix="sip-app-", suffix=".log")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(APP), "--port", str(self.port), "--status-file", status, *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
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

    def wait_calls_ended(self, timeout: float = 15.0) -> None:
        """Block until every call that has reached the app has ended (its BYE or CANCEL done, its report made)."""
        deadline = time.monotonic() + timeout
        status: dict[str, int] = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with {self.proc.returncode}")
            try:
                status = json.loads(self.status_file.read_text() or "{}")
            except (OSError, ValueError):
                status = {}
            if status.get("ended", 0) >= status.get("total", 0):
                return
            time.sleep(0.05)
        raise TimeoutError(f"calls still up after {timeout} s: {status}")

    def log_so_far(self) -> str:
        """What the app has logged up to now (it keeps running)."""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()

    def _stderr_text(self) -> str:
        self._stderr.seek(0)
        text = self._stderr.read()
        self._stderr.close()
        return text

    def stop(self, timeout: float = 15.0) -> Finished:
        self.status_file.unlink(missing_ok=True)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return Finished(self.proc.returncode, last_json(out), out, self._stderr_text())

    def wait(self, timeout: float = 20.0) -> Finished:
        """Wait for the app to exit by itself (``--exit-after-calls``)."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            return self.stop()
        return Finished(self.proc.returncode, last_json(out), out, self._stderr_text())


def softphone(*args: str) -> subprocess.Popen[str]:
    """``python -m bridge.devkit.softphone ARGS --json`` in a subprocess."""
    return subprocess.Popen(
        [sys.executable, "-m", "bridge.devkit.softphone", *args, "--json"],
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


# -- raw RTP (the media side of a RawSip caller) ------------------------------------------------------------


def sdp_media_address(sdp_text: str) -> tuple[str, int]:
    """(connection address, audio port) of an SDP body (or of a whole message that ends with one)."""
    body = sdp_text.split("\r\n\r\n", 1)[-1]
    host, port = LOCALHOST, 0
    for line in body.splitlines():
        if line.startswith("c=IN IP4 "):
            host = line.split()[2]
        elif line.startswith("m=audio "):
            port = int(line.split()[1])
    return host, port


def sdp_direction(sdp_text: str) -> str:
    """The audio direction attribute of an SDP body (RFC 3264 §5.1; none means sendrecv)."""
    body = sdp_text.split("\r\n\r\n", 1)[-1]
    for line in body.splitlines():
        if line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
            return line[2:]
    return "sendrecv"


@dataclass
class RtpPacket:
    at: float  # time.monotonic() when it arrived
    payload_type: int
    payload: bytes


class RtpPeer:
    """Sends 20 ms RTP packets to the gateway and keeps what comes back, on its own thread.

    ``tone_hz`` picks what it sends: a PCMU tone (payload type 0), or nothing while it is None (the way a held
    phone goes quiet). :meth:`send_digit` interleaves an RFC 4733 telephone-event (payload type 101: five
    packets of growing duration, the first with the marker bit, then three end packets, RFC 4733 §2.5).
    """

    def __init__(self, host: str = LOCALHOST) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.remote: tuple[str, int] | None = None
        self.tone_hz: float | None = None
        self.tone_dbfs = -10.0
        self.received: list[RtpPacket] = []
        self.sent = 0
        self._digits: list[str] = []
        self._seq = 0
        self._timestamp = 0
        self._phase = 0.0
        self._ssrc = secrets.randbits(32)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="rtp-peer", daemon=True)
        self._thread.start()

    def send_digit(self, digit: str) -> None:
        with self._lock:
            self._digits.append(digit)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.sock.close()

    def __enter__(self) -> RtpPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def received_between(self, start: float, end: float, payload_type: int = 0) -> list[RtpPacket]:
        with self._lock:
            return [p for p in self.received if start <= p.at < end and p.payload_type == payload_type]

    def _packet(self, payload_type: int, payload: bytes, marker: bool = False, timestamp: int | None = None) -> bytes:
        self._seq = (self._seq + 1) & 0xFFFF
        ts = self._timestamp if timestamp is None else timestamp
        header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | payload_type, self._seq, ts, self._ssrc)
        return header + payload

    def _tone_frame(self, hz: float) -> bytes:
        step = 2 * np.pi * hz / 8000
        phases = self._phase + step * np.arange(160)
        self._phase = float((self._phase + step * 160) % (2 * np.pi))
        amplitude = 32767 * 10 ** (self.tone_dbfs / 20) * np.sqrt(2)
        return ulaw_encode((amplitude * np.sin(phases)).astype("<i2").tobytes())

    def _event_packets(self, digit: str) -> list[bytes]:
        code = "0123456789*#ABCD".index(digit.upper())
        start = self._timestamp
        packets = [
            self._packet(101, struct.pack("!BBH", code, 10, 160 * (i + 1)), marker=i == 0, timestamp=start)
            for i in range(5)
        ]
        packets += [self._packet(101, struct.pack("!BBH", code, 0x80 | 10, 160 * 6), timestamp=start) for _ in range(3)]
        return packets

    def _run(self) -> None:
        pending: list[bytes] = []
        next_at = time.monotonic()
        while not self._stop.is_set():
            self._drain()
            now = time.monotonic()
            if now < next_at:
                time.sleep(min(0.005, next_at - now))
                continue
            next_at += 0.02
            remote = self.remote
            if remote is None:
                continue
            with self._lock:
                if not pending and self._digits:
                    pending = self._event_packets(self._digits.pop(0))
            if pending:
                packet = pending.pop(0)
            elif self.tone_hz is not None:
                packet = self._packet(0, self._tone_frame(self.tone_hz))
            else:
                self._timestamp += 160
                continue
            self._timestamp += 160
            try:
                self.sock.sendto(packet, remote)
                self.sent += 1
            except OSError:
                pass

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(2048)
            except (BlockingIOError, OSError):
                return
            if len(data) < 12 or data[0] >> 6 != 2:
                continue
            csrc = (data[0] & 0x0F) * 4
            with self._lock:
                self.received.append(RtpPacket(time.monotonic(), data[1] & 0x7F, data[12 + csrc :]))


# -- SIPp --------------------------------------------------------------------------------------------------


def run_sipp(
    scenario: str,
    target_port: int,
    cwd: Path,
    *extra: str,
    local_ip: str = LOCALHOST,
    timeout: float = 40.0,
) -> subprocess.CompletedProcess[str]:
    """One call of ``scenarios/<scenario>`` against ``127.0.0.1:target_port``; SIPp's exit code 0 = it passed.

    The scenario is copied into ``cwd`` first: SIPp looks for ``pcap/`` next to the scenario."""
    sipp = shutil.which("sipp")
    assert sipp is not None, "sipp is not installed"
    local = cwd / scenario
    shutil.copy(SCENARIOS / scenario, local)
    return subprocess.run(
        [
            sipp,
            "-sf",
            str(local),
            "-m",
            "1",
            "-i",
            local_ip,
            "-mi",
            local_ip,
            "-p",
            str(free_port()),
            "-mp",
            str(free_port()),
            "-timeout",
            "20",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
            "-s",
            "100",
            *extra,
            f"{LOCALHOST}:{target_port}",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sipp_failure(result: subprocess.CompletedProcess[str], cwd: Path) -> str:
    """SIPp's output and error log, for an assertion message."""
    logs = "".join(path.read_text(errors="replace")[-3000:] for path in cwd.glob("*_errors.log"))
    return f"sipp rc={result.returncode}\n{result.stdout[-1500:]}\n{result.stderr[-1500:]}\n{logs}"


STRANGER = "127.0.0.3"  # another loopback address: neither the caller's signalling nor its media host


class Stranger:
    """Sends ``burst`` packets of a PCMU tone at ``hz`` (its own SSRC) from :data:`STRANGER` to each of ``targets``
    every 20 ms, and counts what comes back (``sent``, ``received``)."""

    def __init__(self, targets: list[tuple[str, int]], hz: float, burst: int = 1) -> None:
        self.targets, self.burst = targets, burst
        samples = (0.3 * 32767 * np.sin(2 * np.pi * hz * np.arange(160) / 8000)).astype("<i2")
        self._payload = ulaw_encode(samples.tobytes())
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((STRANGER, 0))
        self.sock.setblocking(False)
        self.sent = self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stranger", daemon=True)

    def __enter__(self) -> Stranger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.sock.close()

    def _run(self) -> None:
        ssrc, seq = secrets.randbits(32), 0
        while not self._stop.wait(0.02):
            for _ in range(self.burst):
                seq = (seq + 1) & 0xFFFF
                packet = struct.pack("!BBHII", 0x80, 0, seq, (seq * 160) & 0xFFFFFFFF, ssrc) + self._payload
                for target in self.targets:
                    try:
                        self.sock.sendto(packet, target)
                        self.sent += 1
                    except OSError:
                        pass
            while True:
                try:
                    self.sock.recv(2048)
                    self.received += 1
                except OSError:
                    break
