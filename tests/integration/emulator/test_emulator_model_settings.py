"""The emulator's settings per model, over a real socket: a candidate model slower, costlier or failing while the
safe one is unchanged (the server's ``model_settings``, ``POST /control/defaults`` and ``/control/next``
``{"models": ...}``, Live's model from ``session.start``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from _emulator_helpers import RawClient, of_type

from bridge.emulator import EmulatorServer
from bridge.realtime.dialects import GA

pytestmark = pytest.mark.integration

SAFE, CANDIDATE = "gpt-realtime-2.1", "gpt-realtime-2.1-mini"
DELTA = GA.wire("audio.delta")


async def first_audio_after_create(url: str) -> tuple[float, RawClient]:
    """Seconds from ``response.create`` to the response's first audio delta, and the client (done)."""
    client = await RawClient.open(url, headers=GA.extra_headers)
    await client.until_type("session.created")
    sent = time.monotonic()
    await client.send({"type": "response.create"})
    await client.until_type(DELTA, wait_s=10)
    took = time.monotonic() - sent
    await client.until(lambda e: e["type"] in ("response.done", "error"), wait_s=10)
    return took, client


async def test_two_sessions_with_different_models_get_different_latency() -> None:
    # speed 1: the service's pace; the candidate's model answers 1.2 s after response.created, the safe one 0.15 s
    slow = {CANDIDATE: {"response_latency_ms": 1200}}
    async with EmulatorServer("127.0.0.1", 0, speed=1, model_settings=slow) as emulator:
        (safe_s, safe), (candidate_s, candidate) = await asyncio.gather(
            first_audio_after_create(f"{emulator.base_url}/realtime?model={SAFE}"),
            first_audio_after_create(f"{emulator.base_url}/realtime?model={CANDIDATE}"),
        )
        await safe.close()
        await candidate.close()
        by_model = {r.model: r.settings for r in emulator.sessions}
    assert by_model[SAFE]["response_latency_ms"] == 150.0  # the default: unchanged
    assert by_model[CANDIDATE]["response_latency_ms"] == 1200.0
    assert candidate_s - safe_s > 0.8, (safe_s, candidate_s)  # about 1.05 s apart
    assert safe_s < candidate_s


async def test_control_api_sets_a_models_faults_and_reply_length_alone(emulator: EmulatorServer) -> None:
    async with aiohttp.ClientSession() as http:
        # every later connection of the candidate fails mid-response (server_error); the safe model's do not
        resp = await http.post(
            f"{emulator.http_url}/control/defaults",
            json={"settings": {"speed": 0}, "models": {CANDIDATE: {"error_mid_response": 1}}},
        )
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["settings"]["models"] == {CANDIDATE: {"error_mid_response": 1}}
        # the next two connections: the candidate's replies four times as long (costlier: more output tokens)
        body = {"count": 2, "models": {CANDIDATE: {"min_reply_ms": 4000, "max_reply_ms": 8000}}}
        resp = await http.post(f"{emulator.http_url}/control/next", json=body)
        assert resp.status == 200, await resp.text()
        bad = await http.post(f"{emulator.http_url}/control/next", json={"models": {CANDIDATE: {"nope": 1}}})
        assert bad.status == 400
        assert "model 'gpt-realtime-2.1-mini': unknown emulator setting 'nope'" in (await bad.json())["error"]
    _, safe = await first_audio_after_create(f"{emulator.base_url}/realtime?model={SAFE}")
    _, candidate = await first_audio_after_create(f"{emulator.base_url}/realtime?model={CANDIDATE}")
    await safe.close()
    await candidate.close()
    [safe_done] = of_type(safe.events, "response.done")
    assert safe_done["response"]["status"] == "completed" and not of_type(safe.events, "error")
    assert [e["error"]["code"] for e in of_type(candidate.events, "error")] == ["server_error"]
    candidate_done = await candidate_response_done(candidate)
    assert candidate_done["response"]["status"] == "failed"
    safe_settings, candidate_settings = (r.settings for r in emulator.sessions)
    assert (safe_settings["min_reply_ms"], candidate_settings["min_reply_ms"]) == (500.0, 4000.0)


async def candidate_response_done(client: RawClient) -> dict[str, Any]:
    found = of_type(client.events, "response.done")
    return found[0] if found else await client.until_type("response.done")


async def test_live_takes_its_models_settings_when_session_start_names_it() -> None:
    live = "gpt-live-1"
    async with EmulatorServer(
        "127.0.0.1", 0, speed=0, model_settings={"gpt-live-*": {"greeting": "Slow hello"}}
    ) as emu:
        client = await RawClient.open(f"{emu.base_url}/live/sessions")
        session = {
            "model": live,
            "instructions": "Be brief.",
            "audio": {"format": {"type": "audio/pcm", "rate": 24000}},
        }
        await client.send({"type": "session.start", "session": session})
        await client.until_type("session.started")
        await client.close()
        [record] = emu.sessions
    assert (record.model, record.settings["greeting"]) == (live, "Slow hello")


async def test_a_bad_model_setting_is_refused_when_the_server_starts() -> None:
    with pytest.raises(ValueError, match=r"model .gpt-realtime-2\.1-mini.: unknown emulator setting .latency."):
        EmulatorServer("127.0.0.1", 0, model_settings={CANDIDATE: {"latency": 1}})
