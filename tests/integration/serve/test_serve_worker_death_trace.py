"""A worker killed mid-call (SIGKILL) does not take its call's trace with it: a real ``callbridge serve`` with
``tracing: otlp`` to a real OTLP/HTTP receiver (tests/_otlp.py), Redis, the emulator, a real SIP call (the pjsua2
softphone) and a webhook endpoint that verifies every signature (tests/_webhooks.py). The call's root span died
unexported with the worker; serve (which queues the call's ``call.ended``) ends a stand-in root span with the very
trace and span ids the ``call.started`` named, ``worker died`` as its end reason and an error status, so the spans the
worker had exported hang from it; and the ``call.ended`` carries those ids, its delivery a span of that trace, under
that root, its ``traceparent`` naming the attempt."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from _otlp import OtlpReceiver
from _webhooks import Receiver
from test_serve_operable import api, caller_wav, softphone, stop_serve, wait_healthy
from test_serve_stop_in_outage import _serve
from test_serve_traces import tracing_env

from bridge.devkit.ports import free_port
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.emulator import EmulatorServer
from bridge.runtime import tracecontext
from bridge.store import keys
from bridge.webhooks.signing import new_secret

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary")


@pytest.mark.timeout(240)
async def test_a_killed_workers_call_keeps_its_trace_and_its_call_ended_joins_it(tmp_path: Path) -> None:
    secret = new_secret()
    (tmp_path / "whsec").write_text(secret + "\n")
    hook = await Receiver(secret).start()
    collector = await OtlpReceiver().start()
    env = {"CALLBRIDGE_WEBHOOK_URL": hook.url, "CALLBRIDGE_WEBHOOK_SECRET_FILE": str(tmp_path / "whsec")}
    env |= tracing_env(collector.endpoint)
    play = caller_wav(tmp_path / "c.wav")
    try:
        with EmbeddedRedis() as redis:
            client = aioredis.from_url(redis.url, decode_responses=True)
            async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
                serve = _serve(tmp_path, redis, emulator, free_port(), tmp_path / "serve.log", env)
                try:
                    await wait_healthy(serve)
                    _, health = await api("/healthz", serve)
                    call = asyncio.create_task(softphone(serve, "1000", play, seconds=25.0))
                    (started,) = await hook.wait_for(lambda r: any(x.body["type"] == "call.started" for x in r), 30)
                    call_id = started.body["data"]["call_id"]
                    deadline = time.monotonic() + 10
                    while not await client.hget(keys.call(call_id), "sip_dialog"):  # the pool can BYE the caller
                        assert time.monotonic() < deadline, await client.hgetall(keys.call(call_id))
                        await asyncio.sleep(0.05)
                    stored = await client.hgetall(keys.call(call_id))
                    os.kill(health["workers"][0]["pid"], signal.SIGKILL)  # mid-call: its root span is never exported
                    await call
                    ended = await hook.wait_for(lambda r: any(x.body["type"] == "call.ended" for x in r), 30)
                    root_id = started.body["data"].get("span_id", "")
                    spans = await collector.wait_for(
                        lambda s: (
                            any(x.span_id == root_id for x in s) and any(x.name == "webhook call.ended" for x in s)
                        ),
                        30,
                    )
                finally:
                    stop_serve(serve.proc)
            await client.aclose()
    finally:
        await hook.stop()
        await collector.stop()
    trace_id = started.body["data"]["trace_id"]
    assert len(trace_id) == 32 and len(root_id) == 16, started.body["data"]
    assert (stored["trace_id"], stored["trace_span"]) == (trace_id, root_id)  # what the call's hash kept
    (done,) = [r for r in ended if r.body["type"] == "call.ended"]
    assert (done.body["data"]["trace_id"], done.body["data"]["span_id"]) == (trace_id, root_id)
    assert done.body["data"]["end_reason"] == "worker died" and done.verified

    (root,) = [s for s in spans if s.span_id == root_id]  # the stand-in: serve's, with the lost root's ids
    assert (root.name, root.trace_id, root.parent_id, root.status) == ("call", trace_id, "", 2)
    assert (
        root.attributes["callbridge.end_reason"] == "worker died" and root.attributes["callbridge.call_id"] == call_id
    )
    kept = [s for s in spans if s.parent_id == root_id and s.name != "webhook call.ended"]
    assert kept, [(s.name, s.parent_id) for s in spans]  # what the worker exported before it died hangs from it
    deliveries = [s for s in spans if s.name == "webhook call.ended"]
    assert deliveries and all((s.trace_id, s.parent_id) == (trace_id, root_id) for s in deliveries)
    told = tracecontext.parse(done.traceparent)
    assert told is not None and (f"{told[0]:032x}", f"{told[1]:016x}") in {(s.trace_id, s.span_id) for s in deliveries}
