"""Redis that survives losing its master: `serve --redis-url redis+sentinel://...` with a real master, replica and
sentinel (Debian's redis-server and redis-sentinel). The master is killed mid-call; the sentinel promotes the replica;
the call goes on to its own end and its state on the new master is complete (the store re-syncs what the old master
may not have passed on)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from _front import ROOT, long_test, stop_process, wait_for

from bridge.devkit.ports import free_port_block
from bridge.emulator import EmulatorServer
from bridge.store import keys
from bridge.store.reportfile import read_reports

REDIS_SERVER, REDIS_SENTINEL = shutil.which("redis-server"), shutil.which("redis-sentinel")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("cpu"),  # three Redis, three sentinels and a pool: one CPU-heavy test at a time
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed (apt-get install redis-server)"),
    pytest.mark.skipif(
        REDIS_SENTINEL is None, reason="redis-sentinel is not installed (apt-get install redis-sentinel)"
    ),
]
SERVICE = "callbridge"


class SentinelSet:
    """A master, a replica and one sentinel (quorum 1) on loopback, nothing on disk but their configs."""

    def __init__(self, tmp: Path) -> None:
        self.master_port, self.replica_port, self.sentinel_port = (free_port_block(1) for _ in range(3))
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)]
        assert REDIS_SERVER is not None and REDIS_SENTINEL is not None
        self.master = subprocess.Popen([REDIS_SERVER, "--port", str(self.master_port), *common], **_quiet())
        self.replica = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.replica_port),
                *common,
                "--replicaof",
                "127.0.0.1",
                str(self.master_port),
            ],
            **_quiet(),
        )
        conf = tmp / "sentinel.conf"  # the sentinel rewrites its config as it learns: a file of its own
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {tmp}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
        )
        self.sentinel = subprocess.Popen([REDIS_SENTINEL, str(conf)], **_quiet())

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}"

    async def master_address(self) -> tuple[str, int]:
        client = aioredis.Redis(port=self.sentinel_port, decode_responses=True)
        try:
            host, port = await client.execute_command("SENTINEL", "get-master-addr-by-name", SERVICE)
            return str(host), int(port)
        finally:
            await client.aclose()

    async def ready(self) -> bool:
        """The replica follows the master and the sentinel knows both."""
        try:
            replica = aioredis.Redis(port=self.replica_port, decode_responses=True)
            sentinel = aioredis.Redis(port=self.sentinel_port, decode_responses=True)
            try:
                link = (await replica.info("replication")).get("master_link_status")
                replicas = await sentinel.execute_command("SENTINEL", "replicas", SERVICE)
                return link == "up" and len(replicas) == 1
            finally:
                await replica.aclose()
                await sentinel.aclose()
        except (OSError, aioredis.RedisError):
            return False

    def stop(self) -> None:
        for proc in (self.sentinel, self.replica, self.master):
            stop_process(proc, 10)


def _quiet() -> dict[str, Any]:
    return {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


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
