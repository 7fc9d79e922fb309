"""Real calls between the softphone and the gateway test app, each in its own process, over loopback.

One call (module fixture) carries a 1020 Hz tone at -10 dBFS from the caller, a 600 Hz tone at -12 dBFS from
the gateway, and then DTMF; each test asserts one fact about it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from _helpers import Finished, GatewayApp, describe, finish, run_softphone, softphone

from bridge.audio.analysis import audio_stats, tone
from bridge.audio.wav import read_wav, write_wav

pytestmark = pytest.mark.integration

CALLER_HZ, CALLER_DBFS = 1020.0, -10.0
GATEWAY_HZ, GATEWAY_DBFS = 600.0, -12.0


@pytest.fixture(scope="module")
def basic_call(tmp_path_factory: pytest.TempPathFactory) -> tuple[Finished, Finished, Path]:
    tmp = tmp_path_factory.mktemp("basic_call")
    wav = tmp / "caller.wav"
    write_wav(wav, tone(CALLER_HZ, 2.0, CALLER_DBFS))
    heard = tmp / "heard.wav"
    app = GatewayApp("--mode", "tone", "--tone-hz", str(GATEWAY_HZ), "--tone-dbfs", str(GATEWAY_DBFS))
    try:
        # The tone plays once (2 s); the digits follow it so that telephone-events do not cut into the tone.
        phone = run_softphone(
            "call",
            app.uri,
            "--play",
            str(wav),
            "--record",
            str(heard),
            "--dtmf",
            "123@2.3",
            "--dtmf",
            "#*@2.9",
            "--hangup-after",
            "3.6",
        )
    finally:
        gateway = app.stop()
    return phone, gateway, heard


def _only_call(gateway: Finished) -> dict[str, Any]:
    assert gateway.report is not None, describe(gateway)
    calls: list[dict[str, Any]] = gateway.report["calls"]
    assert len(calls) == 1
    return calls[0]


def test_call_is_answered_and_identified(basic_call: tuple[Finished, Finished, Path]) -> None:
    phone, gateway, _ = basic_call
    assert phone.returncode == 0, describe(phone)
    assert phone.report is not None
    call = _only_call(gateway)
    assert phone.report["sip_status"] == 200
    assert phone.report["answered"] is True
    assert phone.report["hangup_by"] == "local"
    assert 3.4 <= phone.report["duration_s"] <= 4.5
    assert call["sip_call_id"] == phone.report["call_id"]  # the caller's Call-ID, kept as data
    assert call["call_id"].startswith("c-") and call["call_id"] != call["sip_call_id"]  # the bridge's own id
    assert call["caller"] == "softphone"
    assert call["called"] == "100"
    assert call["remote_addr"].startswith("127.0.0.1:")
    assert call["user_agent"] == "callbridge-softphone"
    assert call["codec"] == "PCMU"  # our first preference among PCMU/PCMA
    assert call["max_calls"] == 4


def test_caller_tone_reaches_gateway_at_frequency_and_level(basic_call: tuple[Finished, Finished, Path]) -> None:
    received = _only_call(basic_call[1])["received"]
    assert received["active_ms"] >= 1700, received
    assert received["peak_hz"] == pytest.approx(CALLER_HZ, abs=5), received
    assert received["rms_dbfs"] == pytest.approx(CALLER_DBFS, abs=1.0), received


def test_gateway_tone_reaches_caller_and_its_recording(basic_call: tuple[Finished, Finished, Path]) -> None:
    phone, _, heard = basic_call
    assert phone.report is not None
    received = phone.report["received"]
    assert received["active_ms"] >= 3000, received
    assert received["peak_hz"] == pytest.approx(GATEWAY_HZ, abs=5), received
    assert received["rms_dbfs"] == pytest.approx(GATEWAY_DBFS, abs=1.0), received
    recorded = audio_stats(read_wav(heard))
    assert recorded["peak_hz"] == pytest.approx(GATEWAY_HZ, abs=5)
    assert recorded["rms_dbfs"] == pytest.approx(GATEWAY_DBFS, abs=1.0)


def test_dtmf_arrives_in_order_as_events(basic_call: tuple[Finished, Finished, Path]) -> None:
    phone, gateway, _ = basic_call
    assert phone.report is not None
    assert phone.report["dtmf_sent"] == "123#*"
    call = _only_call(gateway)
    assert call["dtmf"] == "123#*"
    assert call["events"] == ["Dtmf"] * 5 + ["CallerHungUp"]
    assert call["hangup_event"] == [200, "Normal call clearing"]
    assert call["local_hangup"] is False


def test_frames_are_delivered_on_the_loop_thread(basic_call: tuple[Finished, Finished, Path]) -> None:
    gateway = basic_call[1]
    call = _only_call(gateway)
    assert gateway.report is not None
    assert call["on_frame_on_loop_thread"] == [True]
    assert call["media"]["errors"] == 0
    assert call["media"]["frames_in"] >= 150
    assert call["media"]["frames_out"] >= 150
    assert call["handover_delay_ms"] < 50
    assert gateway.report["crossing_dropped"] == 0
    assert gateway.report["sink_errors"] == 0


def test_both_processes_exit_cleanly(basic_call: tuple[Finished, Finished, Path]) -> None:
    phone, gateway, _ = basic_call
    assert phone.returncode == 0, describe(phone)  # not -6 / 134 (SIGABRT at libDestroy)
    assert gateway.returncode == 0, describe(gateway)
    assert "still alive before libDestroy" not in gateway.stderr + phone.stderr


def test_echo_mode_loops_the_caller_back(tmp_path: Path) -> None:
    wav = tmp_path / "caller.wav"
    write_wav(wav, tone(CALLER_HZ, 2.0, CALLER_DBFS))
    app = GatewayApp("--mode", "echo", "--media-after-answer", "--ring", "0.3")
    try:
        phone = run_softphone("call", app.uri, "--play", str(wav), "--hangup-after", "2.5")
    finally:
        gateway = app.stop()
    assert phone.report is not None, describe(phone)
    heard = phone.report["received"]
    assert heard["peak_hz"] == pytest.approx(CALLER_HZ, abs=5), heard
    assert heard["rms_dbfs"] == pytest.approx(CALLER_DBFS, abs=1.0), heard
    assert gateway.returncode == 0, describe(gateway)


def test_shutdown_with_a_live_call_hangs_up_and_exits_zero() -> None:
    app = GatewayApp("--mode", "tone", "--send-dtmf", "42#@0.2")
    phone = softphone("call", app.uri, "--hangup-after", "30")
    try:
        app.wait_live_calls(1)
        time.sleep(1.5)  # the three digits go out one after another (about 200 ms each)
    finally:
        gateway = app.stop()
    summary = finish(phone, timeout=15)
    assert gateway.returncode == 0, describe(gateway)
    assert summary.report is not None, describe(summary)
    assert summary.report["answered"] is True
    assert summary.report["hangup_by"] == "remote"
    assert summary.report["duration_s"] < 10
    assert summary.report["dtmf_received"] == "42#"  # IncomingCall.send_dtmf reached the caller (RFC 4733)
    assert gateway.report is not None
    assert gateway.report["calls"][0]["local_hangup"] is True


def test_rejected_call_reports_the_final_status() -> None:
    app = GatewayApp("--reject", "403")
    try:
        phone = run_softphone("call", app.uri)
    finally:
        gateway = app.stop()
    assert phone.returncode == 1, describe(phone)  # not answered: the work failed
    assert phone.report is not None
    assert phone.report["sip_status"] == 403
    assert phone.report["answered"] is False
    assert gateway.returncode == 0, describe(gateway)


def test_caller_gives_up_while_ringing() -> None:
    app = GatewayApp("--mode", "silent", "--ring", "3")
    try:
        phone = run_softphone("call", app.uri, "--timeout", "1")
    finally:
        gateway = app.stop()
    assert phone.returncode == 1, describe(phone)  # not answered: the work failed
    assert phone.report is not None
    assert phone.report["sip_status"] == 487  # CANCEL -> 487 Request Terminated (RFC 3261 §9.2)
    assert phone.report["reason"] == "no answer within 1 s"
    assert gateway.returncode == 0, describe(gateway)
    assert gateway.report is not None
    (call,) = gateway.report["calls"]
    assert call["answered"] is False
    assert call["hangup_event"][0] == 487
    assert "CallGone" in gateway.stderr  # the app's late answer() raised instead of answering a dead call
