"""The official ``openai`` SDK client against the emulator, in both dialects.

The SDK builds the URL and headers itself (``websocket_base_url``; the beta client adds ``OpenAI-Beta``), sends its
own serialization of client events, and parses every server event into its models.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import openai
import pytest
from _emulator_helpers import PCM_RATE, b64, peak_hz, silence, speech

from bridge.emulator import EmulatorServer
from bridge.realtime.dialects import BETA, GA, Dialect

pytestmark = pytest.mark.integration

SESSIONS = {
    "ga": {
        "type": "realtime",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "transcription": {"model": "whisper-1"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
            },
            "output": {"voice": "marin"},
        },
    },
    "beta": {
        "modalities": ["audio", "text"],
        "voice": "alloy",
        "input_audio_transcription": {"model": "whisper-1"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
    },
}


@asynccontextmanager
async def sdk_connection(base_url: str, dialect: Dialect, **query: Any) -> AsyncIterator[Any]:
    client = openai.AsyncOpenAI(api_key="sk-test-emulator-0000", websocket_base_url=base_url)
    realtime = client.realtime if dialect is GA else client.beta.realtime
    async with realtime.connect(model=dialect.default_model, extra_query={k: str(v) for k, v in query.items()}) as conn:
        yield conn
    await client.close()


async def recv_until(conn: Any, kind: str, seen: list[Any], limit: int = 2000) -> Any:
    for _ in range(limit):
        event = await conn.recv()
        seen.append(event)
        if event.type == kind:
            return event
    raise AssertionError(f"no {kind} in {limit} events")


@pytest.mark.parametrize("dialect", [GA, BETA], ids=["ga", "beta"])
async def test_sdk_voice_turn(emulator: EmulatorServer, dialect: Dialect) -> None:
    emulator.queue_next(
        annotations=[{"hears": "Where is my parcel?", "reply": {"text": "It ships today.", "tone_hz": 450}}]
    )
    seen: list[Any] = []
    async with sdk_connection(emulator.base_url, dialect, speed=0) as conn:
        created = await recv_until(conn, "session.created", seen)
        assert created.session.model == dialect.default_model
        await conn.session.update(session=SESSIONS[dialect.name])
        updated = await recv_until(conn, "session.updated", seen)
        if dialect is GA:
            assert updated.session.audio.output.voice == "marin"
        else:
            assert updated.session.turn_detection.silence_duration_ms == 400
        pcm = speech(2.0) + silence(1.0)
        for i in range(0, len(pcm), 960):
            await conn.input_audio_buffer.append(audio=b64(pcm[i : i + 960]))
        started = await recv_until(conn, "input_audio_buffer.speech_started", seen)
        stopped = await recv_until(conn, "input_audio_buffer.speech_stopped", seen)
        assert started.item_id == stopped.item_id and stopped.audio_end_ms == 2400
        done = await recv_until(conn, "response.done", seen)
        transcript = [e for e in seen if e.type == "conversation.item.input_audio_transcription.completed"]
        if not transcript:
            transcript = [await recv_until(conn, "conversation.item.input_audio_transcription.completed", seen)]
    assert transcript[0].transcript == "Where is my parcel?"
    assert done.response.status == "completed"
    assert done.response.output[0].content[0].transcript == "It ships today."
    deltas = [e for e in seen if e.type == dialect.wire("audio.delta")]
    pcm_out = b"".join(base64.b64decode(e.delta) for e in deltas)
    assert peak_hz(pcm_out, PCM_RATE) == pytest.approx(450, abs=2)


@pytest.mark.parametrize("dialect", [GA, BETA], ids=["ga", "beta"])
async def test_sdk_cancel_and_truncate(emulator: EmulatorServer, dialect: Dialect) -> None:
    emulator.queue_next(annotations={"greeting": {"text": "Welcome! Please hold.", "duration_ms": 3000}})
    seen: list[Any] = []
    async with sdk_connection(emulator.base_url, dialect, speed=2) as conn:
        await recv_until(conn, "session.created", seen)
        await conn.response.create()
        first = await recv_until(conn, dialect.wire("audio.delta"), seen)
        await conn.response.cancel()
        done = await recv_until(conn, "response.done", seen)
        assert done.response.status == "cancelled"
        assert done.response.status_details.reason == "client_cancelled"
        assert done.response.output[0].status == "incomplete"
        item_id = first.item_id
        delivered_ms = sum(len(base64.b64decode(e.delta)) for e in seen if e.type == dialect.wire("audio.delta")) // 48
        assert 0 < delivered_ms < 3000  # the cancel landed mid-response

        await conn.response.cancel()
        error = await recv_until(conn, "error", seen)
        assert error.error.code == "response_cancel_not_active"
        assert error.error.message == "Cancellation failed: no active response found"

        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=delivered_ms + 50)
        error = await recv_until(conn, "error", seen)
        assert (error.error.code, error.error.param) == ("invalid_value", "audio_end_ms")
        assert error.error.message == f"Audio content of {delivered_ms}ms is already shorter than {delivered_ms + 50}ms"

        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=delivered_ms)
        truncated = await recv_until(conn, "conversation.item.truncated", seen)
        assert (truncated.item_id, truncated.audio_end_ms) == (item_id, delivered_ms)
    record = emulator.sessions[-1]
    assert [c["ok"] for c in record.cancels] == [True, False]
    assert [(t["audio_end_ms"], t["ok"]) for t in record.truncates] == [
        (delivered_ms + 50, False),
        (delivered_ms, True),
    ]
