"""Redis that survives losing its master: `serve --redis-url redis+sentinel://...` with a real master, replica and
sentinel (Debian's redis-server and redis-sentinel, bridge/devkit/sentinel.py). The master is killed mid-call; the
sentinel promotes the replica; the call goes on to its own end and its state on the new master is complete (the store
re-syncs what the old master may not have passed on). A planned ``SENTINEL FAILOVER`` during calls is followed at the
switch: writes go on on the new primary, each worker logs its address, no live call is marked ended."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from _front import ROOT, long_test, stop_process, wait_for

from bridge.devkit.ports import free_port_block
from bridge.devkit.sentinel import SentinelSet, sentinel_binaries
from bridge.emulator import EmulatorServer
from bridge.store import keys
from bridge.store.calls import reap_dead_workers
from bridge.store.reportfile import read_reports

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("cpu"),  # three Redis, three sentinels and a pool: one CPU-heavy test at a time
    pytest.mark.skipif(
        sentinel_binaries() is None,
        reason="redis-server and redis-sentinel are not installed (apt-get install redis-server redis-sentinel)",
    ),
]


@long_test
async def test_a_sentinel_failover_mid_call_keeps_the_call_and_its_state(tmp_path: Path) -> None:
    redis_set = SentinelSet(tmp_path)
    serve: subprocess.Popen[bytes] | None = None
    try:
        await wait_for(redis_set.ready, "master, replica and sentinel up", 30)
        async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
            sip_port, reports = free_port_block(1), tmp_path / "calls.jsonl"
            env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "REDIS_URL")}
            serve = subprocess.Popen(  # noqa: ASYNC220 (a long-lived server, stopped in finally)
                [sys.executable, "-m", "bridge", "serve", "--workers", "1", "--sip-port", str(sip_port),
                 "--realtime-url", emulator.base_url, "--redis-url", redis_set.url, "--dialplans",
                 str(ROOT / "dialplans"), "--report-file", str(reports)],
                env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(tmp_path / "serve.stderr").open("wb"),
            )  # fmt: skip
            master = aioredis.Redis(port=redis_set.master_port, decode_responses=True)
            call = asyncio.create_task(_softphone(sip_port, 14.0))

            async def live_call() -> str | None:
                async for key in master.scan_iter(match="cb:call:*"):
                    if not key.endswith(":events") and await master.hget(key, "phase") not in (None, "IDLE"):
                        return str(await master.hget(key, "call_id"))
                return None

            call_id = await wait_for(live_call, "the call's state on the master", 30)
            await master.aclose()
            redis_set.master.send_signal(signal.SIGKILL)  # mid-call

            async def promoted() -> bool:
                return await redis_set.master_address() == ("127.0.0.1", redis_set.replica_port)

            await wait_for(promoted, "the replica promoted", 30)
            phone = await call
            # the caller never noticed: answered, and it was the caller who hung up, at its own time
            assert phone["answered"] and phone["hangup_by"] == "local" and phone["duration_s"] >= 13.5, phone

            async def reported() -> dict[str, Any] | None:
                records = read_reports(reports)
                return records[-1] if records else None

            report = await wait_for(reported, "the call's report", 15)
            assert report["call_id"] == call_id and report["end_reason"].startswith("caller hung up")

            new_master = aioredis.Redis(port=redis_set.replica_port, decode_responses=True)
            try:

                async def final_state() -> dict[str, str] | None:
                    state = await new_master.hgetall(keys.call(call_id))
                    return state if state.get("phase") == "ENDED" else None

                state = await wait_for(final_state, "the call's final state on the new master", 15)
                assert state["end_reason"] == report["end_reason"]
                for name in ("call_id", "worker", "caller", "called", "dialplan", "dialect", "model", "started_at"):
                    assert state.get(name), (name, state)
                assert state["dialect"] == report["dialect"] and state["dialplan"] == report["dialplan"]
                # the event stream holds the whole conversation, in order, and the end
                entries = await new_master.xrange(keys.call_events(call_id))
                kinds = [fields["kind"] for _, fields in entries]
                said = [(fields["kind"], fields["summary"]) for _, fields in entries if "transcript" in fields["kind"]]
                expected = [("caller_transcript", t) for t in report["caller_transcript"]]
                expected += [("agent_transcript", t) for t in report["agent_transcript"]]
                assert sorted(said) == sorted(expected) and said, (said, expected)
                assert kinds[-1] == "ended"
                assert not await new_master.sismember(keys.worker_calls(state["worker"]), call_id)
            finally:
                await new_master.aclose()
    finally:
        if serve is not None:
            stop_process(serve)
        redis_set.stop()
    assert serve.returncode == 0, (tmp_path / "serve.stderr").read_text()[-3000:]


async def _softphone(port: int, seconds: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "call", f"sip:1000@127.0.0.1:{port}", "--play",
        str(ROOT / "bridge" / "assets" / "caller_hours.wav"), "--loop", "--hangup-after", str(seconds), "--json",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


# the planned failover's calls: up about a second before the failover, whose writes resume within 3 s of the switch
PLANNED_CALL_S = 10.0


@long_test
async def test_a_planned_failover_during_calls_is_followed_at_the_switch_and_ends_no_call(tmp_path: Path) -> None:
    redis_set = SentinelSet(tmp_path)
    serve: subprocess.Popen[bytes] | None = None
    stderr = tmp_path / "serve.stderr"
    tasks: list[asyncio.Task[Any]] = []
    new_primary = aioredis.Redis(port=redis_set.replica_port, decode_responses=True)
    switches = redis_set.sentinel_client().pubsub()
    try:
        await wait_for(redis_set.ready, "master, replica and sentinel up", 30)
        await switches.subscribe("+switch-master")
        async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
            sip_port, http_port, reports = free_port_block(2), free_port_block(1), tmp_path / "calls.jsonl"
            env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "REDIS_URL")}
            serve = subprocess.Popen(  # noqa: ASYNC220 (a long-lived server, stopped in finally)
                [sys.executable, "-m", "bridge", "serve", "--workers", "2", "--sip-port", str(sip_port),
                 "--http-port", str(http_port), "--realtime-url", emulator.base_url, "--redis-url", redis_set.url,
                 "--dialplans", str(ROOT / "dialplans"), "--report-file", str(reports)],
                env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr.open("wb"),
            )  # fmt: skip
            # one call on each worker; their state reaches the replica (the primary to be) through replication
            calls = [asyncio.create_task(_softphone(sip_port + i, PLANNED_CALL_S)) for i in range(2)]

            async def live_calls() -> list[str] | None:
                found = []
                async for key in new_primary.scan_iter(match="cb:call:*"):
                    if not key.endswith(":events") and await new_primary.hget(key, "phase") not in (None, "IDLE"):
                        found.append(str(await new_primary.hget(key, "call_id")))
                return found if len(found) == 2 else None

            call_ids = await wait_for(live_calls, "both calls' state on the replica", 40)
            reaped: dict[str, list[str]] = {}
            health: list[dict[str, Any]] = []
            tasks += [
                asyncio.create_task(_reap_all_the_time(new_primary, reaped)),  # another node's reaper, at its worst
                asyncio.create_task(_watch_health(f"http://127.0.0.1:{http_port}/healthz", health)),
            ]
            await redis_set.failover()

            async def switched() -> Any:
                return await switches.get_message(ignore_subscribe_messages=True, timeout=0.5)

            message = await wait_for(switched, "+switch-master", 30)
            assert str(message["data"]).split()[3:] == ["127.0.0.1", str(redis_set.replica_port)]
            at_switch = {c: await new_primary.hget(keys.call(c), "last_user_audio_seq") for c in call_ids}

            async def resumed() -> bool:  # the calls' progress moves on the new primary again
                now = {c: await new_primary.hget(keys.call(c), "last_user_audio_seq") for c in call_ids}
                return all(int(now[c] or 0) > int(at_switch[c] or 0) for c in call_ids)

            await wait_for(resumed, "both calls' writes on the new primary", 3.0, every_s=0.05)  # the bound
            phones = await asyncio.gather(*calls)
            for phone in phones:  # the callers never noticed, and it was each caller who hung up, at its own time
                assert (
                    phone["answered"] and phone["hangup_by"] == "local" and phone["duration_s"] >= PLANNED_CALL_S - 0.5
                ), phone

            async def reported() -> list[dict[str, Any]] | None:
                records = read_reports(reports)
                return records if len(records) == 2 else None

            for report in await wait_for(reported, "both calls' reports", 15):
                assert report["call_id"] in call_ids and report["end_reason"].startswith("caller hung up"), report

                async def final_state(call_id: str = report["call_id"]) -> dict[str, str] | None:
                    state = await new_primary.hgetall(keys.call(call_id))
                    return state if state.get("phase") == "ENDED" else None

                state = await wait_for(final_state, "the call's final state on the new primary", 15)
                assert state["end_reason"] == report["end_reason"], state
            assert not reaped, reaped  # no live call was ever taken for a dead worker's
            log = stderr.read_text(errors="replace")
            moved = [line for line in log.splitlines() if "primary moved to" in line]
            assert sum(f"127.0.0.1:{redis_set.replica_port}" in line for line in moved) >= 2, moved  # each worker
            # if writes waited long enough for /healthz to see it, it said "degraded" then
            waited = [float(s) for s in re.findall(r"is back after ([0-9.]+) s", log)]
            if max(waited, default=0.0) >= 2.5:
                assert any((h.get("redis") or {}).get("state") == "degraded" for h in health), (waited, health)
            assert health and all(h.get("redis") for h in health), health[-1:]
    finally:
        for task in tasks:
            task.cancel()
        await switches.aclose()  # type: ignore[no-untyped-call]
        await new_primary.aclose()
        if serve is not None:
            stop_process(serve)
        redis_set.stop()
    assert serve.returncode == 0, stderr.read_text()[-3000:]


async def _reap_all_the_time(client: aioredis.Redis, reaped: dict[str, list[str]]) -> None:
    while True:
        with contextlib.suppress(aioredis.RedisError, OSError):
            for worker, calls in (await reap_dead_workers(client)).items():
                reaped.setdefault(worker, []).extend(calls)
        await asyncio.sleep(0.1)


async def _watch_health(url: str, seen: list[dict[str, Any]]) -> None:
    def get() -> dict[str, Any]:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # our own serve's loopback address
                return dict(json.load(answer))
        except urllib.error.HTTPError as refused:
            return dict(json.load(refused))

    while True:
        with contextlib.suppress(OSError, ValueError):
            seen.append(await asyncio.to_thread(get))
        await asyncio.sleep(0.2)
