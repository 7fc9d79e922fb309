"""session.update errors as the service words them, and credentials: both mint endpoints, ephemeral secrets,
expired and wrong keys (close 3000), bad model and beta shape disabled (close 4000)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import openai
import pytest
from _emulator_helpers import RawClient
from openai.types.beta.realtime import SessionCreateResponse
from openai.types.realtime import ClientSecretCreateResponse
from websockets.exceptions import ConnectionClosed

from bridge import events as bev
from bridge.emulator import EmulatorServer
from bridge.errors import ModelRefused, classify_close
from bridge.realtime.client import RealtimeClient
from bridge.realtime.dialects import BETA, GA, LIVE, Credential
from bridge.realtime.profile import AgentProfile
from bridge.realtime.protocol import RealtimeProtocol

pytestmark = pytest.mark.integration

LONG_KEY = "sk-live-emulator-key-1234"
PROFILE = AgentProfile(voice="verse")


async def test_ga_rejects_beta_fields_and_keeps_the_session(emulator: EmulatorServer, oracle: Any) -> None:
    client = await RawClient.open(f"{emulator.base_url}/realtime?model=gpt-realtime")
    await client.until_type("session.created")
    await client.send(
        {
            "type": "session.update",
            "event_id": "evt_1",
            "session": {"type": "realtime", "instructions": "NEW", "modalities": ["audio", "text"]},
        }
    )
    err = (await client.until_type("error"))["error"]
    assert err == {
        "type": "invalid_request_error",
        "code": "unknown_parameter",
        "message": "Unknown parameter: 'session.modalities'.",
        "param": "session.modalities",
        "event_id": "evt_1",
    }
    await client.send({"type": "session.update", "session": {"instructions": "NEW"}})
    err = (await client.until_type("error"))["error"]
    assert (err["code"], err["param"], err["message"]) == (
        "missing_required_parameter",
        "session.type",
        "Missing required parameter: 'session.type'.",
    )
    await client.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}},
        }
    )
    err = (await client.until_type("error"))["error"]
    assert (err["code"], err["param"]) == ("invalid_value", "session.audio.input.format.rate")
    await client.send({"type": "session.update", "session": {"type": "realtime"}})
    echo = (await client.until_type("session.updated"))["session"]
    assert echo["instructions"] != "NEW"  # every rejected update was discarded whole
    assert echo["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    for event in client.events:
        oracle.server_event("ga", event)
    record = emulator.sessions[-1]
    assert not record.closed  # none of this is fatal
    await client.close()


async def test_beta_rejects_ga_fields(emulator: EmulatorServer, oracle: Any) -> None:
    client = await RawClient.open(f"{emulator.base_url}/realtime?model=gpt-4o-realtime-preview", beta=True)
    await client.until_type("session.created")
    await client.send({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["audio"]}})
    err = (await client.until_type("error"))["error"]
    assert (err["code"], err["param"]) == ("unknown_parameter", "session.type")
    await client.send({"type": "session.update", "session": {"voice": "cedar"}})  # needs a gpt-realtime model
    err = (await client.until_type("error"))["error"]
    assert (err["code"], err["param"]) == ("invalid_value", "session.voice")
    for event in client.events:
        oracle.server_event("beta", event)
    await client.close()


async def refused(url: str, *, beta: bool = False, key: str | None) -> tuple[dict[str, Any], int | None]:
    client = await RawClient.open(url, beta=beta, key=key)
    event = await client.recv()
    with pytest.raises(ConnectionClosed) as info:
        await client.recv(wait_s=2.0)
    assert info.value.rcvd is not None
    return event, info.value.rcvd.code


async def mint_raw(server: EmulatorServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{server.http_url}/v1/realtime/{path}", json=body, headers={"Authorization": f"Bearer {LONG_KEY}"}
        )
        assert resp.status == 200, await resp.text()
        out: dict[str, Any] = await resp.json()
        return out


async def test_credentials(oracle: Any) -> None:
    async with EmulatorServer(api_key=LONG_KEY, client_secret_ttl_s=0.5) as server:
        api = openai.AsyncOpenAI(api_key=LONG_KEY, base_url=f"{server.http_url}/v1", websocket_base_url=server.base_url)
        # GA: POST /v1/realtime/client_secrets through the SDK, validated against its model
        async with aiohttp.ClientSession() as http:
            resp = await http.post(
                f"{server.http_url}/v1/realtime/client_secrets",
                json={
                    "expires_after": {"anchor": "created_at", "seconds": 600},
                    "session": {"type": "realtime", "model": "gpt-realtime", "instructions": "Minted."},
                },
                headers={"Authorization": f"Bearer {LONG_KEY}"},
            )
            assert resp.status == 200
            body = await resp.json()
            bad = await http.post(
                f"{server.http_url}/v1/realtime/client_secrets",
                json={},
                headers={"Authorization": "Bearer sk-wrong-key-000000"},
            )
            assert bad.status == 401 and (await bad.json())["error"]["code"] == "invalid_api_key"
        minted = oracle.model(ClientSecretCreateResponse, body)
        assert minted.value.startswith("ek_") and minted.session.type == "realtime"
        assert minted.expires_at == pytest.approx(time.time() + 600, abs=2)  # expires_after honoured
        credential = GA.parse_credential(body)
        assert isinstance(credential, Credential) and credential.value == minted.value
        # the minted secret connects, and the session starts from the minted config
        client = openai.AsyncOpenAI(api_key=minted.value, websocket_base_url=server.base_url)
        async with client.realtime.connect(model="gpt-realtime") as conn:
            created = await conn.recv()
            assert created.type == "session.created"
            assert created.session.type == "realtime" and created.session.instructions == "Minted."
        # beta: POST /v1/realtime/sessions through the SDK
        beta = await api.beta.realtime.sessions.create(model="gpt-4o-realtime-preview", voice="verse")
        assert beta.client_secret.value.startswith("ek_") and beta.voice == "verse"
        raw = await mint_raw(server, "sessions", BETA.build_credential_request(PROFILE))
        # the service's answer also carries the session's id, object and model, which the SDK model lacks
        oracle.model(SessionCreateResponse, raw, allowed_extras=("id", "object", "model"))
        assert BETA.parse_credential(raw).value == raw["client_secret"]["value"]
        ga_raw = await mint_raw(server, "client_secrets", GA.build_credential_request(PROFILE))
        oracle.model(ClientSecretCreateResponse, ga_raw)
        # expired (TTL 0.5 s here): error expired_client_secret, then close 3000
        short = await api.realtime.client_secrets.create(session={"type": "realtime", "model": "gpt-realtime"})
        await asyncio.sleep(0.6)
        event, code = await refused(f"{server.base_url}/realtime?model=gpt-realtime", key=short.value)
        assert (event["error"]["code"], code) == ("expired_client_secret", 3000)
        # wrong long-lived key, and no key at all
        event, code = await refused(f"{server.base_url}/realtime?model=gpt-realtime", key="sk-wrong-key-000000")
        assert (event["type"], event["error"]["code"], code) == ("error", "invalid_api_key", 3000)
        assert "sk-wrong-key-000000" not in event["error"]["message"]  # the key is masked
        event, code = await refused(f"{server.base_url}/realtime?model=gpt-realtime", key=None)
        assert (event["error"]["code"], code) == ("invalid_api_key", 3000)
        assert classify_close(code) == (bev.ErrorClass.AUTH, True)
        (decoded,) = RealtimeProtocol(GA).decode(json.dumps(event))
        assert isinstance(decoded, bev.ErrorEvent) and decoded.error_class is bev.ErrorClass.AUTH
        # the active session whose secret expired meanwhile is still running (as on the service)
        await api.close()


async def test_bad_model_and_beta_disabled() -> None:
    async with EmulatorServer(models=["gpt-realtime*", "gpt-4o-realtime-preview*"]) as server:
        event, code = await refused(f"{server.base_url}/realtime?model=gpt-3.5-turbo", key="sk-any")
        assert (event["error"]["code"], code) == ("model_not_found", 4000)
        event, code = await refused(
            f"{server.base_url}/realtime?model=gpt-4o-realtime-preview&beta_disabled=1", beta=True, key="sk-any"
        )
        assert event["error"]["code"] == "beta_api_shape_disabled" and code == 4000
        assert event["error"]["message"] == (
            "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API."
        )
        client = await RawClient.open(f"{server.base_url}/realtime?model=gpt-realtime-2025-08-28&beta_disabled=1")
        assert (await client.recv())["type"] == "session.created"  # GA is unaffected
        await client.close()
        assert [r.close_code for r in server.sessions[:2]] == [4000, 4000]


async def test_session_outlives_its_secret() -> None:
    async with EmulatorServer(api_key=LONG_KEY, client_secret_ttl_s=0.3) as server:
        api = openai.AsyncOpenAI(api_key=LONG_KEY, base_url=f"{server.http_url}/v1")
        secret = await api.realtime.client_secrets.create()
        client = await RawClient.open(f"{server.base_url}/realtime?model=gpt-realtime", key=secret.value)
        await client.until_type("session.created")
        await asyncio.sleep(0.4)
        await client.send({"type": "session.update", "session": {"type": "realtime"}})
        assert (await client.until_type("session.updated"))["type"] == "session.updated"
        await client.close()
        await api.close()


@pytest.mark.parametrize(("dialect", "model", "code"), [(GA, "gpt-realtime", "model_not_found"),
                                                        (LIVE, "gpt-live-1", "invalid_model")])  # fmt: skip
async def test_a_retired_model_is_refused_as_the_service_refuses_it_and_the_bridge_types_it(
    dialect: Any, model: str, code: str
) -> None:
    async with EmulatorServer(ping_interval_s=0, retire_models=f"{model},other-*") as server:
        client = RealtimeClient(dialect, server.base_url, "sk-any", model=model)
        await client.connect()  # the upgrade succeeds: no outage (503), the service answers the session
        with pytest.raises(ModelRefused) as info:
            await client.open(AgentProfile(model=model))
        await client.close()
        assert (info.value.model, info.value.code, info.value.retryable) == (model, code, False)
        assert server.sessions[0].close_code == 4000 and server.refused == []
        # a model the fault does not name is served as usual
        ok = RealtimeClient(GA, server.base_url, "sk-any", model="gpt-realtime-2.1")
        await ok.connect()
        await ok.open(AgentProfile(model="gpt-realtime-2.1"))
        await ok.close()
