"""Signed webhooks from a real `callbridge serve`: real SIP calls (the pjsua2 softphone) on the emulator, Redis, and
a real HTTP endpoint (aiohttp) that verifies every signature with the reference verifier (``standardwebhooks``).

* a call's ``call.started`` and ``call.ended`` arrive signed (the secret from ``CALLBRIDGE_WEBHOOK_SECRET_FILE``),
  ``call.ended`` with both sides' words and the report line's call id; the endpoint's 503 is answered by the same
  ``webhook-id`` again within a minute; the secret is in no log and nowhere in Redis;
* a dialplan's own endpoint, down while `serve` restarts, still gets the event afterwards, with the same id, and
  with the post-call summary, disposition and fields and the compliance checks of the call's report.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
import yaml
from _webhooks import Receiver
from jsonschema import Draft202012Validator
from test_serve_operable import ROOT, caller_wav, softphone, stop_serve, wait_healthy
from test_serve_stop_in_outage import _serve

from bridge.devkit.ports import free_port
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.emulator import EmulatorServer
from bridge.store import keys
from bridge.store.record import RECORD_FIELDS
from bridge.store.reportfile import read_reports
from bridge.webhooks import queue
from bridge.webhooks.signing import new_secret

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary")
REPORT = Draft202012Validator(json.loads((ROOT / "docs" / "report.schema.json").read_text()))


@pytest.mark.timeout(180)
async def test_call_ended_arrives_signed_with_the_transcript_and_a_503_is_sent_again(tmp_path: Path) -> None:
    secret = new_secret()
    (tmp_path / "whsec").write_text(secret + "\n")
    hook = await Receiver(secret, answer=lambda n: 503 if n == 0 else 200).start()
    log = tmp_path / "serve.log"
    env = {"CALLBRIDGE_WEBHOOK_URL": hook.url, "CALLBRIDGE_WEBHOOK_SECRET_FILE": str(tmp_path / "whsec")}
    try:
        with EmbeddedRedis() as redis:
            async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
                serve = _serve(tmp_path, redis, emulator, free_port(), log, env)
                try:
                    await wait_healthy(serve)
                    phone = await softphone(serve, "1000", caller_wav(tmp_path / "c.wav"), seconds=8.0)
                    assert phone["answered"], phone
                    await hook.wait_for(lambda r: any(x.body["type"] == "call.ended" for x in r), 30)
                    await hook.wait_for(lambda r: any(x.answered == 200 and x.body["type"] == "call.started"
                                                      for x in r), 60)  # fmt: skip
                    metrics = await _get(f"{serve.http}/metrics")
                    dump = await _dump(redis.url)
                finally:
                    stop_serve(serve.proc)
    finally:
        await hook.stop()
    (report,) = read_reports(serve.reports)
    assert all(r.verified for r in hook.received), [(r.id, r.verified) for r in hook.received]
    (ended,) = [r for r in hook.of_type("call.ended")]
    data = ended.body["data"]
    assert data["call_id"] == report["call_id"] and data["dialplan"] == "support"
    assert data["variant"] == report["variant"] and data["model"] == report["model"]
    speakers = {t["speaker"] for t in data["transcript"]}
    assert speakers == {"caller", "agent"}, data["transcript"]
    agent_words = [t["text"] for t in data["transcript"] if t["speaker"] == "agent"]
    assert agent_words == report["agent_transcript"]
    assert data["end_reason"] == report["end_reason"] and data["ended_by"] == "caller"
    assert data["outcome"] == "completed" and data["duration_s"] > 3
    assert data["started_at"] < data["answered_at"] < data["ended_at"]
    assert data["cost"]["input_tokens"] == report["usage"]["input_tokens"]
    assert "summary" in data and "disposition" in data and "fields" in data  # null unless the plan asks (post_call)
    assert data["caller"] == "softphone"  # the softphone calls by name: a name has no digits to mask (unit tests)
    first, *again = [r for r in hook.received if r.body["type"] == "call.started"]
    assert first.answered == 503 and again and again[0].id == first.id and again[0].answered == 200
    assert again[0].at - first.at < 60
    assert first.body["data"]["call_id"] == report["call_id"]
    assert 'callbridge_webhooks_delivered_total{endpoint="default"} 2.0' in metrics, metrics[-3000:]
    assert 'callbridge_webhooks_failed_total{endpoint="default",status="5xx"} 1.0' in metrics
    assert secret[6:] not in dump and secret[6:] not in log.read_text()
    assert "support" in dump  # Redis was read: the call's hash is there, the deliveries are gone once delivered


@pytest.mark.timeout(240)
async def test_a_plans_endpoint_down_while_serve_restarts_still_gets_the_event(tmp_path: Path) -> None:
    secret, port = new_secret(), free_port()
    plans = tmp_path / "dialplans"
    plans.mkdir()
    plan = yaml.safe_load((ROOT / "dialplans" / "support.yaml").read_text())
    plan["webhooks"] = [{"url": f"http://127.0.0.1:{port}/hook", "secret": {"env": "CRM_WEBHOOK_SECRET"},
                         "events": ["call.ended"], "caller": "masked", "name": "crm"}]  # fmt: skip
    plan["post_call"] = {"summary": True, "dispositions": ["resolved", "follow_up", "other"],
                         "fields": {"type": "object", "properties": {"reason": {"type": "string"}}}}  # fmt: skip
    plan["checks"] = {"never_say": ["guaranteed"], "max_dead_air_s": 30}
    (plans / "support.yaml").write_text(yaml.safe_dump(plan))
    log, env = tmp_path / "serve.log", {"CRM_WEBHOOK_SECRET": secret}
    with EmbeddedRedis() as redis:
        client = aioredis.from_url(redis.url, decode_responses=True)
        async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
            sip_port = free_port()
            serve = _serve(tmp_path, redis, emulator, sip_port, log, env, plans)
            try:
                await wait_healthy(serve)
                phone = await softphone(serve, "1000", caller_wav(tmp_path / "c.wav"), seconds=4.0)
                assert phone["answered"], phone
                deadline = time.monotonic() + 30
                while not (pending := await queue.listing(client, dead=False)) or not pending[0].attempts:
                    assert time.monotonic() < deadline, log.read_text()[-3000:]  # tried, and refused: nobody there
                    await asyncio.sleep(0.2)
            finally:
                stop_serve(serve.proc)
            (waiting,) = pending
            assert (waiting.endpoint, waiting.type) == ("support.crm", "call.ended")
            serve = _serve(tmp_path, redis, emulator, sip_port, log, env, plans)
            hook = await Receiver(secret, port=port).start()
            try:
                await wait_healthy(serve)
                (got,) = await hook.wait_for(lambda r: len(r) >= 1, 90)
                await asyncio.sleep(1.0)  # a second send would come now
                left = await client.hlen(keys.WEBHOOKS_DELIVERIES)
            finally:
                stop_serve(serve.proc)
                await hook.stop()
        await client.aclose()
    (report,) = read_reports(tmp_path / "calls.jsonl")
    assert got.verified and got.id == waiting.id and len(hook.received) == 1
    assert got.body["type"] == "call.ended" and got.body["data"]["call_id"] == report["call_id"]
    assert got.body["data"]["caller"] == "softphone"  # caller: masked (a name has no digits to mask)
    data, post = got.body["data"], report["post_call"]
    assert post["status"] == "ok" and post["summary"], post  # the model's summary, from the call's transcript
    assert (data["summary"], data["disposition"], data["fields"]) == (post["summary"], post["disposition"],
                                                                      post["fields"])  # fmt: skip
    assert data["disposition"] in ("resolved", "follow_up", "other") and data["post_call_status"] == "ok"
    assert data["checks"] == report["checks"] and {c["name"] for c in data["checks"]} == {"never_say", "max_dead_air"}
    assert left == 0
    assert secret[6:] not in log.read_text()
    # the report line with its post-call summary and checks fits docs/report.schema.json, and a `masked` endpoint's
    # call.ended says every field of the call's record as the line does, numbers and times alike
    assert [f"{e.json_path}: {e.message}" for e in REPORT.iter_errors(report)] == []
    assert {f: data[f] for f in RECORD_FIELDS} == {f: report[f] for f in RECORD_FIELDS}


async def _get(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return await r.text()


async def _dump(url: str) -> str:
    client = aioredis.from_url(url, decode_responses=True)
    try:
        out = []
        for key in await client.keys("*"):
            kind = await client.type(key)
            if kind == "hash":
                out.append(str(await client.hgetall(key)))
            elif kind == "zset":
                out.append(str(await client.zrange(key, 0, -1)))
            elif kind == "stream":
                out.append(str(await client.xrange(key)))
            elif kind == "string":
                out.append(str(await client.get(key)))
        return "\n".join(out)
    finally:
        await client.aclose()
