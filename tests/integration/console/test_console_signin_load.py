"""Sign-in under load, on a real ``serve`` over real HTTP: an account removed with ``callbridge users remove`` is
signed out, and its API token opens nothing, while ``serve`` runs; an account whose role changed is signed out and
its token opens the new role; then 40 concurrent wrong passwords get at most the limit of 401s, the rest 429."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from _console_helpers import Stack, console_stack, needs_browser_stack

from bridge.supervisor.accounts import Users, add_token, add_user, save_users
from bridge.supervisor.users_watch import RELOAD_S

pytestmark = needs_browser_stack
PASSWORDS = {"sam": "supervisor-pass-2", "vera": "supervisor-pass-3", "ada": "admin-pass-33"}
LIMIT = 5
BURST = 40


async def sign_in(http: aiohttp.ClientSession, stack: Stack, name: str, password: str) -> tuple[int, Any]:
    async with http.post(f"{stack.url}auth/signin", json={"name": name, "password": password}) as r:
        return r.status, await r.json()


async def users_cli(path: Path, *args: str, stdin: bytes = b"") -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "users", *args, "--file", str(path),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate(stdin)
    assert proc.returncode == 0, err


async def test_removed_accounts_are_signed_out_and_a_burst_of_wrong_passwords_is_limited(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    users = Users()
    for name, role in (("sam", "supervisor"), ("vera", "supervisor"), ("ada", "admin")):
        users = add_user(users, name, role, PASSWORDS[name])
    users, sam_token = add_token(users, "sam")
    users, vera_token = add_token(users, "vera")
    save_users(path, users)
    settings = {"users_file": str(path), "http_signin_failures": LIMIT, "http_signin_window_s": 600}
    async with console_stack(tmp_path, settings=settings) as stack:
        sam_jar, vera_jar = aiohttp.CookieJar(unsafe=True), aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=sam_jar) as sam, aiohttp.ClientSession(cookie_jar=vera_jar) as vera:
            assert (await sign_in(sam, stack, "sam", PASSWORDS["sam"]))[0] == 200
            assert (await sign_in(vera, stack, "vera", PASSWORDS["vera"]))[0] == 200
            for http in (sam, vera):
                async with http.get(f"{stack.url}api/calls") as r:
                    assert r.status == 200
            assert (await stack.get("/api/calls", token=sam_token))[0] == 200

            # -- sam removed, vera made a viewer, while serve runs
            await users_cli(path, "remove", "sam")
            await users_cli(path, "add", "vera", "--role", "viewer", "--password-stdin", stdin=b"viewer-pass-44\n")
            changed = time.monotonic()

            async def signed_out() -> bool:
                async with sam.get(f"{stack.url}api/calls") as r, vera.get(f"{stack.url}api/calls") as v:
                    return r.status == 401 and v.status == 401

            while not await signed_out():
                assert time.monotonic() - changed < 60, "a removed account's session outlived a minute"
                await asyncio.sleep(0.5)
            assert time.monotonic() - changed < RELOAD_S + 30
            assert (await stack.get("/api/calls", token=sam_token))[0] == 401  # the removed account's token
            headers = {"Authorization": f"Bearer {vera_token}"}
            async with aiohttp.ClientSession() as http:
                async with http.put(f"{stack.url}api/rollout/x", json={"reason": "y"}, headers=headers) as r:
                    assert r.status == 403 and "(viewer here)" in (await r.json())["error"]  # the new role
                # -- 40 wrong passwords at once: at most the limit are answered 401, the rest 429
                statuses = await asyncio.gather(
                    *(sign_in(http, stack, "ada", f"wrong-password-{i}") for i in range(BURST))
                )
        codes = sorted(status for status, _ in statuses)
        assert codes.count(401) <= LIMIT and codes.count(401) + codes.count(429) == BURST, codes
        log = stack.log.read_text()
        assert "sam signed out: the account was removed or its role changed" in log
        assert not any(p in log for p in PASSWORDS.values())
