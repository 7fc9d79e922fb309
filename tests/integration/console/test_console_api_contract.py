"""The API's contract for change and retry, on the real app over a real redis-server with a call written by a worker's
real writer (``CallStore``): every answer names the API's version (``API-Version``) and ``/api/v1/`` serves each
route with the same role checks; a call action retried with its ``Idempotency-Key`` gets the first answer and is
published and audited once, the key's record in Redis named by a digest, kept a day and holding no token."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from fakes.clock import Clock
from redis import asyncio as aioredis

from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.dialplan import Dialplan
from bridge.rollout.store import RolloutStore
from bridge.store import keys
from bridge.store.calls import CallStore, StoreTuning
from bridge.supervisor.accounts import Users, add_token, add_user
from bridge.supervisor.api import ConsoleOptions, create_app

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(redis_server_binary() is None, reason="needs a redis-server binary"),
]
CANARY = Dialplan.model_validate({"name": "canary", "match": ["5000"], "dialect": "rollout"})
CRM = "https://crm.example"  # a listed origin: a CRM's page that retries actions
DESK = Dialplan.model_validate({"name": "desk", "match": ["4000"], "dialect": "ga", "transfer_target": "sip:d@pbx"})


class Api:
    def __init__(self, http: TestClient[Any, Any], tokens: dict[str, str], redis: aioredis.Redis) -> None:
        self.http, self.tokens, self.redis = http, tokens, redis

    async def ask(self, who: str, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any, Any]:
        auth = {"Authorization": f"Bearer {self.tokens[who]}"} | {k.replace("_", "-"): v for k, v in headers.items()}
        async with self.http.request(method, path, json=body, headers=auth) as r:
            return r.status, await r.json(), r.headers


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    with EmbeddedRedis() as server:
        store = CallStore(server.url, worker="w-contract", clock=Clock(1.8e9), tuning=StoreTuning(reap_interval_s=None))
        await store.start()
        store.listener_for("c-live", caller="+15559990000", called="4000", dialplan="desk")
        assert await store.flush()
        users = add_user(add_user(Users(), "sue", "supervisor", "sue-pass-long-1"), "vic", "viewer", "vic-pass-long")
        users, sue = add_token(users, "sue")
        users, vic = add_token(users, "vic")
        client = aioredis.from_url(server.url, decode_responses=True)
        rollouts = RolloutStore(client=client, specs={"canary": CANARY.rollout_spec})
        options = ConsoleOptions(users=users, listen_key=b"k" * 32, cors_origins=(CRM,))
        app = create_app(token=None, redis=client, rollouts=rollouts, dialplans=[CANARY, DESK], options=options)
        try:
            async with TestClient(TestServer(app)) as http:
                yield Api(http, {"sue": sue, "vic": vic}, client)
        finally:
            await client.aclose()
            await store.close()


async def test_every_answer_names_the_version_and_v1_serves_each_route_with_its_roles(api: Api) -> None:
    for path in ("/api/calls", "/healthz", "/api/no/such"):
        _, _, headers = await api.ask("vic", "GET", path)
        assert headers["API-Version"] == "1", path
    status, plain, _ = await api.ask("vic", "GET", "/api/calls")
    status_v1, versioned, _ = await api.ask("vic", "GET", "/api/v1/calls")
    assert status == status_v1 == 200 and [c["call_id"] for c in versioned["calls"]] == ["c-live"]
    assert versioned["calls"][0]["caller"] == plain["calls"][0]["caller"] != "+15559990000"  # masked for a viewer
    status, said, _ = await api.ask("vic", "PUT", "/api/v1/rollout/canary/kill", {"kill": True, "reason": "x"})
    assert status == 403 and "the supervisor role" in said["error"], said  # the alias keeps the route's role
    _, document, _ = await api.ask("vic", "GET", "/api/v1/openapi.json")
    assert document["info"]["version"] == "1" and "/api/calls" in document["paths"]
    params = document["paths"]["/api/calls/{call_id}/hangup"]["post"]["parameters"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in params), params


async def test_an_action_retried_with_its_key_gets_the_first_answer_and_acts_once(api: Api) -> None:
    observer = api.redis.pubsub()
    await observer.subscribe(keys.CALL_ACTIONS)  # sees each action published to the workers (none takes it here)
    await observer.get_message(timeout=1.0)  # the subscription's confirmation
    try:
        path, body, key = "/api/calls/c-live/whisper", {"text": "be brief"}, "retry-7f3c"
        first = await api.ask("sue", "POST", path, body, Idempotency_Key=key)
        assert first[0] == 504, first[1]  # audited and sent; no worker took it within the wait
        again = await asyncio.gather(*(api.ask("sue", "POST", p, body, Idempotency_Key=key)
                                       for p in (path, "/api/v1/calls/c-live/whisper")))  # fmt: skip
        for status, said, headers in again:
            assert (status, said) == first[:2] and headers["Idempotent-Replayed"] == "true"
        published = []
        while (message := await observer.get_message(timeout=0.5)) is not None:
            published.append(message)
        assert len(published) == 1, published  # taken once
        audit = await api.redis.xrange(keys.CALL_ACTIONS_AUDIT)
        assert [e["action"] for _, e in audit] == ["whisper"], audit
    finally:
        await observer.aclose()
    # the same key for another request: 422 naming the header; a key that is no key: 400
    status, said, _ = await api.ask("sue", "POST", path, {"text": "other"}, Idempotency_Key=key)
    assert (status, said["field"]) == (422, "Idempotency-Key"), said
    status, said, _ = await api.ask("sue", "POST", path, body, Idempotency_Key="x" * 256)
    assert (status, said["field"]) == (400, "Idempotency-Key"), said
    names = [name async for name in api.redis.scan_iter(match=keys.action_idempotency("*"))]
    assert len(names) == 1 and key not in names[0], names
    assert keys.IDEMPOTENCY_TTL_S - 60 < await api.redis.ttl(names[0]) <= keys.IDEMPOTENCY_TTL_S
    kept = await api.redis.get(names[0])
    assert json.loads(kept)["status"] == 504 and api.tokens["sue"] not in kept and key not in kept


async def test_a_page_of_a_listed_origin_may_send_the_key_and_read_the_version(api: Api) -> None:
    preflight = {"Origin": CRM, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type, idempotency-key"}  # fmt: skip
    async with api.http.options("/api/calls/c-live/whisper", headers=preflight) as r:
        assert r.status == 204 and "Idempotency-Key" in r.headers["Access-Control-Allow-Headers"], r.headers
    status, _, headers = await api.ask("vic", "GET", "/api/calls", Origin=CRM)
    exposed = headers["Access-Control-Expose-Headers"]
    assert status == 200 and "API-Version" in exposed and "Idempotent-Replayed" in exposed, headers
