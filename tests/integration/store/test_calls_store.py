"""CallStore against a real redis-server: fields, stream, heartbeat and reaping, and Redis outages mid-call."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
import redis.asyncio as aioredis
from _store_helpers import ANSWER, GREETING, QUESTION, FakeLeg, session_for, wait_until

from bridge import events as ev
from bridge.call.session import CallSession
from bridge.devkit.redis_server import EmbeddedRedis
from bridge.devkit.tlscert import self_signed
from bridge.emulator import EmulatorServer
from bridge.realtime.dialects import BETA, GA, Dialect
from bridge.rollout.store import RolloutStore
from bridge.store import keys
from bridge.store.calls import CallStore, StoreTuning
from bridge.store.connection import StoreUnavailable, backoff, safe_url

pytestmark = pytest.mark.integration

IDENTITY = {
    "caller": "+15550100",
    "called": "100",
    "dialplan": "support",
    "dialect": "ga",
    "model": "gpt-realtime",
    "voice": "marin",
}


def fast_store(url: str, worker: str = "w0", spool_dir: Path | None = None, **tuning: Any) -> CallStore:
    fast = StoreTuning(
        flush_interval_s=0.05, heartbeat_interval_s=0.2, retry_initial_s=0.05, retry_cap_s=0.3, reap_interval_s=None
    )
    return CallStore(url, worker=worker, spool_dir=spool_dir, tuning=replace(fast, **tuning))


async def stop(server: EmbeddedRedis) -> None:
    await asyncio.to_thread(server.stop)


async def start(server: EmbeddedRedis) -> None:
    server.proc = None
    await asyncio.to_thread(server.start)


# ------------------------------------------------------------------------------------------------ a real session
async def run_greeting_and_one_turn(session: CallSession, leg: FakeLeg) -> asyncio.Task[object]:
    task: asyncio.Task[object] = asyncio.create_task(session.run())
    await wait_until(lambda: GREETING in session.report.agent_transcript and str(session.phase.phase) == "LISTENING",
                     what="greeting played out")  # fmt: skip
    return task


@pytest.mark.parametrize("dialect", [BETA, GA], ids=lambda d: d.name)
async def test_a_call_shows_every_field_and_the_fields_follow_the_phases(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, emulator: EmulatorServer, dialect: Dialect
) -> None:
    store = fast_store(redis_server.url)
    await store.start()
    leg = FakeLeg("call-session-1")
    session = session_for(emulator, leg, dialect)
    session.listeners.append(store.listener_for(leg.call_id, **{**IDENTITY, "dialect": dialect.name}))
    store.watch(leg.call_id, lambda: {"last_user_audio_seq": session.frames_appended})
    seen: list[str] = []
    stop = asyncio.Event()  # redis-py may swallow a cancel that lands inside a command: the loop also ends on this

    async def sample() -> None:
        while not stop.is_set():
            phase = await raw.hget(keys.call(leg.call_id), "phase")
            if phase and (not seen or seen[-1] != phase):
                seen.append(phase)
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    try:
        task = await run_greeting_and_one_turn(session, leg)
        assert await store.flush()
        state = await raw.hgetall(keys.call(leg.call_id))
        assert set(keys.CALL_FIELDS) <= set(state), set(keys.CALL_FIELDS) - set(state)
        assert state["call_id"] == leg.call_id and state["worker"] == "w0" and state["dialect"] == dialect.name
        assert state["phase"] == "LISTENING"
        assert state["response_id"] and state["last_transcript"] == f"Agent: {GREETING}"
        assert float(state["started_at"]) <= float(state["last_activity"]) <= time.time()
        assert await raw.sismember(keys.worker_calls("w0"), leg.call_id)
        first_response = state["response_id"]

        async def phase_in_redis(phase: str) -> bool:
            return await raw.hget(keys.call(leg.call_id), "phase") == phase

        leg.say()
        await wait_until(lambda: phase_in_redis("SPEAKING"), what="SPEAKING in Redis while the answer plays")
        await wait_until(lambda: ANSWER in session.report.agent_transcript, what="the answer")
        await wait_until(lambda: phase_in_redis("LISTENING"), what="LISTENING in Redis once it has played")
        await wait_until(lambda: str(session.phase.phase) == "LISTENING", what="answer played out")
        assert await store.flush()
        state = await raw.hgetall(keys.call(leg.call_id))
        assert state["response_id"] not in ("", first_response)
        # The caller's transcription may arrive after the agent's answer: the last line is whichever came last.
        assert state["last_transcript"] in (f"Agent: {ANSWER}", f"Caller: {QUESTION}")
        assert int(state["last_user_audio_seq"]) >= 100  # >= 2 s of 20 ms frames appended
        assert state["item_id"]

        await leg.events.put(ev.CallerHungUp(0, "bye"))
        await asyncio.wait_for(task, 10)
        assert await store.flush()
    finally:
        stop.set()
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        leg.stop()
        await store.close()
    state = await raw.hgetall(keys.call(leg.call_id))
    assert state["phase"] == "ENDED" and state["end_reason"] == "caller hung up (bye)" and state["ended_at"]
    assert not await raw.sismember(keys.worker_calls("w0"), leg.call_id)
    assert 0 < await raw.ttl(keys.call(leg.call_id)) <= keys.CALL_TTL_S
    # The hash followed the greeting too (writes coalesce within a flush, so a short THINKING may never show) ...
    assert "SPEAKING" in seen[: seen.index("LISTENING")], seen
    # ... and the stream has every transition, in order.
    phases = [f["new"] for _, f in await raw.xrange(keys.call_events(leg.call_id)) if f["kind"] == "phase"]
    assert phases == ["THINKING", "SPEAKING", "LISTENING", "THINKING", "SPEAKING", "LISTENING", "ENDED"], phases
    entries = await raw.xrange(keys.call_events(leg.call_id))
    kinds = [f["kind"] for _, f in entries]
    assert kinds[0] == "ringing" and kinds[-1] == "ended"
    assert "latency" not in kinds
    transcripts = [(f["kind"], f["summary"]) for _, f in entries if f["kind"].endswith("_transcript")]
    assert ("caller_transcript", QUESTION) in transcripts
    assert ("agent_transcript", GREETING) in transcripts and ("agent_transcript", ANSWER) in transcripts


# ------------------------------------------------------------------------------------------------ the adapter
@dataclass(frozen=True, slots=True)
class _Acked(ev.Report):
    """A report whose stored field is named like a hash field: the adapter copies it there."""

    kind: ClassVar[str] = "acked"
    stored: ClassVar[tuple[str, ...]] = ("last_ack_event_id",)

    last_ack_event_id: str


async def test_the_listener_maps_session_reports_to_fields_and_stream_entries(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    async with fast_store(redis_server.url) as store:
        listen = store.listener_for("c1", **IDENTITY)
        listen(ev.PhaseChanged("IDLE", "THINKING", "greeting"))
        listen(ev.SessionOpened("sess_1"))
        listen(ev.ConversationOpened("conv_1"))
        listen(ev.ResponseBegan("resp_1"))
        listen(ev.AgentSaid("Hello there", "item_9"))
        listen(ev.CallerSaid("my key is sk-abcdefghijklmnop", "item_10"))
        listen(ev.TruncateSent("item_9", 1234))
        listen(ev.Latency("capture", 1.0))
        listen(ev.ServiceError("bad", "protocol", "nope"))
        listen(_Acked("event_77"))
        assert await store.flush()
        state = await raw.hgetall(keys.call("c1"))
        assert state["phase"] == "THINKING"
        assert (state["session_id"], state["conversation_id"], state["response_id"]) == ("sess_1", "conv_1", "resp_1")
        # the truncate's item_id came last: TruncateSent stores it
        assert (state["item_id"], state["played_ms"], state["last_ack_event_id"]) == ("item_9", "1234", "event_77")
        assert state["last_transcript"] == "Caller: my key is [redacted]"
        entries = [f for _, f in await raw.xrange(keys.call_events("c1"))]
        assert [e["kind"] for e in entries] == [
            "phase", "session_ready", "conversation_ready", "response_started", "agent_transcript",
            "caller_transcript", "truncate", "error", "acked",
        ]  # fmt: skip
        assert entries[0] == {"kind": "phase", "summary": "IDLE -> THINKING: greeting", "t": entries[0]["t"],
                              "old": "IDLE", "new": "THINKING", "why": "greeting"}  # fmt: skip
        started = {"kind": "response_started", "summary": "resp_1", "t": entries[3]["t"], "response_id": "resp_1"}
        assert entries[3] == started
        assert ev.decode(entries[0]) == ev.PhaseChanged("IDLE", "THINKING", "greeting")  # each entry: its report
        assert ev.decode(entries[5]) == ev.CallerSaid("my key is [redacted]", "item_10")  # redacted as the summary is
        assert entries[6]["audio_end_ms"] == "1234" and entries[6]["item_id"] == "item_9"
        assert (entries[7]["summary"], entries[7]["code"], entries[7]["error_class"]) == (
            "protocol/bad: nope",
            "bad",
            "protocol",
        )
        listen(ev.CallEnded("agent ended the call", "completed", ev.EndedBy.AGENT))
        assert await store.flush()
        state = await raw.hgetall(keys.call("c1"))
        assert (state["phase"], state["end_reason"]) == ("ENDED", "agent ended the call")
        assert store.live_calls == []
    everything = [await raw.dump(k) for k in await raw.keys("*")]
    assert not any(b"sk-abcdefghijklmnop" in (v or b"") for v in everything)


async def test_the_stream_is_capped(redis_server: EmbeddedRedis, raw: aioredis.Redis) -> None:
    async with fast_store(redis_server.url, stream_maxlen=50) as store:
        store.begin("c-cap", **IDENTITY)
        for i in range(2000):
            store.event("c-cap", "caller_transcript", f"line {i}")
        assert await store.flush()
        length = await raw.xlen(keys.call_events("c-cap"))
        assert 50 <= length <= 50 + 100  # MAXLEN ~ trims whole nodes (stream-node-max-entries 100)
        last = await raw.xrevrange(keys.call_events("c-cap"), count=1)
        assert last[0][1]["summary"] == "line 1999"
        ids = [i for i, _ in await raw.xrange(keys.call_events("c-cap"))]
        assert ids == sorted(ids, key=lambda x: tuple(map(int, x.split("-"))))


# ------------------------------------------------------------------------------------------------ heartbeat, reaping
async def test_a_dead_workers_calls_are_reaped_and_marked_ended(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    dead = fast_store(redis_server.url, worker="w-dead", heartbeat_ttl_s=1)
    await dead.start()
    for cid in ("d1", "d2"):
        dead.begin(cid, **IDENTITY)
        dead.update(cid, phase="SPEAKING")
    assert await dead.flush()
    assert await raw.get(keys.worker_heartbeat("w-dead"))
    assert await raw.ttl(keys.worker_heartbeat("w-dead")) <= 1
    await dead.close()  # calls still live: the heartbeat is left to expire, as when a process dies

    async with fast_store(redis_server.url, worker="w-live", reap_interval_s=0.1) as alive:
        alive.begin("a1", **IDENTITY)
        assert await alive.flush()
        listed = await alive.list_calls()
        assert {c.call_id for c in listed} <= {"d1", "d2", "a1"} and "a1" in {c.call_id for c in listed}

        async def reaped() -> bool:
            return await raw.hget(keys.call("d2"), "phase") == "ENDED"

        await wait_until(reaped, timeout_s=5, what="the reaper")
        for cid in ("d1", "d2"):
            state = await raw.hgetall(keys.call(cid))
            assert (state["phase"], state["end_reason"]) == ("ENDED", "worker died") and state["ended_at"]
        assert not await raw.exists(keys.worker_calls("w-dead"))
        assert await raw.smembers(keys.WORKERS) == {"w-live"}
        assert [c.call_id for c in await alive.list_calls()] == ["a1"]
        assert await alive.reap_dead_workers() == {}  # idempotent
        assert (await raw.hgetall(keys.call("a1")))["phase"] == "IDLE"


async def test_a_stalled_worker_that_was_reaped_rewrites_its_calls_as_live(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    async with fast_store(redis_server.url, worker="w-slow") as slow:
        slow.begin("s1", **IDENTITY)
        slow.update("s1", phase="LISTENING", response_id="resp_5")
        assert await slow.flush()
        await raw.delete(keys.worker_heartbeat("w-slow"))  # as if the loop had stalled past the heartbeat TTL
        async with fast_store(redis_server.url, worker="w-other") as other:
            assert await other.reap_dead_workers() == {"w-slow": ["s1"]}
        assert (await raw.hgetall(keys.call("s1")))["phase"] == "ENDED"
        slow.event("s1", "caller_transcript", "still here")

        async def live_again() -> bool:
            state = await raw.hgetall(keys.call("s1"))
            return state.get("phase") == "LISTENING" and state.get("end_reason") == ""

        await wait_until(live_again, timeout_s=3, what="the re-sync")
        assert await raw.sismember(keys.worker_calls("w-slow"), "s1")
        assert "w-slow" in await raw.smembers(keys.WORKERS)
        assert slow.resyncs == 1
        assert await slow.flush()
        last = await raw.xrevrange(keys.call_events("s1"), count=1)
        assert last[0][1]["summary"] == "still here"


async def test_a_restarted_worker_ends_what_its_previous_run_left(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    # What a crashed previous process with the same worker id left behind: a live call nobody will end.
    await raw.hset(keys.call("old-call"), mapping={"call_id": "old-call", "phase": "SPEAKING", "ended_at": ""})
    await raw.sadd(keys.worker_calls("w7"), "old-call")
    async with fast_store(redis_server.url, worker="w7") as store:
        store.begin("new-call", **IDENTITY)
        assert await store.flush()
        state = await raw.hgetall(keys.call("old-call"))
        assert (state["phase"], state["end_reason"]) == ("ENDED", "worker restarted")
        assert await raw.smembers(keys.worker_calls("w7")) == {"new-call"}


# ------------------------------------------------------------------------------------------------ outages
async def test_a_redis_outage_mid_call_loses_nothing_and_the_state_is_complete_after_restart(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, emulator: EmulatorServer
) -> None:
    store = fast_store(redis_server.url, worker="w-out")
    await store.start()
    leg = FakeLeg("call-outage")
    session = session_for(emulator, leg, GA)
    session.listeners.append(store.listener_for(leg.call_id, **IDENTITY))
    store.watch(leg.call_id, lambda: {"last_user_audio_seq": session.frames_appended})
    try:
        task = await run_greeting_and_one_turn(session, leg)
        assert await store.flush()
        before = await raw.hgetall(keys.call(leg.call_id))
        assert before["last_transcript"] == f"Agent: {GREETING}"
        entries_before = await raw.xlen(keys.call_events(leg.call_id))

        await stop(redis_server)  # Redis goes away mid-call ...
        leg.say()  # ... and the call goes on: a whole caller turn and the agent's answer
        await wait_until(lambda: ANSWER in session.report.agent_transcript, what="the answer during the outage")
        await wait_until(lambda: str(session.phase.phase) == "LISTENING", what="answer played out")
        await wait_until(lambda: store.write_errors > 0 and not store.connected, what="the writer noticing")
        for i in range(1000):  # the session's calls stay memory-only while Redis is away
            store.update(leg.call_id, last_ack_event_id=f"event_{i}")
        assert store.queue_depth > 0 and store.outages == 1
        assert not task.done()

        await start(redis_server)  # back on the same port, EMPTY (no persistence)
        await raw.connection_pool.disconnect()  # the test's own client: drop its dead connection
        assert await store.flush(timeout_s=10)
        state = await raw.hgetall(keys.call(leg.call_id))
        assert set(keys.CALL_FIELDS) <= set(state)
        assert state["phase"] == "LISTENING"
        assert state["last_transcript"] in (f"Agent: {ANSWER}", f"Caller: {QUESTION}")
        assert state["last_ack_event_id"] == "event_999"
        assert state["started_at"] == before["started_at"] and state["caller"] == IDENTITY["caller"]
        assert int(state["last_user_audio_seq"]) > int(before["last_user_audio_seq"])
        assert state["response_id"] != before["response_id"]
        assert await raw.sismember(keys.worker_calls("w-out"), leg.call_id)
        assert await raw.exists(keys.worker_heartbeat("w-out"))
        entries = await raw.xrange(keys.call_events(leg.call_id))
        summaries = [(f["kind"], f["summary"]) for _, f in entries]
        assert ("agent_transcript", GREETING) in summaries  # written before the outage, appended again
        assert ("caller_transcript", QUESTION) in summaries and ("agent_transcript", ANSWER) in summaries
        assert len(entries) > entries_before
        assert len({i for i, _ in entries}) == len(entries)
        assert (store.outages, store.resyncs, store.dropped_writes, store.queue_depth) == (1, 1, 0, 0)
        assert store.connected and store.write_errors >= 1

        await leg.events.put(ev.CallerHungUp(0, "bye"))
        report = await asyncio.wait_for(task, 10)
        assert report.end_reason == "caller hung up (bye)"
        assert await store.flush()
        assert (await raw.hgetall(keys.call(leg.call_id)))["phase"] == "ENDED"
    finally:
        leg.stop()
        await store.close()


async def test_stream_entries_already_in_redis_are_not_duplicated_by_a_resync(
    redis_server: EmbeddedRedis, raw: aioredis.Redis
) -> None:
    # A re-sync against a server that kept its data (a network blip, not a restart) appends the recent entries
    # again with their original ids: Redis refuses them as duplicates and nothing is doubled.
    async with fast_store(redis_server.url, worker="w-dup") as store:
        store.begin("k1", **IDENTITY)
        for i in range(20):
            store.event("k1", "caller_transcript", f"line {i}")
        assert await store.flush()
        store.request_resync()
        store.event("k1", "caller_transcript", "line 20")
        assert await store.flush()
        summaries = [f["summary"] for _, f in await raw.xrange(keys.call_events("k1"))]
        assert summaries == [f"line {i}" for i in range(21)]
        assert store.rejected_writes == 0


async def test_a_long_outage_drops_the_oldest_stream_entries_and_counts_them(redis_server: EmbeddedRedis) -> None:
    async with fast_store(redis_server.url, worker="w-drop", max_queue=10) as store:
        store.begin("q1", **IDENTITY)
        assert await store.flush()
        await stop(redis_server)
        for i in range(50):
            store.event("q1", "agent_transcript", f"line {i}")
            store.update("q1", played_ms=i)
        assert store.dropped_writes == 40
        assert len(store.pending.queue) == 10
        await start(redis_server)
        assert await store.flush(timeout_s=10)
        client = aioredis.from_url(redis_server.url, decode_responses=True)
        try:
            summaries = [f["summary"] for _, f in await client.xrange(keys.call_events("q1"))]
            assert summaries == [f"line {i}" for i in range(40, 50)]
            assert (await client.hgetall(keys.call("q1")))["played_ms"] == "49"
        finally:
            await client.aclose()


async def test_redis_down_from_the_start_never_raises(redis_server: EmbeddedRedis) -> None:
    await stop(redis_server)
    store = fast_store(redis_server.url, worker="w-never")
    await store.start()
    store.begin("n1", **IDENTITY)
    listen = store.listener_for("n2", **IDENTITY)
    listen(ev.PhaseChanged("IDLE", "LISTENING", "session ready"))
    await wait_until(lambda: store.write_errors >= 1, 5, "the writer's first failed write")
    assert not store.connected and store.outages == 1 and store.write_errors >= 1
    assert not await store.flush(timeout_s=0.2)
    with pytest.raises(StoreUnavailable) as info:
        await store.list_calls()
    assert "127.0.0.1" in str(info.value)
    await store.close(timeout_s=0.5)


# ------------------------------------------------------------------------------------------------ URLs, AUTH
async def test_auth_in_the_url_and_the_password_never_leaks() -> None:
    password = "s3cret-pw-for-test"
    with EmbeddedRedis(password=password) as server:
        async with fast_store(server.url, worker="w-auth") as store:
            assert password not in store.where and "***@" in store.where
            listen = store.listener_for("p1", **IDENTITY)
            listen(ev.ServiceError("invalid_api_key", "auth", "Incorrect API key sk-proj-abcdefghijklmnop"))
            assert await store.flush()
            assert [c.call_id for c in await store.list_calls()] == ["p1"]
            client = aioredis.from_url(server.url)
            try:
                dumps = b"".join([await client.dump(k) or b"" for k in await client.keys("*")])
            finally:
                await client.aclose()
            assert dumps and password.encode() not in dumps
            assert b"sk-proj-abcdefghijklmnop" not in dumps and b"[redacted]" in dumps
        wrong = server.url.replace(password, "wrong-password")
        bad = fast_store(wrong, worker="w-bad")
        await bad.start()
        bad.begin("p2", **IDENTITY)
        await wait_until(lambda: bad.write_errors > 0, what="auth failure")
        assert not bad.connected and "wrong-password" not in bad.last_error
        with pytest.raises(StoreUnavailable) as info:
            await bad.list_calls()
        assert "wrong-password" not in str(info.value) and "***@127.0.0.1" in str(info.value)
        await bad.close(timeout_s=0.5)


async def test_a_unix_socket_url(redis_server: EmbeddedRedis, raw: aioredis.Redis) -> None:
    async with fast_store(redis_server.unix_url, worker="w-unix") as store:
        store.begin("u1", **IDENTITY)
        assert await store.flush()
        detail = await store.get_call("u1")
        assert detail is not None and detail.state["caller"] == IDENTITY["caller"]
    assert await raw.exists(keys.call("u1"))


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (and its key)."""
    return self_signed(tmp_path, days=1, also=["localhost"])


async def test_a_tls_url_through_a_tls_terminating_proxy(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, tls_cert: tuple[Path, Path]
) -> None:
    # The bundled redis-server has no TLS; a TLS proxy in front of it (as stunnel or a cloud endpoint would be) gives
    # the client a real rediss:// handshake, verified against a CA named in the URL.
    cert, key = tls_cert
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handshakes = 0

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal handshakes
        handshakes += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", redis_server.port)
        await asyncio.gather(relay(reader, up_writer), relay(up_reader, writer))

    proxy = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = proxy.sockets[0].getsockname()[1]
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}&ssl_cert_reqs=required"
    try:
        async with fast_store(url, worker="w-tls") as store:
            store.begin("t1", **IDENTITY)
            assert await store.flush()
            assert [c.call_id for c in await store.list_calls()] == ["t1"]
        async with RolloutStore(url) as rollouts:
            await rollouts.set_flag("support", {"weights": {"ga": 5, "beta": 95}}, "alice", "over TLS")
            assert (await rollouts.get_flag("support")).weights == {"ga": 5, "beta": 95}
        assert await raw.exists(keys.call("t1")) and handshakes >= 2
        # Without the CA the certificate is refused: the writer counts errors, and never raises.
        async with fast_store(f"rediss://127.0.0.1:{port}/0", worker="w-untrusted") as untrusted:
            untrusted.begin("t2", **IDENTITY)
            await wait_until(lambda: untrusted.write_errors > 0, what="a refused certificate")
            assert "CERTIFICATE_VERIFY_FAILED" in untrusted.last_error
    finally:
        proxy.close()
        await proxy.wait_closed()


def test_safe_url_and_backoff_are_pure() -> None:
    assert safe_url("redis://:pw@host:6379/0") == "redis://***@host:6379/0"
    assert safe_url("rediss://user:pw@host/0") == "rediss://***@host/0"
    assert safe_url("unix:///tmp/r.sock?db=0") == "unix:///tmp/r.sock?db=0"
    delays = backoff(0.1, 2.0, 1.0)
    assert [round(next(delays), 2) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_call_keys_share_a_cluster_hash_tag() -> None:
    assert keys.call("abc") == "cb:call:{abc}" and keys.call_events("abc") == "cb:call:{abc}:events"
    assert keys.worker_calls("w1") == "cb:worker:{w1}:calls" and keys.worker_heartbeat("w1") == "cb:worker:{w1}:hb"
    assert all("{rollout}" in k for k in (keys.rollout_flag("x"), keys.ROLLOUT_AUDIT, keys.rollout_refused("x")))
    assert keys.variant_calls("x", "v") == "cb:rollout:{x:v}:calls"  # the per-call windows spread over slots


async def test_flush_waits_for_a_pipeline_already_under_way(redis_server: EmbeddedRedis, raw: aioredis.Redis) -> None:
    """What a pipeline took off the queue is not written until it returns: flush() must wait for it too."""
    client = aioredis.Redis.from_url(redis_server.url)
    real_pipeline = client.pipeline
    in_flight = asyncio.Event()

    def slow_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        execute = pipe.execute

        async def late_execute(*a: Any, **kw: Any) -> Any:
            in_flight.set()
            await asyncio.sleep(0.3)  # Redis slow to answer: the batch is in flight meanwhile
            return await execute(*a, **kw)

        pipe.execute = late_execute  # type: ignore[method-assign]  # the test's stand-in for a slow round trip
        return pipe

    client.pipeline = slow_pipeline  # type: ignore[method-assign]  # as above
    store = CallStore(client=client, worker="w0", tuning=StoreTuning(flush_interval_s=0.01, reap_interval_s=None))
    await store.start()
    try:
        await store.flush()
        store.begin("call-inflight", **IDENTITY)
        in_flight.clear()  # (the first flush's batch set it)
        store.event("call-inflight", "phase", "IDLE -> RINGING")
        await asyncio.wait_for(in_flight.wait(), 5)  # the writer has taken the entry and is waiting for Redis
        assert await store.flush()
        assert await raw.xlen(keys.call_events("call-inflight")) == 1
    finally:
        await store.close()


async def test_a_stop_during_an_outage_spools_the_final_state_and_the_next_start_writes_it(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    store = fast_store(redis_server.url, worker="w-spool", spool_dir=spool)
    await store.start()
    store.begin("s1", **IDENTITY)
    for i in range(5):
        store.event("s1", "caller_transcript", f"line {i}")
    assert await store.flush()
    before = await raw.hgetall(keys.call("s1"))

    await stop(redis_server)  # Redis goes away; the call goes on and ends; the worker stops
    for i in range(5, 14):
        store.event("s1", "caller_transcript", f"line {i}")
    store.end("s1", "caller hung up")
    await store.close(timeout_s=2.0)
    (spooled,) = spool.glob("*.spool.json")
    assert spooled.stat().st_mode & 0o777 == 0o600 and spool.stat().st_mode & 0o777 == 0o700
    assert store.spooled_calls == 1

    await start(redis_server)  # back, EMPTY; as if it had kept the call's state from before the outage:
    await raw.connection_pool.disconnect()
    await raw.hset(keys.call("s1"), mapping=before)
    await raw.sadd(keys.worker_calls("w-spool"), "s1")
    async with fast_store(redis_server.url, worker="w-spool", spool_dir=spool) as next_run:
        assert await next_run.flush(timeout_s=10)
        assert next_run.replayed_calls == 1
    state = await raw.hgetall(keys.call("s1"))
    # the spool was written before the previous run's leftovers were adopted: the real end, not "worker restarted"
    assert (state["phase"], state["end_reason"]) == ("ENDED", "caller hung up"), state
    summaries = [f["summary"] for _, f in await raw.xrange(keys.call_events("s1"))]
    assert [s for s in summaries if s.startswith("line")] == [f"line {i}" for i in range(14)]
    assert not await raw.sismember(keys.worker_calls("w-spool"), "s1")
    assert await raw.zscore(keys.ENDED_CALLS, "s1") == float(state["ended_at"])  # among the console's ended calls
    assert not list(spool.iterdir())
