"""Names and cursors the console's API is handed are not taken for what they imitate, with accounts and a real Redis:
a kill switch set from the command line (``callbridge rollout set --kill``, holder ``cli:<who>``) is not lifted by a
supervisor's account named like that OS user (403 naming the holder; an admin lifts it); and a forged cursor of
``/api/calls/ended`` (NaN, Infinity, a number too large for a float) is a 400 naming the cursor, not a 503."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis import asyncio as aioredis

from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.dialplan import Dialplan
from bridge.rollout.store import RolloutStore
from bridge.serve import rollout_cli
from bridge.supervisor.accounts import Users, add_token, add_user
from bridge.supervisor.api import ConsoleOptions, create_app

pytestmark = pytest.mark.integration
PLAN = {"name": "canary", "match": ["5000"], "dialect": "rollout"}
CANARY = Dialplan.model_validate(PLAN)
ACCOUNTS = (("root", "supervisor", "root-supervises-1"), ("ada", "admin", "ada-admin-pass-1"))


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], dict[str, dict[str, str]], str]]:
    """The console's app on a real Redis with a supervisor named ``root`` and an admin; their bearer headers; the
    Redis URL."""
    if redis_server_binary() is None:
        pytest.skip("needs a redis-server binary")
    with EmbeddedRedis() as server:
        users, tokens = Users(), {}
        for name, role, password in ACCOUNTS:
            users = add_user(users, name, role, password)
            users, tokens[name] = add_token(users, name)
        client = aioredis.from_url(server.url, decode_responses=True)
        rollouts = RolloutStore(client=client, specs={"canary": CANARY.rollout_spec})  # type: ignore[arg-type]
        app = create_app(token=None, redis=client, rollouts=rollouts, dialplans=[CANARY],
                         options=ConsoleOptions(users=users))  # fmt: skip
        async with TestClient(TestServer(app)) as http:
            yield http, {n: {"Authorization": f"Bearer {t}"} for n, t in tokens.items()}, server.url
        await client.aclose()


async def test_an_account_named_like_the_os_user_does_not_hold_the_command_lines_kill_switch(
    console: tuple[TestClient[Any, Any], dict[str, dict[str, str]], str], tmp_path: Path
) -> None:
    http, auth, url = console
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "canary.yaml").write_text(json.dumps(PLAN))
    common = ["--dialplans", str(tmp_path / "plans"), "--redis-url", url]
    argv = ["set", "canary", "--kill", "--who", "root", "--reason", "stop the candidate", *common]
    assert await asyncio.to_thread(rollout_cli.main, argv) == 0
    lift = {"kill": False, "reason": "I am root"}
    r = await http.put("/api/rollout/canary/kill", json=lift, headers=auth["root"])
    body = await r.json()
    assert r.status == 403 and body["held_by"]["by"] == "cli:root" and body["needs"] == "admin", body
    flag = await (await http.get("/api/rollout", headers=auth["ada"])).json()
    assert flag["flags"]["canary"]["kill"] is True
    r = await http.put(
        "/api/rollout/canary/kill", json={"kill": False, "reason": "an admin lifts it"}, headers=auth["ada"]
    )
    assert r.status == 200 and (await r.json())["flag"]["kill"] is False


def cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


async def test_a_forged_cursor_is_a_400_naming_the_cursor(
    console: tuple[TestClient[Any, Any], dict[str, dict[str, str]], str],
) -> None:
    http, auth, _ = console
    for raw in ('[NaN,""]', '[Infinity,""]', '[-Infinity,"c-1"]', '[1e999,""]', "[1" + "0" * 400 + ',""]'):
        r = await http.get(f"/api/calls/ended?cursor={cursor(raw)}", headers=auth["ada"])
        body = await r.json()
        assert (r.status, body.get("field")) == (400, "cursor"), (raw, body)
        assert body["error"] == "cursor: not a cursor this API gave", body
    good = cursor(json.dumps([1700000000.5, ""]))
    r = await http.get(f"/api/calls/ended?cursor={good}", headers=auth["ada"])
    assert r.status == 200, await r.text()
