"""One time format in the JSON the product writes: every moment ISO 8601 in UTC (``...T..Z``) or null, and its Unix
seconds, where kept, a number (or null) named ``<name>_unix``. Walked over every JSON answer of the API (live calls,
one call, ended calls, the export, the audits, the figures, both event streams) on the real app over a real
redis-server with calls written by a worker's real writer, the wallboard, and over ``callbridge calls --json``. The
rollout's answers (its flag's ``kill_at``, its experiment's points) are not walked yet."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis import asyncio as aioredis

from bridge import events as ev
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.dialplan import Dialplan
from bridge.rollout.store import RolloutStore
from bridge.store.calls import CallStore, StoreTuning
from bridge.supervisor.accounts import Users, add_token, add_user
from bridge.supervisor.api import ConsoleOptions, create_app

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(redis_server_binary() is None, reason="needs a redis-server binary"),
]
CANARY = Dialplan.model_validate({"name": "canary", "match": ["5000"], "dialect": "rollout"})
DESK = Dialplan.model_validate({"name": "desk", "match": ["4000"], "dialect": "ga", "transfer_target": "sip:d@pbx"})
ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")
MOMENT = re.compile(r"(.+_at|at|t|now|timestamp|since)")
OPAQUE = {"data", "fields"}  # stored fields as they came, not the product's own


def moments(value: Any, where: str = "") -> list[str]:
    """Where ``value`` departs from the one format (empty: nowhere)."""
    wrong: list[str] = []
    if isinstance(value, list):
        for i, item in enumerate(value):
            wrong += moments(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}"
            if key in OPAQUE:
                continue
            if key.endswith("_unix"):
                if item is not None and (isinstance(item, bool) or not isinstance(item, int | float)):
                    wrong.append(f"{here}: {item!r} is not a number")
            elif MOMENT.fullmatch(key) and not isinstance(item, dict | list | bool):
                if item is not None and not (isinstance(item, str) and ISO.fullmatch(item)):
                    wrong.append(f"{here}: {item!r} is not ISO 8601 UTC")
            else:
                wrong += moments(item, here)
    return wrong


@pytest.fixture
async def api() -> AsyncIterator[tuple[TestClient[Any, Any], dict[str, str], str]]:
    with EmbeddedRedis() as server:
        store = CallStore(server.url, worker="w-times", tuning=StoreTuning(reap_interval_s=None))
        await store.start()
        ended = store.listener_for("c-ended", caller="+15550000001", called="4000", dialplan="desk")
        for report in (ev.Ringing("+15550000001", "4000", "desk", "ga"), ev.Answered(), ev.AgentSaid("Hi.", "i1"),
                       ev.CallEnded("bye", ev.CallOutcome.COMPLETED, ev.EndedBy.CALLER)):  # fmt: skip
            ended(report)
        live = store.listener_for("c-live", caller="+15550000002", called="4000", dialplan="desk")
        for report in (ev.Ringing("+15550000002", "4000", "desk", "ga"), ev.Answered(), ev.CallerSaid("Hello", "i2")):
            live(report)
        assert await store.flush()
        users = add_user(Users(), "ada", "admin", "ada-admin-pass-1")
        users, token = add_token(users, "ada")
        client = aioredis.from_url(server.url, decode_responses=True)
        rollouts = RolloutStore(client=client, specs={"canary": CANARY.rollout_spec})
        options = ConsoleOptions(users=users, listen_key=b"k" * 32)
        app = create_app(token=None, redis=client, rollouts=rollouts, dialplans=[CANARY, DESK], options=options)
        try:
            async with TestClient(TestServer(app)) as http:
                yield http, {"Authorization": f"Bearer {token}"}, server.url
        finally:
            await client.aclose()
            await store.close()


async def _events(http: TestClient[Any, Any], auth: dict[str, str], path: str, names: set[str]) -> list[Any]:
    """The data of a stream's events until each of ``names`` came once."""
    got: list[Any] = []
    async with http.get(path, headers=auth) as r:
        assert r.status == 200
        name = ""
        while names:
            line = (await asyncio.wait_for(r.content.readline(), 10)).decode().rstrip("\n")
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                got.append({name: json.loads(line.removeprefix("data: "))})
                names.discard(name)
    return got


async def test_every_json_the_product_writes_has_the_one_time_format(api: Any) -> None:
    http, auth, redis_url = api
    async with http.post("/api/calls/c-live/whisper", json={"text": "be brief"}, headers=auth) as r:
        assert r.status == 504  # audited; no worker here
    answers: dict[str, Any] = {}
    for path in ("/api/calls", "/api/calls/c-live", "/api/calls/c-ended", "/api/calls/ended",
                 f"/api/calls/ended?since={time.time() - 600:.0f}", "/api/calls/c-ended/export",
                 "/api/actions/audit", "/api/listen/audit", "/api/plans/stats", "/api/wallboard"):  # fmt: skip
        async with http.get(path, headers=auth) as r:
            assert r.status == 200, path
            answers[path] = json.loads(await r.text())
    answers["live calls"] = await _events(http, auth, "/api/live/calls", {"snapshot"})
    answers["one call"] = await _events(http, auth, "/api/live/calls/c-live", {"call", "entries", "actions"})
    for args in (["--json"], ["c-live", "--json"]):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "calls", *args, "--redis-url", redis_url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        answers[f"callbridge calls {' '.join(args)}"] = json.loads(out)
    wrong = [w for where, body in answers.items() for w in moments(body, where)]
    assert not wrong, "\n".join(wrong)
    # the moments are there, not dropped: a live call's start both ways, an entry's time, the audit's
    row = answers["/api/calls"]["calls"][0]
    assert ISO.fullmatch(row["started_at"]) and isinstance(row["started_at_unix"], float), row
    detail = answers["/api/calls/c-live"]
    assert detail["call"]["ended_at"] is None or "ended_at" not in detail["call"], detail["call"]
    assert all(ISO.fullmatch(e["t"]) and e["t_unix"] > 0 for e in detail["events"]), detail["events"]
    assert ISO.fullmatch(answers["/api/actions/audit"]["audit"][0]["at"])
    wall = answers["/api/wallboard"]
    assert ISO.fullmatch(wall["at"]) and wall["at_unix"] > 0, wall
    snapshot = next(e["snapshot"] for e in answers["live calls"] if "snapshot" in e)
    assert ISO.fullmatch(snapshot["now"]) and snapshot["now_unix"] > 0, snapshot
