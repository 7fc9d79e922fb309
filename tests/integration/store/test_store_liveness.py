"""A worker whose heartbeat expired is asked over SIP before its calls are ended: against a real redis-server, with a
UDP SIP responder (answering OPTIONS, as a live worker's pjsua does) standing in for a worker cut off from Redis."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import cast

import pytest
import redis.asyncio as aioredis
from _store_helpers import wait_until

from bridge.devkit.redis_server import EmbeddedRedis
from bridge.store import keys
from bridge.store.calls import CallStore, StoreTuning

pytestmark = pytest.mark.integration

IDENTITY = {"caller": "+15550100", "called": "100", "dialplan": "support", "dialect": "ga"}


class SipResponder(asyncio.DatagramProtocol):
    """Answers every request with ``status`` (Via, From, To, Call-ID and CSeq copied), counting the OPTIONS."""

    def __init__(self, status: str) -> None:
        self.status = status
        self.options = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        text = data.decode(errors="replace")
        if not text.startswith("OPTIONS "):
            return
        self.options += 1
        copied = [ln for ln in text.split("\r\n") if ln.split(":", 1)[0] in ("Via", "From", "To", "Call-ID", "CSeq")]
        answer = "\r\n".join([f"SIP/2.0 {self.status}", *copied, "Content-Length: 0"]) + "\r\n\r\n"
        assert self.transport is not None
        self.transport.sendto(answer.encode(), addr)


async def responder(status: str = "200 OK") -> tuple[SipResponder, str]:
    """A responder on a free loopback port, and the worker id that names it (``host:port``, as serve's workers)."""
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: SipResponder(status), local_addr=("127.0.0.1", 0)
    )
    return protocol, f"127.0.0.1:{transport.get_extra_info('sockname')[1]}"


@pytest.fixture
async def cut_off_worker(redis_server: EmbeddedRedis) -> AsyncIterator[tuple[SipResponder, str]]:
    """A worker with two live calls (their dialogs kept) whose heartbeat expires: its store stops writing, as when it
    is cut off from Redis, while its SIP address still answers."""
    sip, worker = await responder()
    store = CallStore(
        redis_server.url,
        worker=worker,
        tuning=StoreTuning(heartbeat_interval_s=0.2, heartbeat_ttl_s=1, reap_interval_s=None),
    )
    await store.start()
    for call_id in ("c1", "c2"):
        store.begin(call_id, **IDENTITY)
        store.update(call_id, phase="LISTENING", sip_dialog=f'{{"call_id": "{call_id}"}}')
    assert await store.flush()
    await store.close()  # its calls are live: the heartbeat is left to expire
    yield sip, worker
    if sip.transport is not None:
        sip.transport.close()


async def test_a_worker_that_misses_its_heartbeat_but_answers_sip_keeps_its_calls_until_it_stops_answering(
    redis_server: EmbeddedRedis,
    raw: aioredis.Redis,
    cut_off_worker: tuple[SipResponder, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.store")
    sip, worker = cut_off_worker
    orphaned: list[tuple[str, str]] = []
    async with CallStore(redis_server.url, worker="w-reaper", tuning=StoreTuning(reap_interval_s=0.1)) as reaper:
        reaper.on_orphaned = orphaned.extend

        async def expired() -> bool:
            return not await raw.exists(keys.worker_heartbeat(worker))

        await wait_until(expired, timeout_s=10, what="the cut-off worker's heartbeat expired")
        said = f"worker {worker} misses its heartbeat but answers SIP: not reaped"
        await wait_until(lambda: said in caplog.messages, timeout_s=10, what="the reaper's INFO line")
        asked = sip.options
        await wait_until(lambda: sip.options >= asked + 3, timeout_s=10, what="three more rounds asking the worker")
        for call_id in ("c1", "c2"):
            state = await raw.hgetall(keys.call(call_id))
            assert state["phase"] == "LISTENING" and not state["ended_at"] and not state["end_reason"], state
        assert await raw.smembers(keys.worker_calls(worker)) == {"c1", "c2"}
        assert worker in await raw.smembers(keys.WORKERS)
        assert caplog.messages.count(said) == 1, caplog.messages  # said once, asked every round
        assert reaper.reaped_calls == 0 and orphaned == []

        assert sip.transport is not None
        sip.transport.close()  # the worker is gone: its port answers ICMP port unreachable
        stopped = time.monotonic()

        async def ended() -> bool:
            states = [await raw.hgetall(keys.call(c)) for c in ("c1", "c2")]
            return all(s["phase"] == "ENDED" and s["end_reason"] == "worker died" for s in states)

        await wait_until(ended, timeout_s=10, what="the calls of the worker that stopped answering marked ended")
        print(f"calls marked ended {time.monotonic() - stopped:.2f} s after the worker stopped answering")
        await wait_until(lambda: len(orphaned) >= 2, timeout_s=10, what="the orphans reported (after they are marked)")
        assert sorted(orphaned) == [("c1", '{"call_id": "c1"}'), ("c2", '{"call_id": "c2"}')]  # each caller: a BYE
        assert not await raw.exists(keys.worker_calls(worker))
        assert worker not in await raw.smembers(keys.WORKERS)


async def test_a_worker_answering_503_is_alive_and_one_never_heard_of_over_sip_is_dead(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    busy, busy_id = await responder("503 Service Unavailable")  # draining, or overloaded: alive all the same
    try:
        for worker, call_id in ((busy_id, "b1"), ("w-no-sip-address", "n1")):
            store = CallStore(
                redis_server.url, worker=worker, tuning=StoreTuning(heartbeat_ttl_s=1, reap_interval_s=None)
            )
            await store.start()
            store.begin(call_id, **IDENTITY)
            assert await store.flush()
            await store.close()
        async with CallStore(redis_server.url, worker="w-reaper", tuning=StoreTuning(reap_interval_s=None)) as reaper:

            async def reaped() -> dict[str, list[str]]:
                return await reaper.reap_dead_workers()

            async def both_expired() -> bool:
                beats = [await raw.exists(keys.worker_heartbeat(w)) for w in (busy_id, "w-no-sip-address")]
                return not any(beats)

            await wait_until(both_expired, timeout_s=10, what="both heartbeats expired")
            assert await reaped() == {"w-no-sip-address": ["n1"]}
            assert busy.options >= 1
            assert (await raw.hgetall(keys.call("b1")))["phase"] != "ENDED"
            assert await reaped() == {}  # asked again, answers again
    finally:
        assert busy.transport is not None
        busy.transport.close()
