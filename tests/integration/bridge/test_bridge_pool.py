"""The worker pool: a killed worker is restarted on the same port and takes calls again, and a second worker
cannot take the port of a live one (it exits with ``EXIT_PORT_LOCKED``)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from _bridge_helpers import (
    NUMBER,
    BridgeStack,
    call,
    run,
    silence,
    sip_options_status,
    speech,
    write_pcm_wav,
)

from bridge.serve.worker import EXIT_PORT_LOCKED

pytestmark = pytest.mark.integration


async def test_killed_worker_is_restarted_and_a_second_worker_cannot_take_its_port(tmp_path: Path) -> None:
    play = tmp_path / "caller.wav"
    write_pcm_wav(play, silence(0.3), speech(0.0, 1.0), silence(1.5))
    async with BridgeStack(tmp_path) as stack:
        assert stack.pool is not None
        slot = stack.pool.slots[0]
        port = slot.sip_port
        assert slot.proc is not None
        first_pid = slot.proc.pid

        os.kill(first_pid, signal.SIGKILL)  # this worker's own pid
        deadline = time.monotonic() + 20
        while not (slot.proc.pid != first_pid and slot.ready.is_set()):
            assert time.monotonic() < deadline, "the pool did not restart the worker"
            await asyncio.sleep(0.05)
        assert slot.restarts == 1
        assert slot.sip_port == port  # same port as before

        # The restarted worker takes a real call on that port, end to end.
        done = await call(stack.uri(NUMBER[("ga", "pcm16")]), play=play, hangup_after=2.8)
        assert done.returncode == 0, done.describe()
        assert done.report is not None and done.report["sip_status"] == 200
        assert done.report["received"]["peak_hz"] == pytest.approx(600, abs=3)  # the emulator's reply tone
        report = await stack.report(done.report["call_id"])
        assert report["caller_transcript"] and report["agent_audio_ms"] > 0

        # A second worker for the same port, while the pool's worker lives: refused, and the live one is unharmed.
        settings = stack.pool.settings.model_dump_json(exclude={"api_key"})
        second = await run(
            sys.executable, "-m", "bridge.serve.worker", "--index", "0", "--settings-json", settings, timeout=30
        )
        assert second.returncode == EXIT_PORT_LOCKED, second.describe()
        assert "held by a live worker" in second.stderr
        assert second.stdout.strip() == ""  # it never announced itself as listening
        assert slot.proc.returncode is None and slot.proc.pid != first_pid
        assert await asyncio.to_thread(sip_options_status, port, 1.0) == 200
