"""TLS and SRTP through the front: a ``sips:`` call from the pjsua2 softphone to Kamailio's TLS listener (the tls
module), relayed over TLS to a worker's TLS listener (SIPS needs TLS on every hop), SRTP between the caller and the
worker; the caller hears the agent and the model (the emulator) hears the caller's tone."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from _front import NODE_A, ROOT, front_node, port_block, requirements

from bridge.audio.analysis import peak_frequency, tone
from bridge.audio.wav import write_wav
from bridge.devkit.tlscert import self_signed

TLS_MODULE = next(Path("/usr/lib").glob("*/kamailio/modules/tls.so"), None)
pytestmark = [
    *requirements,
    pytest.mark.skipif(TLS_MODULE is None, reason="no Kamailio tls.so (apt-get install kamailio-tls-modules)"),
]
CALLER_HZ = 1020.0


async def test_a_sips_call_through_the_front_runs_srtp_end_to_end(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, NODE_A, also=["127.0.0.1"], key_type="ec")
    wav = tmp_path / "caller.wav"
    # 2 s of silence first: the greeting plays before the caller's tone could barge in on it
    write_wav(wav, bytes(2 * 2 * 8000) + tone(CALLER_HZ, 4.0, -10.0))
    tls_port = port_block(2)
    config = {"sip_tls_port": tls_port, "sip_tls_cert": str(cert), "sip_tls_key": str(key), "srtp": "mandatory"}
    async with front_node(tmp_path, workers=1, config=config) as (node, _port, _health):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "call", f"sips:1000@{NODE_A}:{tls_port}", "--play", str(wav),
            "--tls-ca", str(cert), "--hangup-after", "6", "--json", cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 40)
        summary = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
        assert summary.get("answered"), f"{summary}\n{err.decode()[-2000:]}\n{node.stderr_tail()}"
        assert summary["srtp"] is True, summary
        heard_by_caller = summary["received"]
        assert heard_by_caller["active_ms"] >= 100 and heard_by_caller["rms_dbfs"] > -30, heard_by_caller  # greeting
        assert node.emulator is not None
        record = await node.emulator.wait_for_session(0)
        heard = np.frombuffer(record.input_audio, dtype="<i2").astype(np.float64)
        assert len(heard) > record.input_rate  # more than a second of the caller
        assert peak_frequency(heard, record.input_rate) == pytest.approx(CALLER_HZ, abs=10)
