"""The console behind a TLS-terminating proxy (aiohttp's test server, a real Redis): from a trusted proxy address,
``X-Forwarded-Proto: https`` makes the session cookie ``Secure`` and the Origin check accept the proxy's https origin,
and the sign-in limits count the forwarded client's address; the same headers from an untrusted address change
nothing. ``/metrics`` behind its token."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis import asyncio as aioredis

from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.supervisor.accounts import Users, add_user
from bridge.supervisor.api import ConsoleOptions, create_app
from bridge.supervisor.auth import COOKIE, FailureLimits

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="needs a redis-server binary")
SAM = ("sam", "sam-supervises-9")
PROXY = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "console.example", "X-Forwarded-For": "203.0.113.5"}
ORIGIN = "https://console.example"


@pytest.fixture(scope="module")
def redis_url() -> AsyncIterator[str]:
    with EmbeddedRedis() as server:
        yield server.url


async def client_for(
    redis_url: str, trusted: list[str], metrics_token: str | None = None
) -> TestClient[object, object]:
    users = add_user(Users(), SAM[0], "supervisor", SAM[1])
    limits = FailureLimits(3, 60.0)
    options = ConsoleOptions(
        users=users, refused_delay_s=0.01, limits=limits, trusted_proxies=trusted, metrics_token=metrics_token
    )
    redis = aioredis.from_url(redis_url, decode_responses=True)
    app = create_app(token=None, redis=redis, rollouts=None, options=options)
    client: TestClient[object, object] = TestClient(TestServer(app))
    await client.start_server()
    return client


async def sign_in(client: TestClient[object, object]) -> tuple[str, str, str]:
    """(the Set-Cookie header, the session id, the CSRF token), signed in through the proxy's headers."""
    r = await client.post("/auth/signin", json={"name": SAM[0], "password": SAM[1]}, headers=PROXY)
    assert r.status == 200, await r.text()
    return r.headers["Set-Cookie"], r.cookies[COOKIE].value, (await r.json())["csrf"]


async def hang_up(client: TestClient[object, object], session: str, csrf: str, origin: str) -> tuple[int, str]:
    headers = {**PROXY, "Origin": origin, "X-CSRF-Token": csrf, "Cookie": f"{COOKIE}={session}"}
    r = await client.post("/api/calls/no-such-call/hangup", headers=headers)
    return r.status, (await r.json())["error"]


async def test_a_trusted_proxy_makes_the_cookie_secure_and_the_origin_https(redis_url: str) -> None:
    client = await client_for(redis_url, ["127.0.0.1/32"])
    try:
        set_cookie, session, csrf = await sign_in(client)
        assert "Secure" in set_cookie and "HttpOnly" in set_cookie
        # past the session, CSRF and Origin checks: the action's own answer (there is no such call)
        assert await hang_up(client, session, csrf, ORIGIN) == (404, "no such call")
        status, error = await hang_up(client, session, csrf, "http://console.example")
        assert (status, error) == (403, "forbidden: the request's Origin is not this server's")
        # the limits count the forwarded client: three failures lock 203.0.113.5 out, not another client
        wrong = {"name": "nobody", "password": "wrong-password"}
        for _ in range(3):
            assert (await client.post("/auth/signin", json=wrong, headers=PROXY)).status == 401
        r = await client.post("/auth/signin", json=wrong, headers=PROXY)
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
        other = {**PROXY, "X-Forwarded-For": "203.0.113.6"}  # another client, another account: not limited
        assert (await client.post("/auth/signin", json={**wrong, "name": "somebody"}, headers=other)).status == 401
    finally:
        await client.close()


async def test_the_same_headers_from_an_untrusted_address_change_nothing(redis_url: str) -> None:
    client = await client_for(redis_url, ["10.0.0.0/8"])
    try:
        set_cookie, session, csrf = await sign_in(client)
        assert "Secure" not in set_cookie
        status, error = await hang_up(client, session, csrf, ORIGIN)
        assert (status, error) == (403, "forbidden: the request's Origin is not this server's")
        # the forwarded address is not believed either: the failures count against the proxy's own address
        for i, client_ip in enumerate(("203.0.113.7", "203.0.113.8", "203.0.113.9")):
            wrong = {"name": f"nobody{i}", "password": "wrong-password"}  # other accounts each time
            r = await client.post("/auth/signin", json=wrong, headers={**PROXY, "X-Forwarded-For": client_ip})
            assert r.status == 401
        wrong = {"name": "nobody9", "password": "wrong-password"}
        r = await client.post("/auth/signin", json=wrong, headers={**PROXY, "X-Forwarded-For": "203.0.113.10"})
        assert r.status == 429
    finally:
        await client.close()


async def test_metrics_behind_a_token(redis_url: str) -> None:
    client = await client_for(redis_url, [], metrics_token="scrape-me-please")
    try:
        assert (await client.get("/metrics")).status == 401
        assert (await client.get("/metrics", headers={"Authorization": "Bearer nope"})).status == 401
        r = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me-please"})
        assert r.status == 200 and "callbridge_" in await r.text()
    finally:
        await client.close()
