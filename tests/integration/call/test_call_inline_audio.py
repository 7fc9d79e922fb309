"""A reply's audio is handled where the client decodes it when the call's task waits on an empty inbox (no task
wake-up per delta), and waits its turn behind anything queued (real socket to the emulator, fake phone leg)."""

from __future__ import annotations

import asyncio
import math

import numpy as np
from fakes.leg import FakeLeg, wait_until

from bridge import events as ev
from bridge.call.session import CallSession
from bridge.call.state import Phase
from bridge.dialplan import Dialplan
from bridge.emulator import EmulatorServer
from bridge.realtime.client import RealtimeClient
from bridge.realtime.dialects import GA

PLAN = Dialplan(name="support", match=("100",), dialect="ga", greeting=None)


def tone_24k(ms: int, hz: float = 1020.0) -> bytes:
    t = np.arange(24 * ms) / 24000
    return (np.sin(2 * math.pi * hz * t) * 8000).astype("<i2").tobytes()


async def test_a_delta_is_played_on_the_spot_or_behind_what_is_queued(emulator: EmulatorServer) -> None:
    async def connect() -> RealtimeClient:
        client = RealtimeClient(GA, f"{emulator.base_url}?speed=4", "sk-test-inline")
        await client.connect()
        return client

    leg = FakeLeg("inline")
    session = CallSession(leg, PLAN, GA, connect)
    task = asyncio.create_task(session.run())
    await wait_until(lambda: session.phase.phase is Phase.LISTENING and session._waiting, what="a listening call")
    client = session.client
    assert client is not None and client._sink is not None
    sink = client._sink

    sink(ev.AudioChunk(response_id="r1", item_id="i1", audio=tone_24k(200)))  # nothing awaited after it
    assert session.playback.audio_item == "i1" and session.playout.depth_ms >= 180
    assert session.phase.phase is Phase.SPEAKING

    session.inbox.put(ev.SessionConfigured(session_id="queued-first"))  # something the task has not handled yet
    sink(ev.AudioChunk(response_id="r1", item_id="i2", audio=tone_24k(200)))
    assert session.playback.audio_item == "i1"  # the delta waits behind it
    await wait_until(lambda: session.playback.audio_item == "i2", 5, "the queued delta")
    assert any(k == "session_configured" and s == "queued-first" for _, k, s in session.report.timeline)

    await wait_until(lambda: session.playout.depth_ms == 0, 5, "the audio played out")
    heard = np.frombuffer(bytes(leg.heard), "<i2").astype(float)
    loud = heard[np.abs(heard) > 1000]
    assert len(loud) > 8 * 300  # both deltas reached the phone (400 ms of tone, give or take the edges)
    spectrum = np.abs(np.fft.rfft(heard * np.hanning(len(heard))))
    assert abs(np.argmax(spectrum) * 8000 / len(heard) - 1020) < 15
    leg.stop()
    await asyncio.wait_for(task, 10)
