"""TLS and SRTP on the gateway (bridge.sip.transports): a ``sips:`` call from the pjsua2 softphone over TLS with SDES
SRTP, both ways heard, and a capture of the loopback interface (where the process may open a packet socket) holds
none of the agent's tone in the gateway's RTP; a plain-RTP offer against ``srtp: mandatory`` refused with 488. With
TLS on and ``srtp`` at its default, a ``sips:`` call gets SRTP and one offering plain RTP 488; SDES keys offered over
UDP get 488 whatever ``srtp`` says.
Certificates are made here, at run time (``bridge.devkit.tlscert``)."""

from __future__ import annotations

import socket
import struct
import threading
from typing import Any

import numpy as np
import pytest

from bridge.audio.analysis import tone
from bridge.audio.g711 import ulaw_decode
from bridge.audio.wav import write_wav
from bridge.devkit.ports import free_port, free_port_block
from bridge.devkit.tlscert import self_signed
from bridge.sip.dialogguard import KEYS_IN_CLEAR
from tests.integration.sip._helpers import Finished, GatewayApp, RawSip, describe, run_softphone, sdp_offer

CALLER_HZ, AGENT_HZ = 1020.0, 600.0


class LoopbackCapture:
    """RTP payloads (PCMU, payload type 0) sent from UDP ports ``ports`` on the loopback interface, captured with
    a packet socket (Linux ``packet(7)``, needs CAP_NET_RAW) on its own thread; ``None`` payloads if not allowed."""

    def __init__(self, ports: range) -> None:
        self.ports = ports
        self.payloads: list[bytes] | None = []
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
            self.sock.bind(("lo", 0))
            self.sock.settimeout(0.2)
        except (OSError, AttributeError):
            self.payloads = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoopbackCapture:
        if self.payloads is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.payloads is not None:
            self._thread.join(2.0)
            self.sock.close()

    def _run(self) -> None:
        assert self.payloads is not None
        while not self._stop.is_set():
            try:
                frame, address = self.sock.recvfrom(65535)
            except OSError:
                continue
            if address[2] == socket.PACKET_OUTGOING or frame[12:14] != b"\x08\x00" or frame[23] != 17:
                continue  # each loopback packet is seen going out and coming in; IPv4 UDP only
            ihl = (frame[14] & 0x0F) * 4
            source_port = struct.unpack("!H", frame[14 + ihl : 16 + ihl])[0]
            rtp = frame[14 + ihl + 8 :]
            if source_port in self.ports and len(rtp) > 12 and rtp[0] >> 6 == 2 and rtp[1] & 0x7F == 0:
                self.payloads.append(rtp[12:])


def _tone_share(pcm: bytes, hz: float) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / 8000)
    return float(spectrum[np.abs(freqs - hz) < 30].sum() / max(spectrum.sum(), 1.0))


@pytest.fixture(scope="module")
def secure_calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(tmp)
    wav = tmp / "caller.wav"
    write_wav(wav, tone(CALLER_HZ, 2.0, -10.0))
    tls_port, rtp_port = free_port(), free_port_block(16)
    app = GatewayApp("--mode", "tone", "--tone-hz", str(AGENT_HZ), "--tls-port", str(tls_port),
                     "--tls-cert", str(cert), "--tls-key", str(key), "--srtp", "mandatory",
                     "--rtp-port", str(rtp_port), "--rtp-range", "16")  # fmt: skip
    try:
        with LoopbackCapture(range(rtp_port, rtp_port + 16)) as capture:
            phone = run_softphone(
                "call", f"sips:100@127.0.0.1:{tls_port}", "--play", str(wav), "--tls-ca", str(cert),
                "--hangup-after", "2.5",
            )  # fmt: skip
        with RawSip(app.port) as raw:
            plain, _seen = raw.invite(sdp_offer(40000, {0: "PCMU/8000"}))
            keys_over_udp, _seen = raw.invite(_sdes_offer(40000))
    finally:
        gateway = app.stop()
    return {"phone": phone, "gateway": gateway, "plain": plain, "captured": capture.payloads,
            "keys_over_udp": keys_over_udp}  # fmt: skip


def test_a_sips_call_runs_srtp_and_both_sides_hear_each_other(secure_calls: dict[str, Any]) -> None:
    phone: Finished = secure_calls["phone"]
    gateway: Finished = secure_calls["gateway"]
    assert phone.report is not None and phone.report["answered"], describe(phone)
    assert phone.report["srtp"] is True, phone.report
    assert phone.report["received"]["peak_hz"] == pytest.approx(AGENT_HZ, abs=5), phone.report["received"]
    assert gateway.report is not None, describe(gateway)
    (call,) = gateway.report["calls"]
    assert call["srtp"] is True, call
    assert call["received"]["peak_hz"] == pytest.approx(CALLER_HZ, abs=5), call["received"]
    assert call["received"]["active_ms"] > 1500, call["received"]


def test_the_agents_audio_on_the_wire_is_not_plain_g711(secure_calls: dict[str, Any]) -> None:
    captured: list[bytes] | None = secure_calls["captured"]
    if captured is None:
        pytest.skip("no packet socket here (needs CAP_NET_RAW)")
    assert len(captured) > 50, "the capture saw none of the call's RTP"  # 2.5 s of 20 ms packets
    wire = ulaw_decode(b"".join(captured))
    assert _tone_share(wire, AGENT_HZ) < 0.05  # plain PCMU of the 600 Hz tone would be almost all of it


def test_a_plain_rtp_offer_against_mandatory_srtp_gets_488(secure_calls: dict[str, Any]) -> None:
    assert secure_calls["plain"].status == 488, secure_calls["plain"].raw


SDES_KEY = "inline:WVNfX19zZWNyZXRfX19rZXlfX19mb3JfdGVzdHM"  # 30 bytes of base64 key and salt (RFC 4568 §6.1)


def _sdes_offer(port: int) -> str:
    return (
        sdp_offer(port, {0: "PCMU/8000"}).replace("RTP/AVP", "RTP/SAVP")
        + f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {SDES_KEY}\r\n"
    )


@pytest.fixture(scope="module")
def default_tls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """TLS on with every other setting at its default (srtp not set): a sips: call with SRTP, one with plain RTP,
    and SDES keys offered over UDP."""
    tmp = tmp_path_factory.mktemp("tls-default")
    cert, key = self_signed(tmp)
    tls_port = free_port()
    app = GatewayApp("--mode", "tone", "--tone-hz", str(AGENT_HZ), "--tls-port", str(tls_port),
                     "--tls-cert", str(cert), "--tls-key", str(key))  # fmt: skip
    try:
        uri = f"sips:100@127.0.0.1:{tls_port}"
        secure = run_softphone("call", uri, "--tls-ca", str(cert), "--hangup-after", "1.0")
        plain = run_softphone("call", uri, "--tls-ca", str(cert), "--srtp", "off", "--hangup-after", "1.0")
        unverified = run_softphone("call", uri, "--hangup-after", "1.0")  # no CA: the system's store verifies
        with RawSip(app.port) as raw:
            keys_over_udp, _seen = raw.invite(_sdes_offer(40000))
    finally:
        gateway = app.stop()
    return {"secure": secure, "plain": plain, "unverified": unverified, "keys_over_udp": keys_over_udp,
            "gateway": gateway}  # fmt: skip


def test_by_default_a_sips_call_gets_srtp_and_one_offering_plain_rtp_gets_488(default_tls: dict[str, Any]) -> None:
    secure: Finished = default_tls["secure"]
    assert secure.report is not None and secure.report["answered"] and secure.report["srtp"] is True, describe(secure)
    plain: Finished = default_tls["plain"]
    assert plain.report is not None and not plain.report["answered"], describe(plain)
    assert plain.report["sip_status"] == 488, plain.report
    assert "a sips: call needs SRTP" in default_tls["gateway"].stderr


def test_sdes_keys_over_udp_get_488(default_tls: dict[str, Any], secure_calls: dict[str, Any]) -> None:
    answer = default_tls["keys_over_udp"]
    assert (answer.status, answer.reason) == (488, KEYS_IN_CLEAR), answer.raw
    # with srtp: mandatory too: the keys went out in the clear, no call is set up with them
    assert secure_calls["keys_over_udp"].status == 488, secure_calls["keys_over_udp"].raw


def test_without_a_ca_the_far_end_is_verified_against_the_system_store(default_tls: dict[str, Any]) -> None:
    unverified: Finished = default_tls["unverified"]  # a self-signed certificate is in no system store
    assert unverified.report is not None and not unverified.report["answered"], describe(unverified)
