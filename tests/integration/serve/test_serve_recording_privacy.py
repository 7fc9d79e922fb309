"""Recorded calls through a real `serve` (workers, Redis, the emulator, the pjsua2 softphone): the recording is
what was actually played and heard, on one clock, streamed to disk; and a caller's keys never reach Redis, the
report, the logs, the recording's events or the console past the plan's visible digits, while the recording holds
silence as they are keyed."""

from __future__ import annotations

import asyncio
import json
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from test_serve_operable import Serve, _dump_redis, api

from bridge.call.recorder import read_recording
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.emulator import EmulatorServer
from bridge.store import keys
from bridge.store.reportfile import read_reports
from tests.integration.edge._edge import TOKEN, serve_node, softphone_call

pytestmark = [
    pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary"),
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.xdist_group("cpu"),  # it measures audio to the frame
]
NUMBER = "7000"
CARD = "4111111111111111"
RATE = 8000
PROMPT_S = 0.2  # the consent prompt (silence): the recording starts at its end
PLAN = {
    "name": "pci",
    "match": [NUMBER],
    "dialect": "ga",
    "recording": {"enabled": True, "consent_prompt": "This call is recorded."},  # consent_audio: the node's
    "privacy": {"pause_recording_on_dtmf": True},
    "profile": {
        "instructions": "Answer briefly.",
        "audio_format": "pcm16",
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
    },
}


@dataclass
class Node:
    serve: Serve
    redis: EmbeddedRedis
    emulator: EmulatorServer
    log: Path
    recordings: Path
    work: Path


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def node(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Node]:
    work = tmp_path_factory.mktemp("recording")
    prompt = _wav(work / "consent.wav", np.zeros(int(PROMPT_S * RATE)))  # played before recording starts
    plan = {**PLAN, "recording": {**PLAN["recording"], "consent_audio": str(prompt)}}
    async with serve_node(work, [plan]) as edge:
        serve = Serve(edge.proc, edge.sip_port, edge.http_port, edge.reports)
        yield Node(serve, edge.redis, edge.emulator, edge.log, work / "state" / "callbridge" / "recordings", work)


def _wav(path: Path, samples: np.ndarray[Any, np.dtype[np.float64]]) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


def _tone(hz: float, seconds: float, dbfs: float = -16.0) -> np.ndarray[Any, np.dtype[np.float64]]:
    t = np.arange(int(seconds * RATE)) / RATE
    return np.sin(2 * np.pi * hz * t) * 10 ** (dbfs / 20)


async def _phone(node: Node, *args: str) -> dict[str, Any]:
    return await softphone_call(node.serve.sip_port, NUMBER, *args)


async def _report(node: Node, sip_call_id: str) -> dict[str, Any]:
    for _ in range(200):
        for line in read_reports(node.serve.reports):
            if line.get("sip_call_id") == sip_call_id:
                return line
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no report line for {sip_call_id}")


async def _listen_without_the_console(node: Node) -> int:
    """Mid-call, ask the workers for the call's audio straight through Redis (unsigned, then with a forged
    signature), listening on its audio channel for 2 s: the number of audio messages that came."""
    client = aioredis.from_url(node.redis.url)
    try:
        for _ in range(100):
            _, body = await api("/api/calls", node.serve, TOKEN)
            if body["calls"]:
                break
            await asyncio.sleep(0.1)
        call_id = str(body["calls"][0]["call_id"])
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(keys.listen_audio(call_id))
        forged = {"call_id": call_id, "who": "mallory", "nonce": "00" * 16, "exp": time.time() + 10, "sig": "ab" * 32}
        for request in ({"call_id": call_id, "who": "mallory"}, forged):
            await client.publish(keys.LISTEN_CONTROL, json.dumps(request))
        came, deadline = 0, time.monotonic() + 2.0
        while time.monotonic() < deadline:
            came += await pubsub.get_message(timeout=0.2) is not None
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        return came
    finally:
        await client.aclose()


def _frames_dbfs(pcm: bytes) -> np.ndarray[Any, np.dtype[np.float64]]:
    x = np.frombuffer(pcm, "<i2").astype(np.float64) / 32768.0
    frames = x[: len(x) // 160 * 160].reshape(-1, 160)
    return np.asarray(20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-9))


def _active_s(pcm: bytes, floor: float = -45.0) -> float:
    """Seconds of sound, to the sample: a 5 ms running level, so a tone cut mid-frame counts what was played of it
    (20 ms frames would count a frame twice when one side's frames straddle the cut and the other's do not)."""
    x = np.frombuffer(pcm, "<i2").astype(np.float64) / 32768.0
    window = 40
    level = np.convolve(x**2, np.ones(window) / window, mode="same")
    return float((level > 10 ** (floor / 10)).sum() / RATE)


async def test_a_recording_is_the_call_as_played_and_heard_through_barge_ins(node: Node) -> None:
    # the caller talks (300 Hz) over every answer (long 600 Hz tones, paced at real time): a barge-in each time
    bursts = [_tone(300, 0.4), np.zeros(int(0.8 * RATE))] * 12
    play = _wav(node.work / "bursts.wav", np.concatenate([np.zeros(int(0.6 * RATE)), *bursts]))
    node.emulator.queue_next(settings={"speed": 1.0, "min_reply_ms": 4000, "max_reply_ms": 4000, "tone_hz": 600})
    heard = node.work / "heard.wav"
    phone = await _phone(node, "--play", str(play), "--record", str(heard), "--no-plc", "--hangup-after", "14.5")
    assert phone["answered"], phone
    report = await _report(node, phone["call_id"])
    assert report["barge_ins"] >= 10, report["barge_ins"]
    caller, agent, _, notes = read_recording(node.recordings / report["call_id"])
    recorded_s = len(caller) / 2 / RATE
    # from the prompt's end to the hang-up, as the bridge saw the call (the phone's own clock adds the BYE's transit)
    at = {kind: t for t, kind, _ in report["timeline"] if kind in ("answered", "ended")}
    assert recorded_s == pytest.approx((at["ended"] - at["answered"]) / 1000 - PROMPT_S, abs=0.1)
    assert len(agent) == len(caller)
    # the agent channel holds what the caller was sent: no flushed tail of any of the barge-ins
    with wave.open(str(heard), "rb") as w:
        heard_pcm = w.readframes(w.getnframes())
    assert _active_s(agent) == pytest.approx(_active_s(heard_pcm), abs=0.2), (_active_s(agent), _active_s(heard_pcm))
    assert sum(1 for n in notes if n["kind"] == "barge_in") == report["barge_ins"]


async def test_keyed_digits_are_masked_everywhere_and_the_recording_pauses(node: Node) -> None:
    play = _wav(node.work / "hum.wav", _tone(300, 2.0, dbfs=-20.0))
    node.emulator.queue_next(settings={"speed": 4.0})
    call = asyncio.create_task(
        _phone(node, "--play", str(play), "--loop", "--dtmf", f"{CARD}@1.6", "--hangup-after", "10")
    )
    streamed = await _listen_without_the_console(node)
    phone = await call
    assert phone["answered"] and phone["dtmf_sent"] == CARD, phone
    assert streamed == 0  # a request published straight to Redis streams nothing ...
    assert node.log.read_text().count("listen-in: refused a control message") >= 2  # ... and is logged
    report = await _report(node, phone["call_id"])
    call_id = report["call_id"]
    shown = "4" + "*" * 15
    assert "".join(report["dtmf"]) == shown  # the bridge got all 16 keys; the report keeps one
    caller, agent, _, notes = read_recording(node.recordings / call_id)
    keys = [n for n in notes if n["kind"] == "dtmf"]
    assert "".join(n["summary"] for n in keys) == shown
    _, detail = await api(f"/api/calls/{call_id}", node.serve, TOKEN)
    scanned = {
        "redis": await _dump_redis(node.redis.url),
        "report": node.serve.reports.read_text(),
        "recording events": json.dumps(notes),
        "console": json.dumps(detail) + json.dumps(await api("/api/calls", node.serve, TOKEN)),
        "logs": node.log.read_text(),
    }
    assert shown in scanned["redis"] or '"*"' in scanned["redis"]
    for name, text in scanned.items():
        assert CARD not in text and "111111" not in text, f"a run of keyed digits in {name}"
    # PCI pause: both channels silent from the first key until 3 s after the last; the caller's hum around it
    first, last = keys[0]["t_ms"] / 1000, keys[-1]["t_ms"] / 1000
    level = _frames_dbfs(caller)
    assert (level[int((first + 0.06) / 0.02) : int((last + 2.9) / 0.02)] < -80).all()
    assert (_frames_dbfs(agent)[int((first + 0.06) / 0.02) : int((last + 2.9) / 0.02)] < -80).all()
    before = level[int(0.5 / 0.02) : int((first - 0.3) / 0.02)]  # keys come 1.6 s after the answer
    assert len(before) > 20 and np.median(before) > -30, (first, len(before))  # before: the caller's hum
    after = level[int((last + 3.2) / 0.02) : -15]
    assert len(after) > 20 and np.median(after) > -30, (first, last, len(level))  # after the pause: recording again
