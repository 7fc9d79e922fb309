"""The lock-out attempt from many addresses, against a real ``serve`` with accounts: wrong passwords for ``adam`` from
twelve addresses (each its own 127.0.0.x) put the account past its limit, yet the right password from an address
that has not failed gets in; an address that failed for it waits (429); a password that is not a string is a 400,
counted for its address (its limit reached, 429); an admin clears the account (``callbridge users unlock``) and an
address (``POST /api/signin/unlock``), and both get in. Ten failed sign-ins from one address never lock out a valid
API token from it (a wrong one is refused there); each token has its rate (``http_api_requests_per_minute``): past it
429 with ``Retry-After``, another token unaffected, and the token's next request once that time has passed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from _http_node import Node, serve_node

from bridge.supervisor.accounts import Users, add_token, add_user, save_users

LIMIT = 10
ADAM = "adam-right-password-1"
ADMIN = ("ada", "ada-admin-password-2")
RATE = 30  # requests a minute per token: one every 2 s


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[Node, str, str]]:
    users = add_user(add_user(Users(), "adam", "supervisor", ADAM), ADMIN[0], "admin", ADMIN[1])
    users, admin_token = add_token(users, ADMIN[0])
    users, adam_token = add_token(users, "adam")
    save_users(tmp_path / "users.yaml", users)
    settings = {"users_file": str(tmp_path / "users.yaml"), "http_signin_failures": LIMIT,
                "http_signin_window_s": 600, "http_api_requests_per_minute": RATE}  # fmt: skip
    async with serve_node(tmp_path, settings, {}) as node:
        yield node, admin_token, adam_token


async def sign_in(node: Node, source: str, name: Any, password: Any) -> tuple[int, dict[str, Any]]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.post(f"{node.url}/auth/signin", json={"name": name, "password": password}) as r,
    ):
        return r.status, await r.json()


async def test_failures_from_many_addresses_never_lock_out_a_client_that_has_not_failed(
    node: tuple[Node, str, str],
) -> None:
    serve, admin_token, _ = node
    for i in range(12):  # the attacker: one wrong password from each of twelve addresses
        assert (await sign_in(serve, f"127.0.0.{10 + i}", "adam", f"guess-{i}"))[0] == 401
    # the account is past its limit: an address that failed for it waits, even with the right password
    status, said = await sign_in(serve, "127.0.0.10", "adam", ADAM)
    assert status == 429 and said == {"error": "too many failed sign-ins: try again later"}
    # the right password from an address that has not failed: in
    status, session = await sign_in(serve, "127.0.0.50", "adam", ADAM)
    assert status == 200 and session["name"] == "adam", session

    # a password that is not a string: 400 before any hash, counted for its address
    for _ in range(LIMIT):
        status, said = await sign_in(serve, "127.0.0.60", "adam", {"$ne": ""})
        assert status == 400 and said == {"error": "sign-in needs the name and password as JSON strings"}
    status, _ = await sign_in(serve, "127.0.0.60", "adam", ADAM)
    assert status == 429  # the address used up its limit

    # an admin clears the account (the control socket) and the address (the API): both get in
    status, said_cli = await serve.cli("users", "unlock", "adam")
    assert status == 0 and "sign-in failures of account adam cleared by" in said_cli, said_cli
    assert (await sign_in(serve, "127.0.0.10", "adam", ADAM))[0] == 200
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{serve.url}/api/signin/unlock", json={"source": "127.0.0.60"}, headers=headers) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["unlocked"] == f"sign-in failures of source 127.0.0.60 cleared by {ADMIN[0]}"
        async with http.post(f"{serve.url}/api/signin/unlock", json={"source": "not-an-address"}, headers=headers) as r:
            assert r.status == 400 and (await r.json())["error"] == "source: not an address"
    assert (await sign_in(serve, "127.0.0.60", "adam", ADAM))[0] == 200
    log = serve.log.read_text()
    assert "console: sign-in failures of source 127.0.0.60 cleared by ada" in log
    assert ADAM not in log and ADMIN[1] not in log


async def api_get(node: Node, source: str, token: str, path: str = "/api/openapi.json") -> aiohttp.ClientResponse:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(f"{node.url}{path}", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        await r.read()
        return r


async def test_failed_sign_ins_never_lock_out_a_valid_token_and_each_token_has_its_rate(
    node: tuple[Node, str, str],
) -> None:
    serve, admin_token, adam_token = node
    shared = "127.0.0.80"  # a CRM and the agents' browsers behind one outbound address
    for i in range(LIMIT):
        assert (await sign_in(serve, shared, "adam", f"mistyped-{i}"))[0] == 401
    assert (await sign_in(serve, shared, "adam", ADAM))[0] == 429  # the sign-ins from there wait
    r = await api_get(serve, shared, "a-wrong-token")
    assert r.status == 429 and int(r.headers["Retry-After"]) > 0  # and so do wrong tokens
    r = await api_get(serve, shared, adam_token)
    assert r.status == 200  # the CRM's valid token is never locked out by its address
    r = await api_get(serve, shared, adam_token, "/healthz")
    assert r.status == 200 and "workers" in await r.json()  # nor is /healthz's detail

    answers = await asyncio.gather(*(api_get(serve, shared, adam_token) for _ in range(RATE + 5)))
    statuses = [a.status for a in answers]
    assert RATE - 2 <= statuses.count(200) <= RATE and statuses.count(429) >= 5, statuses  # 2 taken above
    refused = next(a for a in answers if a.status == 429)
    body = await refused.json()
    assert body["error"].startswith(f"rate limit: {RATE} requests a minute per token or session; try again in ")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60 // RATE, refused.headers
    assert (await api_get(serve, shared, admin_token)).status == 200  # another token has its own
    deadline = time.monotonic() + 10
    while (r := await api_get(serve, shared, adam_token)).status == 429:  # a request fits again once it refilled
        assert time.monotonic() < deadline
        await asyncio.sleep(int(r.headers["Retry-After"]))
    assert r.status == 200
