"""Day two on a real node (serve, its workers, Redis, the emulator, pjsua2 softphones): SIGUSR1 to every process of
the node drains it without dropping a call; SIGTERM lets calls finish for ``drain_timeout_s``, then says goodbye to
the rest (recorded as ended by shutdown); SIGHUP reads the users file again without touching a call; a rolling
restart replaces every worker under calls and drops none. Every end says who ended the call."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from _serve_start import Started, clean_env, invite_status, port_block
from test_serve_operable import ROOT, caller_wav

from bridge.devkit.ports import free_port
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.emulator import EmulatorServer
from bridge.store.reportfile import read_reports

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary")
TOKEN = "drain-test-token"


class Node:
    def __init__(self, serve: Started, sip_port: int, http_port: int, tmp: Path) -> None:
        self.serve, self.sip_port, self.http_port, self.tmp = serve, sip_port, http_port, tmp
        self.http = f"http://127.0.0.1:{http_port}"
        self.reports = tmp / "calls.jsonl"
        self.args: list[str] = []

    async def get(self, path: str, token: str = TOKEN) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.http + path, headers={"Authorization": f"Bearer {token}"}) as r,
        ):
            return r.status, await r.json(content_type=None)

    async def live(self) -> list[dict[str, Any]]:
        status, body = await self.get("/api/calls")
        return list(body["calls"]) if status == 200 else []

    async def pids(self) -> list[int]:
        _, body = await self.get("/healthz")
        return [int(w["pid"]) for w in body["workers"]]

    def log(self) -> str:
        return self.serve.stderr(200_000)


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedRedis, EmulatorServer]]:
    with EmbeddedRedis() as redis:
        async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
            yield redis, emulator


def start(
    tmp: Path, stack: tuple[EmbeddedRedis, EmulatorServer], workers: int, dialplans: Path | None = None, **env: str
) -> Node:
    redis, emulator = stack
    sip_port, http_port = port_block(workers), free_port()
    args = ["--workers", str(workers), "--sip-port", str(sip_port), "--realtime-url", emulator.base_url,
            "--redis-url", redis.url, "--dialplans", str(dialplans or ROOT / "dialplans")]  # fmt: skip
    serve = Started(
        tmp, "serve", [*args, "--http-port", str(http_port), "--report-file", str(tmp / "calls.jsonl")],
        clean_env(CALLBRIDGE_SUPERVISOR_TOKEN=TOKEN, CALLBRIDGE_CONTROL_SOCKET=str(tmp / "ctl.sock"), **env),
        ROOT,
    )  # fmt: skip
    node = Node(serve, sip_port, http_port, tmp)
    node.args = args
    return node


async def phone(port: int, seconds: float, play: Path, record: Path | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "call", f"sip:1000@127.0.0.1:{port}", "--play", str(play),
        "--hangup-after", str(seconds), "--json", *(["--record", str(record)] if record else []),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def summary(proc: asyncio.subprocess.Process, within_s: float = 120.0) -> dict[str, Any]:
    out, _ = await asyncio.wait_for(proc.communicate(), within_s)
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


async def exited(node: Node, within_s: float = 120.0) -> int:
    deadline = time.monotonic() + within_s
    while node.serve.proc.poll() is None:
        assert time.monotonic() < deadline, node.log()[-3000:]
        await asyncio.sleep(0.2)
    return node.serve.proc.returncode


async def test_usr1_to_every_process_drains_the_node_and_drops_no_call(tmp_path: Path, stack: Any) -> None:
    node = start(tmp_path, stack, 2)
    try:
        await node.serve.ready("127.0.0.1", node.http_port, workers=2)
        play = caller_wav(tmp_path / "caller.wav")
        phones = [await phone(node.sip_port + i % 2, 14.0, play) for i in range(4)]  # 2 calls on each worker

        async def four_live() -> bool:
            return len(await node.live()) == 4

        await wait_for(four_live, "4 calls never went live", 40)
        pids = [node.serve.proc.pid, *await node.pids()]
        for pid in pids:  # as `systemctl kill -s USR1` does: every process of the unit
            os.kill(pid, signal.SIGUSR1)

        async def draining() -> bool:
            return all(f"worker {i} draining, 2 call(s)" in node.log() for i in range(2))

        await wait_for(draining, "the workers never said they were draining")
        for i in range(2):  # a new call is refused by each worker (a front would try another node)
            assert await asyncio.to_thread(invite_status, "127.0.0.1", node.sip_port + i) == 503
        ended = [await summary(p) for p in phones]
        assert all(s["answered"] and s["hangup_by"] == "local" for s in ended), ended  # each caller hung up
        assert await node.pids() == pids[1:]  # no worker died
        reports = read_reports(node.reports)
        assert [r["ended_by"] for r in reports] == ["caller"] * 4, reports
        assert all(r["end_reason"].startswith("caller hung up") for r in reports)
    finally:
        node.serve.stop(120)
    assert "died" not in node.log(), node.log()[-3000:]


async def test_sigterm_lets_calls_finish_then_says_goodbye_to_the_rest(tmp_path: Path, stack: Any) -> None:
    redis, _ = stack
    node = start(tmp_path, stack, 1, CALLBRIDGE_DRAIN_TIMEOUT_S="14")
    heard = tmp_path / "heard.wav"
    await node.serve.ready("127.0.0.1", node.http_port, workers=1)
    play = caller_wav(tmp_path / "caller.wav")
    short = await phone(node.sip_port, 6.0, play)
    long = await phone(node.sip_port, 120.0, play, record=heard)

    async def both_live() -> bool:
        return len(await node.live()) == 2

    try:
        await wait_for(both_live, "the 2 calls never went live", 40)
        node.serve.proc.send_signal(signal.SIGTERM)

        async def draining() -> bool:
            return "draining, 2 call(s)" in node.log()

        await wait_for(draining, "serve never said it was draining")
        assert await asyncio.to_thread(invite_status, "127.0.0.1", node.sip_port) == 503
        first, second = await summary(short), await summary(long)
        assert await exited(node) == 0, node.log()[-3000:]
    finally:
        node.serve.stop(5)
    assert first["answered"] and first["hangup_by"] == "local", first  # ended by its caller within the drain
    assert second["answered"] and second["hangup_by"] == "remote", second  # the bridge's BYE, after ...
    with wave.open(str(heard)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)
        tail = pcm[-3 * w.getframerate() :]
    assert np.sqrt(np.mean(tail**2)) > 300, "silence before the BYE: no goodbye was heard"  # ... a goodbye
    by = {r["ended_by"]: r for r in read_reports(node.reports)}
    assert set(by) == {"caller", "shutdown"}, by
    assert by["shutdown"]["end_reason"] == "ended by the bridge: shutting down"
    assert by["caller"]["end_reason"].startswith("caller hung up")
    import redis.asyncio as aioredis

    from bridge.store import keys

    client = aioredis.from_url(redis.url, decode_responses=True)
    try:
        state = await client.hgetall(keys.call(by["shutdown"]["call_id"]))
    finally:
        await client.aclose()
    assert (state["ended_by"], state["end_reason"]) == ("shutdown", "ended by the bridge: shutting down"), state
    log = node.log()
    assert "drain_timeout_s passed: ending 1 call(s) with a goodbye (ended by shutdown)" in log
    assert f"call {by['shutdown']['call_id']} ended by shutdown" in log
    assert log.rstrip().endswith("stopped"), log[-2000:]


def users(tmp: Path, *args: str, password: str = "") -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "users", *args, "--file", str(tmp / "users.yaml")],
        input=password, capture_output=True, text=True, check=True, env=clean_env(), cwd=ROOT,
    )  # fmt: skip
    return done.stdout.strip()


async def test_sighup_reads_the_users_file_again_and_touches_no_call(tmp_path: Path, stack: Any) -> None:
    users(tmp_path, "add", "alice", "--role", "viewer", "--password-stdin", password="alice-password-1")
    alice = users(tmp_path, "token", "alice")
    node = start(tmp_path, stack, 1, CALLBRIDGE_USERS_FILE=str(tmp_path / "users.yaml"))
    try:
        await node.serve.ready("127.0.0.1", node.http_port, workers=1)
        assert (await node.get("/api/calls", alice))[0] == 200
        call = await phone(node.sip_port, 10.0, caller_wav(tmp_path / "caller.wav"))

        async def live() -> bool:
            return len((await node.get("/api/calls", alice))[1]["calls"]) == 1

        await wait_for(live, "the call never went live", 40)
        users(tmp_path, "add", "bob", "--role", "viewer", "--password-stdin", password="bob-password-12")
        bob = users(tmp_path, "token", "bob")
        users(tmp_path, "remove", "alice")
        node.serve.proc.send_signal(signal.SIGHUP)
        hup = time.monotonic()

        async def alice_refused() -> bool:
            return (await node.get("/api/calls", alice))[0] == 401

        await wait_for(alice_refused, "the removed account's token still works", 5)
        assert time.monotonic() - hup < 5
        assert (await node.get("/api/calls", bob))[0] == 200  # the added account's token works
        ended = await summary(call)
        assert ended["answered"] and ended["hangup_by"] == "local", ended  # the call went on to its caller's end
        assert node.serve.proc.poll() is None, node.log()[-3000:]  # SIGHUP does not stop serve
        (report,) = read_reports(node.reports)
        assert report["ended_by"] == "caller", report
    finally:
        node.serve.stop(60)
    assert "reload: users file" in node.log()


async def test_a_rolling_restart_under_calls_drops_none(tmp_path: Path, stack: Any) -> None:
    node = start(tmp_path, stack, 2, CALLBRIDGE_DRAIN_TIMEOUT_S="60")
    try:
        await node.serve.ready("127.0.0.1", node.http_port, workers=2)
        before = await node.pids()
        play = caller_wav(tmp_path / "caller.wav")
        phones = [await phone(node.sip_port + i, 8.0, play) for i in range(2)]  # one call on each worker

        async def both_live() -> bool:
            return len(await node.live()) == 2

        await wait_for(both_live, "the 2 calls never went live", 40)
        restart = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "restart", "--rolling", *node.args,
            env=clean_env(CALLBRIDGE_CONTROL_SOCKET=str(tmp_path / "ctl.sock")), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(restart.communicate(), 240)
        lines = out.decode().splitlines()
        assert restart.returncode == 0 and lines[-1] == "ok", (out.decode(), err.decode())
        assert any("worker 0: replaced" in line for line in lines) and any("worker 1: replaced" in x for x in lines)
        ended = [await summary(p) for p in phones]
        assert all(s["answered"] and s["hangup_by"] == "local" for s in ended), ended
        after = await node.pids()
        assert not set(after) & set(before), (before, after)  # every worker replaced
        reports = read_reports(node.reports)
        assert [r["ended_by"] for r in reports] == ["caller", "caller"], reports
    finally:
        node.serve.stop(120)
    assert "died" not in node.log(), node.log()[-3000:]
