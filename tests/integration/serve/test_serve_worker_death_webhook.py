"""A worker killed mid-call (SIGKILL) still ends its call in exactly one signed ``call.ended`` (issue 62 item 9):
a real `callbridge serve` on Redis and the emulator, a real SIP call (the pjsua2 softphone), and a real HTTP endpoint
that verifies every signature (``standardwebhooks``) and every body against docs/webhooks.schema.json. The pool
closes the dead worker's call (bridge/serve/lost.py) and queues its ``call.ended`` after the worker's
``call.started``, in the call's chain (``seq`` 2), saying the worker died; the restarted worker's next call ends
normally, and nothing more comes for the killed one."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from _webhooks import Receiver
from jsonschema import Draft202012Validator
from test_serve_operable import api, caller_wav, softphone, stop_serve, wait_healthy
from test_serve_stop_in_outage import _serve

from bridge.devkit.ports import free_port
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.emulator import EmulatorServer
from bridge.store import keys
from bridge.store.record import RECORD_FIELDS, iso
from bridge.store.reportfile import read_reports
from bridge.webhooks import queue
from bridge.webhooks.signing import new_secret

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary")
REPORT_SCHEMA = Path(__file__).resolve().parents[3] / "docs" / "report.schema.json"
REPORT = Draft202012Validator(json.loads(REPORT_SCHEMA.read_text()))


def ended_of(received: list, call_id: str) -> list:  # type: ignore[type-arg]
    return [r for r in received if r.body["type"] == "call.ended" and r.body["data"]["call_id"] == call_id]


@pytest.mark.timeout(240)
async def test_a_worker_killed_mid_call_sends_one_call_ended_after_its_call_started(tmp_path: Path) -> None:
    secret = new_secret()
    (tmp_path / "whsec").write_text(secret + "\n")
    hook = await Receiver(secret).start()
    log = tmp_path / "serve.log"
    env = {"CALLBRIDGE_WEBHOOK_URL": hook.url, "CALLBRIDGE_WEBHOOK_SECRET_FILE": str(tmp_path / "whsec")}
    play = caller_wav(tmp_path / "c.wav")
    try:
        with EmbeddedRedis() as redis:
            client = aioredis.from_url(redis.url, decode_responses=True)
            async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
                serve = _serve(tmp_path, redis, emulator, free_port(), log, env)
                try:
                    await wait_healthy(serve)
                    _, health = await api("/healthz", serve)
                    old_pid = health["workers"][0]["pid"]
                    call = asyncio.create_task(softphone(serve, "1000", play, seconds=25.0))
                    (started,) = await hook.wait_for(lambda r: any(x.body["type"] == "call.started" for x in r), 30)
                    call_id = started.body["data"]["call_id"]
                    deadline = time.monotonic() + 10
                    while not await client.hget(keys.call(call_id), "sip_dialog"):  # the pool can BYE the caller
                        assert time.monotonic() < deadline, await client.hgetall(keys.call(call_id))
                        await asyncio.sleep(0.05)
                    os.kill(old_pid, signal.SIGKILL)  # mid-call
                    phone = await call
                    await hook.wait_for(lambda r: len(ended_of(r, call_id)) >= 1, 30)

                    # the restarted worker's next call ends as any call does; by then the killed one's are all in
                    await wait_healthy(serve)
                    again = await softphone(serve, "1000", play, seconds=3.0)
                    assert again["answered"], again
                    await hook.wait_for(lambda r: len([x for x in r if x.body["type"] == "call.ended"]) >= 2, 60)
                    pending, _ = await queue.backlog(client, time.time())
                    state = await client.hgetall(keys.call(call_id))
                    _, ended_rows = await api("/api/calls/ended?per_page=100", serve)
                finally:
                    stop_serve(serve.proc)
            await client.aclose()
    finally:
        await hook.stop()
    assert phone["answered"] and phone["hangup_by"] == "remote", phone  # the pool's BYE for the dead worker
    assert all(r.verified for r in hook.received) and pending == 0
    (ended,) = ended_of(hook.received, call_id)  # exactly one, and after its call.started
    assert hook.received.index(started) < hook.received.index(ended)
    data = ended.body["data"]
    assert (data["seq"], started.body["data"]["seq"]) == (2, 1)
    assert (data["end_reason"], data["ended_by"], data["outcome"], data["worker_exit"]) == (
        "worker died", "fault", "failed", "SIGKILL",
    )  # fmt: skip
    (line,) = [r for r in read_reports(serve.reports) if r["call_id"] == call_id]
    assert line["worker_died"] and data["sip_call_id"] == line["sip_call_id"] == started.body["data"]["sip_call_id"]
    assert data["sip_call_id"] and data["answered_at"] == started.body["data"]["answered_at"]
    assert data["duration_s"] > 0 and data["dialplan"] == "support" and data["variant"] == line["variant"]
    assert [r.body["data"]["call_id"] for r in hook.received].count(call_id) == 2  # started, ended: nothing else
    # every record of a call, the dead worker's too: the same fields, typed as docs/report.schema.json says
    lines = read_reports(serve.reports)
    (next_ended,) = [r for r in hook.received if r.body["type"] == "call.ended" and r is not ended]
    (next_line,) = [r for r in lines if r["call_id"] == next_ended.body["data"]["call_id"]]
    for record, body in ((line, data), (next_line, next_ended.body["data"])):
        assert [f"{e.json_path}: {e.message}" for e in REPORT.iter_errors(record)] == [], record
        same = [f for f in RECORD_FIELDS if f not in ("caller", "original_called")]  # a webhook's: its endpoint's form
        assert {f: record[f] for f in same} == {f: body[f] for f in same}
    rows = {row["call_id"]: row for row in ended_rows["calls"]}  # as a supervisor reads them: numbers as stored
    for record in (line, next_line):
        row = rows[record["call_id"]]
        assert {f: row[f] for f in RECORD_FIELDS} == {f: record[f] for f in RECORD_FIELDS} | {
            "session_ids": record["session_ids"][-1:]  # the latest its hash kept
        }
        assert (iso(row["started_at_unix"]), iso(row["ended_at_unix"])) == (row["started_at"], row["ended_at"])
    assert line["started_at"] < line["answered_at"] < line["ended_at"] and line["caller"] == next_line["caller"] != ""
    assert next_line["session_ids"] and all(s.startswith("sess_") for s in next_line["session_ids"])
    assert line["session_ids"] and line["session_ids"][0].startswith("sess_")  # the latest its hash kept
    logged = log.read_text()
    for session in next_line["session_ids"]:  # when it opened, and in the call's last line
        assert f"model session {session} opened" in logged
    assert f"agent turns; model session(s) {', '.join(next_line['session_ids'])}" in logged
    assert state["webhook_seq"] == "1" and state["end_reason"] == "worker died"  # the chain, as the worker left it
