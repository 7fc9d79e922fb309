"""Bad input from the model side is logged and counted, and the call goes on; bad configuration never half-starts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from fakes.leg import FakeLeg, wait_until

from bridge.call.session import CallSession
from bridge.dialplan import Dialplan
from bridge.emulator import EmulatorServer
from bridge.realtime.client import RealtimeClient
from bridge.realtime.dialects import BETA, GA, Dialect

PLAN = Dialplan(name="support", match=("100",), dialect="ga", greeting="Greet the caller.")


@pytest.mark.parametrize("dialect", [BETA, GA], ids=lambda d: d.name)
@pytest.mark.parametrize(
    ("fault", "counter", "error_code"),
    [
        ("malformed_json=1", "malformed_json", "malformed_json"),
        ("unknown_event=1", "unknown", None),
        ("invalid_base64_delta=1", "malformed_event", "malformed_event"),
        ("oversized_delta=1", "oversized_delta", None),
        ("error_mid_response=1", "error", "server_error"),
    ],
)
async def test_the_call_goes_on(
    emulator: EmulatorServer, dialect: Dialect, fault: str, counter: str, error_code: str | None
) -> None:
    clients: list[RealtimeClient] = []

    async def connect() -> RealtimeClient:
        client = RealtimeClient(dialect, f"{emulator.base_url}?speed=8&{fault}", "sk-test-bad-input")
        await client.connect()
        clients.append(client)
        return client

    leg = FakeLeg(f"bad-{counter}")
    session = CallSession(leg, PLAN, dialect, connect)
    task = asyncio.create_task(session.run())
    # the greeting (response 1) carries the fault; then the caller speaks and gets an answer all the same
    await wait_until(lambda: any(k == "response_done" for _, k, _ in session.report.timeline), 15, "greeting done")
    await wait_until(lambda: session.playout.idle, 15, "greeting played")
    leg.say(1.2)
    await wait_until(lambda: len(session.report.agent_transcript) >= 2, 15, "an answer after the fault")
    await wait_until(lambda: session.playout.idle and session.playback.response_id is None, 15)
    leg.stop()
    report = await asyncio.wait_for(task, 10)
    (client,) = clients  # no reconnect was needed
    assert client.protocol.counters[counter] >= 1, dict(client.protocol.counters)
    assert report.reconnects == 0 and "RECOVERING" not in report.phases
    if error_code is not None:
        assert any(e["code"] == error_code for e in report.errors), report.errors
    assert report.agent_audio_ms > 0 and report.end_reason.startswith("caller hung up")


def test_serve_refuses_a_bad_dialplan_and_names_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text("name: ok\nmatch: ['1']\n")
    (tmp_path / "bad.yaml").write_text("name: bad\nmatch: ['2']\nprofile: {voice: 7, turn_detection: {type: x}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "serve", "--dialplans", str(tmp_path), "--sip-port", "0"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"{tmp_path / 'bad.yaml'}: profile.voice" in proc.stderr
    assert "worker" not in proc.stderr.lower()  # nothing was started


def test_serve_refuses_a_bad_settings_file(tmp_path: Path) -> None:
    cfg = tmp_path / "callbridge.yaml"
    cfg.write_text("workers: 0\nsip_port: 5060\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "serve", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"{cfg}: workers: Input should be greater than or equal to 1" in proc.stderr
