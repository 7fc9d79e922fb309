"""Shared helpers for the trust-edge tests: a real ``callbridge serve`` (one worker, a private redis-server, the
Realtime emulator in-process, the console's HTTP API) logging to a file, a raw SIP caller that names a number of its
choosing in From and Contact, and readers of everything the node keeps (every Redis key, the report file, the log).

The caller is :class:`tests.integration.sip._helpers.RawSip` (its SIP) and ``RtpPeer`` (its PCMU and RFC 4733
digits), so the test knows the call's media port from the 200 OK's SDP and can aim a stranger at it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import redis.asyncio as aioredis
from jsonschema import Draft202012Validator

from bridge.audio.g711 import ulaw_decode
from bridge.devkit.ports import free_port, free_port_block
from bridge.devkit.process import stop_process
from bridge.devkit.redis_server import EmbeddedRedis
from bridge.emulator import EmulatorServer
from bridge.store import keys
from bridge.store.reportfile import read_reports
from tests.integration.sip._helpers import RawSip, RtpPacket

TOKEN = "edge-supervisor-token"
REPORT = Draft202012Validator(
    json.loads((Path(__file__).resolve().parents[3] / "docs" / "report.schema.json").read_text())
)
RATE = 8000


@dataclass
class Node:
    """A running ``serve``: its ports, its log file (stdout and stderr, the workers' lines included), its report
    file, its Redis and its emulator."""

    proc: subprocess.Popen[str]
    sip_port: int
    http_port: int
    log: Path
    reports: Path
    redis: EmbeddedRedis
    emulator: EmulatorServer

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@asynccontextmanager
async def serve_node(
    work: Path,
    plans: list[dict[str, Any]],
    env: dict[str, str] | None = None,
    *,
    front: str | None = None,
    **emulator_settings: Any,
) -> AsyncIterator[Node]:
    """``callbridge serve --workers 1`` with ``plans`` as its dialplans, healthy, stopped (by its pid) at the end;
    ``env``: more of its environment (a webhook endpoint), ``emulator_settings``: the emulator's (a fault such as
    ``upgrade_delay_ms``). ``front``: an address for the node's SIP (``--sip-host``) and its front (Kamailio) on
    ``sip_port`` there, the worker behind it on ``sip_port + 1``."""
    (work / "dialplans").mkdir(parents=True)
    for plan in plans:
        (work / "dialplans" / f"{plan['name']}.yaml").write_text(json.dumps(plan))  # JSON is YAML
    with EmbeddedRedis() as redis:
        async with EmulatorServer("127.0.0.1", 0, speed=4, **emulator_settings) as emulator:
            sip_port, http_port = (free_port_block(2) if front else free_port()), free_port()
            fronted = ["--sip-host", front, "--front", "kamailio", "--front-dir", str(work / "front")] if front else []
            env = {
                **os.environ,
                "CALLBRIDGE_SUPERVISOR_TOKEN": TOKEN,
                "XDG_STATE_HOME": str(work / "state"),
                **(env or {}),
            }
            env.pop("OPENAI_API_KEY", None)
            log = work / "serve.log"
            with log.open("w") as out:
                proc = subprocess.Popen(  # noqa: ASYNC220 (a long-lived server; stopped synchronously in finally)
                    [
                        sys.executable, "-m", "bridge", "serve", "--workers", "1", "--sip-port", str(sip_port),
                        "--realtime-url", emulator.base_url, "--redis-url", redis.url,
                        "--http-port", str(http_port), "--dialplans", str(work / "dialplans"),
                        "--report-file", str(work / "calls.jsonl"), *fronted,
                    ],
                    env=env, stdout=out, stderr=out, text=True,
                )  # fmt: skip
            node = Node(proc, sip_port, http_port, log, work / "calls.jsonl", redis, emulator)
            try:
                await _wait_healthy(node)
                yield node
            finally:
                stop_process(proc)


async def _wait_healthy(node: Node, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {node.proc.returncode}:\n{node.log.read_text()[-3000:]}")
            try:
                async with http.get(f"{node.http}/healthz") as r:
                    health = await r.json()
                    workers, front = health["workers"], health.get("front")
                    if workers and all(w["alive"] and w["sip_port"] for w in workers) and (front or {}).get("alive", 1):
                        return
            except (aiohttp.ClientError, ValueError, KeyError):
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"serve did not become healthy:\n{node.log.read_text()[-3000:]}")


async def api(node: Node, path: str) -> Any:
    """The console API's JSON for ``path``, as the supervisor (the role that sees the most)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(node.http + path, headers={"Authorization": f"Bearer {TOKEN}"}) as r,
    ):
        assert r.status == 200, (path, r.status, await r.text())
        return await r.json()


async def wait_report(node: Node, sip_call_id: str, within_s: float = 15.0) -> dict[str, Any]:
    """The worker's report line of the call with this SIP Call-ID, written when the call ends, typed as
    docs/report.schema.json says."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        for line in read_reports(node.reports):
            if line.get("sip_call_id") == sip_call_id:
                assert not (bad := [f"{e.json_path}: {e.message}" for e in REPORT.iter_errors(line)]), bad  # its schema
                return line
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no report line for {sip_call_id}:\n{node.log.read_text()[-3000:]}")


async def call_events(node: Node, call_id: str) -> list[dict[str, str]]:
    """The fields of every entry of the call's event stream in Redis, oldest first."""
    client = aioredis.from_url(node.redis.url, decode_responses=True)
    try:
        entries = await client.xrange(keys.call_events(call_id)) or []
        return [{_text(k): _text(v) for k, v in (fields or {}).items()} for _id, fields in entries]
    finally:
        await client.aclose()


async def live_call_id(node: Node, within_s: float = 5.0) -> str:
    """The bridge's id of the one live call, as the console lists it."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        calls = (await api(node, "/api/calls"))["calls"]
        if calls:
            return str(calls[0]["call_id"])
        await asyncio.sleep(0.1)
    raise TimeoutError("no live call in the console's list")


async def wait_events(node: Node, call_id: str, kind: str, count: int, within_s: float) -> list[dict[str, str]]:
    """The call's stream entries of ``kind`` in Redis once there are ``count`` (fewer after ``within_s``)."""
    deadline = time.monotonic() + within_s
    while True:
        found = [e for e in await call_events(node, call_id) if e.get("kind") == kind]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


async def dump_redis(url: str) -> str:
    """Every key of the Redis and everything it holds (strings, hashes, streams, lists, sets, sorted sets), as text."""
    client = aioredis.from_url(url, decode_responses=True)
    out: list[str] = []
    try:
        async for key in client.scan_iter("*"):
            kind = _text(await client.type(key))
            value: Any
            if kind == "string":
                value = await client.get(key)
            elif kind == "hash":
                value = await client.hgetall(key)
            elif kind == "stream":
                value = await client.xrange(key)
            elif kind == "list":
                value = await client.lrange(key, 0, -1)
            elif kind == "set":
                value = sorted(await client.smembers(key))
            elif kind == "zset":
                value = await client.zrange(key, 0, -1, withscores=True)
            else:
                value = f"<{kind}>"
            out.append(f"{_text(key)} ({kind}): {json.dumps(value, ensure_ascii=False)}")
    finally:
        await client.aclose()
    return "\n".join(out)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NumberedSip(RawSip):
    """A raw SIP caller whose From and Contact name ``number`` (a phone's own number, as a trunk sends it)."""

    def __init__(self, target_port: int, number: str, local_host: str = "127.0.0.1") -> None:
        super().__init__(target_port, local_host=local_host)
        self.number = number

    def _request(self, *args: Any, **kwargs: Any) -> bytes:
        return super()._request(*args, **kwargs).replace(b"<sip:raw@", f"<sip:{self.number}@".encode())


def decoded(packets: list[RtpPacket]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """PCMU payloads as samples (floats of the 16-bit scale)."""
    pcm = ulaw_decode(b"".join(p.payload for p in packets))
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def band_share(x: np.ndarray[Any, np.dtype[np.float64]], hz: float, rate: int = RATE) -> float:
    """Power within 40 Hz of ``hz`` as a share of the signal's total power."""
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    total = float(spectrum.sum()) or 1.0
    return float(spectrum[np.abs(freqs - hz) < 40].sum()) / total


def loud_frames(x: np.ndarray[Any, np.dtype[np.float64]], floor_dbfs: float = -40.0) -> np.ndarray[Any, Any]:
    """The 20 ms frames of ``x`` above ``floor_dbfs`` (RMS), joined."""
    n = RATE // 50
    frames = x[: len(x) // n * n].reshape(-1, n)
    level = 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) / 32768.0 + 1e-12)
    return np.asarray(frames[level > floor_dbfs].reshape(-1))


async def softphone_call(sip_port: int, number: str, *args: str, within_s: float = 60.0) -> dict[str, Any]:
    """One call from the project's pjsua2 softphone (``python -m bridge call ... --json``) to ``number`` on the node's
    SIP port, ``args`` its options; its JSON summary."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "call", f"sip:{number}@127.0.0.1:{sip_port}", "--json", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), within_s)
    return dict(json.loads(out.decode().strip().splitlines()[-1]))
