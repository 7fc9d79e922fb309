"""The official ``openai`` SDK's Live client (``client.live.connect()``) holds a conversation with the emulator.

The SDK builds the URL (``{websocket_base_url}/live/sessions``, no query) and the headers itself, serializes its
own client events and parses the emulator's: a session starts, 3 s of speech and then silence stream up at
real-time pace, transcript deltas come back with their timings, the reply's audio is the tone the emulator meant,
a tool delegation is answered through ``response.item.create`` and ``response.create``, usage is reported and the
session closes cleanly. Every raw server event is also checked strictly against ``openai.types.live``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import typing
from typing import Any

import numpy as np
import openai
import pytest
from _emulator_helpers import PCM_RATE, b64, peak_hz, speech
from openai.types.live import ServerEvent
from openai.types.responses import ResponseStreamEvent

from bridge.emulator import EmulatorServer

pytestmark = pytest.mark.integration

FRAME = PCM_RATE // 50 * 2  # 20 ms of PCM16 at 24 kHz
TRANSFER = {
    "type": "function",
    "name": "transfer_to_human",
    "description": "Transfer the caller to a person.",
    "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]},
}
SESSION = {
    "model": "gpt-live-1",
    "instructions": "You are Acme's phone agent. Answer briefly.",
    "audio": {"format": {"type": "audio/pcm", "rate": PCM_RATE}, "output": {"voice": "marin"}},
    "delegation": {"type": "responses", "responses": {"model": "gpt-5-mini", "tools": [TRANSFER]}},
}


def _by_type(union: Any) -> dict[str, Any]:
    members = typing.get_args(typing.get_args(union)[0])
    return {m.model_fields["type"].annotation.__args__[0]: m for m in members}


SERVER_MODELS, RESPONSES_MODELS = _by_type(ServerEvent), _by_type(ResponseStreamEvent)


class Caller:
    """Streams the caller's audio through the SDK at real-time pace, silence included, until stopped; what to say
    next is queued (``say``)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.pending = bytearray()
        self.sent_s = 0.0

    def say(self, pcm: bytes) -> None:
        self.pending += pcm

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        frames = 0
        while True:
            chunk = bytes(self.pending[:FRAME]).ljust(FRAME, b"\x00")
            del self.pending[:FRAME]
            await self.conn.session.input_audio.append(audio=b64(chunk))
            frames += 1
            self.sent_s = frames * 0.02
            await asyncio.sleep(max(0.0, t0 + frames * 0.02 - loop.time()))  # the phone's pace, not a wait


async def test_the_sdk_holds_a_live_conversation_with_the_emulator(emulator: EmulatorServer, oracle: Any) -> None:
    emulator.queue_next(
        annotations=[
            {"hears": "Where is my parcel?", "reply": {"text": "It ships today.", "tone_hz": 450}},
            {"hears": "Let me talk to a person."},
        ]
    )
    client = openai.AsyncOpenAI(api_key="sk-test-emulator-0000", websocket_base_url=emulator.base_url)
    raw: list[dict[str, Any]] = []
    seen: list[Any] = []

    async with client.live.connect() as conn:

        async def until(predicate: Any, what: str, limit: int = 5000) -> Any:
            for _ in range(limit):
                data = await asyncio.wait_for(conn.recv_bytes(), 10.0)
                raw.append(json.loads(data))
                event = conn.parse_event(data)
                seen.append(event)
                if predicate(event):
                    return event
            raise AssertionError(f"no {what} in {limit} events")

        await conn.session.start(session=SESSION)
        started = await until(lambda e: e.type == "session.started", "session.started")
        assert started.session.model == "gpt-live-1" and started.session.audio.output.voice == "marin"
        assert started.session.delegation.responses.tools[0].name == "transfer_to_human"

        caller = Caller(conn)
        pump = asyncio.create_task(caller.run())
        try:
            caller.say(speech(3.0))  # then silence: the pump fills the gaps
            reply_start = await until(lambda e: e.type == "session.output_transcript.delta", "the reply")
            heard = [e for e in seen if e.type == "session.input_transcript.delta"]
            assert "".join(e.delta for e in heard) == "Where is my parcel?"
            assert heard[0].start_ms < 400 and heard[-1].end_ms == pytest.approx(3000, abs=40)
            await until(lambda e: e.type == "session.usage.updated", "usage after the reply")
            reply = [e for e in seen[seen.index(reply_start) :] if e.type == "session.output_transcript.delta"]
            assert "".join(e.delta for e in reply) == "It ships today."
            assert reply[0].start_ms >= heard[-1].end_ms

            caller.say(speech(1.2))
            delegated = await until(lambda e: e.type == "session.delegation.created", "a delegation")
            call_done = await until(
                lambda e: e.type == "response.event" and e.event.get("type") == "response.output_item.done",
                "the backend's function call",
            )
            item = call_done.event["item"]
            assert call_done.delegation_id == delegated.delegation.id and item["name"] == "transfer_to_human"
            assert json.loads(item["arguments"]) == {"reason": "Let me talk to a person."}
            await until(lambda e: e.type == "response.event" and e.event.get("type") == "response.completed", "its end")
            output = json.dumps({"status": "transferring", "target": "sip:agent@example.com"})
            await conn.response.item.create(
                item={"type": "function_call_output", "call_id": item["call_id"], "output": output}
            )
            await conn.response.create()
            await until(
                lambda e: e.type == "response.event" and e.event.get("type") == "response.output_text.done",
                "the backend's answer",
            )
            answered = await until(lambda e: e.type == "session.usage.updated", "usage after the spoken result")
            assert answered.usage.seconds > caller.sent_s - 0.5
        finally:
            pump.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pump

        await conn.session.close()
        closed = await until(lambda e: e.type == "session.closed", "session.closed")
        assert closed.reason == "close_requested" and closed.usage.seconds >= answered.usage.seconds

    await client.close()
    record = emulator.sessions[-1]
    await emulator.wait_closed(record)
    assert record.dialect == "live" and record.close_code == 1000 and record.errors == []

    said = "".join(e.delta for e in seen if e.type == "session.output_transcript.delta")
    assert said == "It ships today.Thanks for waiting. The result is: " + output
    # the reply's audio is the tone the emulator meant: 450 Hz, between the silences of the stream
    pcm = b"".join(base64.b64decode(e.delta) for e in seen if e.type == "session.output_audio.delta")
    samples = np.frombuffer(pcm, dtype="<i2")
    voiced = np.flatnonzero(np.abs(samples) > 1000)
    first_reply = samples[voiced[0] : voiced[0] + PCM_RATE // 2]
    assert peak_hz(first_reply.tobytes(), PCM_RATE) == pytest.approx(450, abs=3)
    assert voiced[0] > 3 * PCM_RATE and np.all(samples[: voiced[0] - PCM_RATE // 100] == 0)  # silence, then the reply
    for event in raw:
        oracle.model(SERVER_MODELS[event["type"]], event)
        if event["type"] == "response.event":
            oracle.model(RESPONSES_MODELS[event["event"]["type"]], event["event"])
