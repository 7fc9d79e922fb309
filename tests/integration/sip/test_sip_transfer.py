"""Blind transfer (RFC 3515): the gateway REFERs the caller to a third UA, which then hears the caller.

Three processes: the "human agent" (softphone in listen mode), the gateway test app (transferor: REFER after
1 s, hang up on the final 2xx NOTIFY) and the caller (softphone playing a 1020 Hz tone in a loop; as the
transferee it follows the REFER with a new Call object and keeps playing into it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _helpers import GatewayApp, describe, finish, free_port, run_softphone, softphone, wait_sip_ready

from bridge.audio.analysis import audio_stats, tone
from bridge.audio.wav import read_wav, write_wav

pytestmark = pytest.mark.integration

CALLER_HZ, CALLER_DBFS = 1020.0, -10.0


def test_refer_moves_the_caller_to_the_agent_who_hears_them(tmp_path: Path) -> None:
    wav = tmp_path / "caller.wav"
    # A µ-law WAV (format tag 7), the call-script format; 1 s of whole cycles loops seamlessly.
    write_wav(wav, tone(CALLER_HZ, 1.0, CALLER_DBFS), "ulaw")
    agent_wav = tmp_path / "agent.wav"
    agent_port = free_port()
    agent = softphone(
        "listen", "--port", str(agent_port), "--calls", "1", "--duration", "20", "--record", str(agent_wav)
    )
    try:
        wait_sip_ready(agent_port, proc=agent)
        app = GatewayApp(
            "--mode", "tone", "--transfer-to", f"sip:agent@127.0.0.1:{agent_port}", "--transfer-after", "1.0"
        )
        try:
            caller = run_softphone("call", app.uri, "--play", str(wav), "--loop", "--hangup-after", "4")
        finally:
            gateway = app.stop()
    finally:
        agent_done = finish(agent, timeout=20)

    # The transferor: REFER progress as TransferProgress events, final 200, then it hung up.
    assert gateway.returncode == 0, describe(gateway)
    assert gateway.report is not None
    call = gateway.report["calls"][0]
    assert call["transfer"][-1] == [200, True], call["transfer"]
    assert all(final is False for _code, final in call["transfer"][:-1])
    assert call["transfer_result"] == 200
    assert call["local_hangup"] is True
    assert call["events"][-1] == "CallerHungUp"

    # The caller (transferee) placed the new call and stayed in it until its own hangup.
    assert caller.returncode == 0, describe(caller)
    assert caller.report is not None
    transfer = caller.report["transfer"]
    assert transfer is not None
    assert transfer["target"] == f"sip:agent@127.0.0.1:{agent_port}"
    assert transfer["sip_status"] == 200
    assert transfer["answered"] is True
    assert [leg["hangup_by"] for leg in caller.report["legs"]] == ["remote", "local"]

    # The agent heard the caller's tone: frequency and level.
    assert agent_done.returncode == 0, describe(agent_done)
    assert agent_done.report is not None
    (answered,) = agent_done.report["calls"]
    assert answered["answered"] is True
    assert answered["remote"] == "softphone"
    heard = answered["received"]
    assert heard["active_ms"] >= 2000, heard
    assert heard["peak_hz"] == pytest.approx(CALLER_HZ, abs=5), heard
    assert heard["rms_dbfs"] == pytest.approx(CALLER_DBFS, abs=1.0), heard
    assert audio_stats(read_wav(agent_wav))["peak_hz"] == pytest.approx(CALLER_HZ, abs=5)
