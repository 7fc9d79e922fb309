"""Faults over a real socket (URL query, /control/next, and injected now), the control API, and recording to disk."""

from __future__ import annotations

import json
import time
import wave
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from _emulator_helpers import PCM_RATE, RawClient, of_type, peak_hz, silence, speech
from websockets.exceptions import ConnectionClosed

from bridge import events as bev
from bridge.emulator import EmulatorServer
from bridge.errors import classify_close
from bridge.realtime.dialects import BETA, GA
from bridge.realtime.protocol import RealtimeProtocol

pytestmark = pytest.mark.integration


async def closed_by_server(client: RawClient, wait_s: float = 3.0) -> ConnectionClosed:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await client.recv(wait_s)
    return info.value


async def test_drop_after_s_aborts_without_close_frame(emulator: EmulatorServer) -> None:
    client = await RawClient.open(f"{emulator.base_url}/realtime?model=gpt-realtime&drop_after_s=0.3")
    started = time.monotonic()
    closed = await closed_by_server(client)
    assert 0.25 <= time.monotonic() - started < 1.5
    assert closed.rcvd is None  # abrupt: no close frame, the client sees 1006
    assert classify_close(1006) == (bev.ErrorClass.NETWORK, True)
    record = emulator.sessions[-1]
    assert (record.close_code, record.close_reason) == (1006, "drop_after_s=0.3")


async def test_drop_mid_response(emulator: EmulatorServer) -> None:
    url = f"{emulator.base_url}/realtime?model=gpt-4o-realtime-preview&speed=0&drop_mid_response=1"
    client = await RawClient.open(url, beta=True)
    await client.until_type("session.created")
    await client.send({"type": "response.create"})
    closed = await closed_by_server(client)
    assert closed.rcvd is None
    assert len(of_type(client.events, "response.audio.delta")) == 2  # fault_after_deltas default
    assert not of_type(client.events, "response.done")


async def test_error_unknown_and_malformed_mid_response(emulator: EmulatorServer, oracle: Any) -> None:
    emulator.queue_next(settings={"speed": 0, "error_mid_response": 1, "unknown_event": 1, "malformed_json": 1})
    client = await RawClient.open(f"{emulator.base_url}/realtime?model=gpt-realtime")
    await client.until_type("session.created")
    await client.send({"type": "response.create"})
    done = await client.until_type("response.done")
    types = [e["type"] for e in client.events]
    assert {"response.emulator_unknown.delta", "<malformed>", "error"} <= set(types)
    assert types.index("error") < types.index("response.done")
    assert done["response"]["status"] == "failed"
    error = of_type(client.events, "error")[0]["error"]
    assert (error["type"], error["code"]) == ("server_error", "server_error")
    proto = RealtimeProtocol(GA)
    decoded = [e for frame in client.frames for e in proto.decode(frame)]
    assert any(isinstance(e, bev.UnknownEvent) for e in decoded)
    assert any(isinstance(e, bev.ErrorEvent) and e.code == "malformed_json" for e in decoded)
    server_error = next(e for e in decoded if isinstance(e, bev.ErrorEvent) and e.code == "server_error")
    assert server_error.retryable and server_error.error_class is bev.ErrorClass.SERVER
    for event in client.events:
        if event["type"] not in {"response.emulator_unknown.delta", "<malformed>"}:
            oracle.server_event("ga", event)
    # the socket stays open
    await client.send({"type": "session.update", "session": {"type": "realtime"}})
    assert (await client.until_type("session.updated"))["type"] == "session.updated"
    await client.close()


async def test_session_max_gives_session_expired_then_1001(emulator: EmulatorServer, oracle: Any) -> None:
    client = await RawClient.open(f"{emulator.base_url}/realtime?model=gpt-realtime&session_max_s=0.3")
    await client.until_type("session.created")
    error = await client.until_type("error")
    oracle.server_event("ga", error)
    assert (error["error"]["code"], error["error"]["message"]) == (
        "session_expired",
        "Your session hit the maximum duration of 0.005 minutes.",
    )
    closed = await closed_by_server(client)
    assert closed.rcvd is not None and closed.rcvd.code == 1001


async def test_control_api(emulator: EmulatorServer) -> None:
    async with aiohttp.ClientSession(base_url=emulator.http_url) as http:
        resp = await http.post(
            "/control/next",
            json={
                "count": 2,
                "settings": {"speed": 0, "tone_hz": 520},
                "annotations": [{"hears": "first", "reply": {"text": "One."}}],
            },
        )
        assert (await resp.json()) == {"queued": 2}
        bad = await http.post("/control/next", json={"settings": {"no_such_knob": 1}})
        assert bad.status == 400 and "no_such_knob" in (await bad.json())["error"]
        client = await RawClient.open(f"{emulator.base_url}/realtime?model=gpt-4o-realtime-preview", beta=True)
        await client.until_type("session.created")
        await client.append(speech(1.0) + silence(0.8))
        await client.until_type("response.done")
        assert of_type(client.events, "response.audio_transcript.done")[0]["transcript"] == "One."
        sessions = (await (await http.get("/control/sessions")).json())["sessions"]
        assert sessions[-1]["dialect"] == "beta" and sessions[-1]["transcripts"] == ["first"]
        sid = sessions[-1]["id"]
        detail = await (await http.get(f"/control/sessions/{sid}")).json()
        assert detail["sent_types"][0] == "session.created" and detail["responses"][0]["status"] == "completed"
        resp = await http.post(f"/control/sessions/{sid}/annotations", json=[{"hears": "second"}])
        assert resp.status == 200
        resp = await http.post(
            f"/control/sessions/{sid}/fault",
            json={"kind": "error", "code": "rate_limit_exceeded", "message": "Slow down."},
        )
        assert resp.status == 200
        error = await client.until_type("error")
        assert (error["error"]["code"], error["error"]["message"]) == ("rate_limit_exceeded", "Slow down.")
        resp = await http.post(f"/control/sessions/{sid}/fault", json={"kind": "explode"})
        assert resp.status == 400
        resp = await http.post(f"/control/sessions/{sid}/fault", json={"kind": "drop"})
        closed = await closed_by_server(client)
        assert closed.rcvd is None
        resp = await http.post(f"/control/sessions/{sid}/fault", json={"kind": "drop"})
        assert resp.status == 404  # no longer live
        # the second queued connection still gets the queued settings
        client2 = await RawClient.open(f"{emulator.base_url}/realtime?model=gpt-realtime")
        await client2.until_type("session.created")
        assert emulator.sessions[-1].settings["tone_hz"] == 520
        await client2.close()
        await emulator.wait_closed(emulator.sessions[-1])
        forgotten = await (await http.delete("/control/sessions")).json()
        assert forgotten == {"forgotten": 2} and emulator.sessions == []


async def test_unknown_query_setting_is_reported_not_fatal(emulator: EmulatorServer) -> None:
    client = await RawClient.open(f"{emulator.base_url}/realtime?model=gpt-realtime&sped=0")
    await client.until_type("session.created")
    error = await client.until_type("error")
    assert error["error"]["code"] == "unknown_parameter" and "sped" in error["error"]["message"]
    await client.close()


async def test_recording_to_disk(tmp_path: Path) -> None:
    async with EmulatorServer(record_dir=tmp_path, speed=0) as server:
        client = await RawClient.open(f"{server.base_url}/realtime?model=gpt-realtime")
        await client.until_type("session.created")
        await client.append(speech(1.0) + silence(0.8))
        await client.until_type("response.done")
        await client.close()
        record = server.sessions[-1]
        await server.wait_closed(record)
    with wave.open(str(tmp_path / f"{record.id}.in.wav"), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, PCM_RATE)
        pcm = w.readframes(w.getnframes())
    assert pcm == speech(1.0) + silence(0.8)
    assert peak_hz(pcm, PCM_RATE) == pytest.approx(300, abs=2)
    lines = [json.loads(line) for line in (tmp_path / f"{record.id}.events.jsonl").read_text().splitlines()]
    assert {line["dir"] for line in lines} == {"in", "out"}
    assert all(line["t"] > 1e9 for line in lines)  # wall-clock timestamps
    outs = [line["event"]["type"] for line in lines if line["dir"] == "out"]
    assert outs[0] == "session.created" and "response.done" in outs
    appends = [line["event"] for line in lines if line["dir"] == "in"]
    assert appends[0]["type"] == "input_audio_buffer.append" and appends[0]["audio"].startswith("<elided>")


async def test_server_stop_closes_live_sessions() -> None:
    server = EmulatorServer(speed=0)
    await server.start()
    client = await RawClient.open(f"{server.base_url}/realtime?model=gpt-4o-realtime-preview", beta=True)
    await client.until_type("session.created")
    await server.close()
    closed = await closed_by_server(client)
    assert closed.rcvd is not None and closed.rcvd.code == 1001
    assert BETA.name == server.sessions[0].dialect
