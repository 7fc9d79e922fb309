"""The lock-out attempt from many addresses, against a real ``serve`` with accounts: wrong passwords for ``adam`` from
twelve addresses (each its own 127.0.0.x) put the account past its limit, yet the right password from an address
that has not failed gets in; an address that failed for it waits (429); a password that is not a string is a 400,
counted for its address (its limit reached, 429); an admin clears the account (``callbridge users unlock``) and an
address (``POST /api/signin/unlock``), and both get in."""

from __future__ import annotations

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


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[Node, str]]:
    users = add_user(add_user(Users(), "adam", "supervisor", ADAM), ADMIN[0], "admin", ADMIN[1])
    users, admin_token = add_token(users, ADMIN[0])
    save_users(tmp_path / "users.yaml", users)
    settings = {"users_file": str(tmp_path / "users.yaml"), "http_signin_failures": LIMIT,
                "http_signin_window_s": 600}  # fmt: skip
    async with serve_node(tmp_path, settings, {}) as node:
        yield node, admin_token


async def sign_in(node: Node, source: str, name: Any, password: Any) -> tuple[int, dict[str, Any]]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.post(f"{node.url}/auth/signin", json={"name": name, "password": password}) as r,
    ):
        return r.status, await r.json()


async def test_failures_from_many_addresses_never_lock_out_a_client_that_has_not_failed(
    node: tuple[Node, str],
) -> None:
    serve, admin_token = node
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
