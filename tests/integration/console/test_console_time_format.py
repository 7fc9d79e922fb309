"""One time format in the JSON the product writes: every moment ISO 8601 in UTC (``...T..Z``) or null, and its Unix
seconds, where kept, a number (or null) named ``<name>_unix``. Walked over every JSON answer of the API (live calls,
one call, ended calls, the export, the audits, the figures, both event streams) on the real app over a real
redis-server with calls written by a worker's real writer, the wallboard, and over ``callbridge calls --json``; and the
rollout's (its flags with the kill switch on and off, the audit, the console's panel with a guarded rollout's trend
points, marks and applied decision, the kill switch's answers) through the API, ``callbridge rollout show --json``
on Redis and ``callbridge rollout show|set --json --api``."""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis import asyncio as aioredis

from bridge import events as ev
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.dialplan import Dialplan
from bridge.rollout import records
from bridge.rollout.outcomes import epoch_of
from bridge.rollout.store import RolloutStore
from bridge.store.calls import CallStore, StoreTuning
from bridge.supervisor.accounts import Users, add_token, add_user
from bridge.supervisor.api import ConsoleOptions, create_app

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(redis_server_binary() is None, reason="needs a redis-server binary"),
]
CANARY_PLAN = {"name": "canary", "match": ["5000"], "dialect": "rollout"}
CANARY = Dialplan.model_validate(CANARY_PLAN)
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


async def _guarded_rollout(redis_url: str) -> None:
    """A guarded rollout of canary as workers leave it: GA fails far more often than beta over 400 calls, and is
    rolled back (the decision applied to the flag, audited)."""
    client = aioredis.from_url(redis_url, decode_responses=True)
    rollouts = RolloutStore(client=client, specs={"canary": CANARY.rollout_spec})
    half = {"ga": 50.0, "beta": 50.0}
    await rollouts.set_flag("canary", {"weights": half}, "qa", "half on GA")
    engine, rng, t0 = records.engine(CANARY.rollout_spec), random.Random(3), time.time() - 400 * 120
    for i in range(400):
        variant, t = ("ga" if i % 2 else "beta"), t0 + 120 * i
        failed = rng.random() < (0.3 if variant == "ga" else 0.02)
        record = {"t": t, "started": t - 30, "call_id": f"call-{i}", "caller": f"caller-{i}", "variant": variant,
                  "epoch": epoch_of(half, False), "shares": {"ga": 0.5, "beta": 0.5},
                  "outcome": "connect_failure" if failed else "ok", "transferred": False, "abandoned": False,
                  "handle_time_s": 30.0, "greeting_ms": None if failed else 800 * math.exp(0.4 * rng.gauss(0, 1)),
                  "first_reply_ms": None, "cost_usd": None, "repeat": False, "disposition": None}  # fmt: skip
        await records.append(client, "canary", record)
        for decision in engine.feed(record):
            assert await records.apply_decision(rollouts, "canary", CANARY.rollout_spec, decision)
    await client.aclose()


async def _cli(*args: str) -> Any:
    """``callbridge ARGS``'s JSON."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def test_the_rollouts_answers_have_the_one_time_format(api: Any, tmp_path: Path) -> None:
    http, auth, redis_url = api
    await _guarded_rollout(redis_url)
    answers: dict[str, Any] = {}
    for kill in (True, False):  # the kill switch on (its holder's time), then off (none)
        async with http.put("/api/rollout/canary/kill", json={"kill": kill, "reason": "qa"}, headers=auth) as r:
            assert r.status == 200, await r.text()
            answers[f"kill {kill}"] = json.loads(await r.text())
        for path in ("/api/rollout", "/api/console/rollout"):
            async with http.get(path, headers=auth) as r:
                assert r.status == 200, path
                answers[f"{path} (kill {kill})"] = json.loads(await r.text())
    plans = tmp_path / "dialplans"
    plans.mkdir()
    (plans / "canary.yaml").write_text(json.dumps(CANARY_PLAN))
    answers["rollout show --json"] = await _cli("rollout", "show", "--json", "--redis-url", redis_url,
                                                "--dialplans", str(plans))  # fmt: skip
    token = tmp_path / "token"
    token.write_text(auth["Authorization"].removeprefix("Bearer "))
    remote = ("--json", "--api", str(http.make_url("")).rstrip("/"), "--token-file", str(token))
    answers["rollout set --kill --api"] = await _cli("rollout", "set", "canary", "--kill", "--reason", "qa", *remote)
    answers["rollout show --api"] = await _cli("rollout", "show", "canary", *remote)  # a flag held since then
    lift = ("rollout", "set", "canary", "--unkill", "--reason", "ok")
    answers["rollout set --unkill --api"] = await _cli(*lift, *remote)
    wrong = [w for where, body in answers.items() for w in moments(body, where)]
    assert not wrong, "\n".join(wrong)
    # the moments are there: the holder's time both ways, none once it is off; the chart's points and marks; the
    # decision's calls and its applying
    held = answers["kill True"]["flag"]
    assert ISO.fullmatch(held["kill_at"]) and held["kill_at_unix"] > 0, held
    assert (answers["kill False"]["flag"]["kill_at"], answers["kill False"]["flag"]["kill_at_unix"]) == (None, None)
    shown = answers["rollout show --api"]["dialplans"][0]["flag"]
    assert ISO.fullmatch(shown["kill_at"]) and shown["kill_at_unix"] > 0, shown
    assert answers["rollout set --unkill --api"]["flag"]["kill_at"] is None
    (card,) = answers["/api/console/rollout (kill False)"]["dialplans"]
    ga = card["experiment"]["estimates"]["ga"]
    points = ga["failure_rate"]["trend"]
    assert points and all(ISO.fullmatch(p["t"]) and p["t_unix"] > 0 for p in points), points
    assert ga["verdict"]["marks"] and all(ISO.fullmatch(m["t"]) for m in ga["verdict"]["marks"]), ga["verdict"]
    (decided,) = card["experiment"]["decisions"]
    assert ISO.fullmatch(decided["applied_at"]) and decided["applied_at_unix"] >= decided["t_unix"], decided
    local = answers["rollout show --json"]["dialplans"][0]
    assert local["experiment"]["estimates"]["ga"]["failure_rate"]["trend"][0]["t_unix"] == points[0]["t_unix"]


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
