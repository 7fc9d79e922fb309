"""The console's test stack: a real Redis, the Realtime emulator (in-process), ``callbridge serve`` with its HTTP port
and both supervisor tokens, a real Chromium (:mod:`_cdp`), and softphone calls (``python -m bridge call``).

Test dialplans (called number -> plan):

    4000 (and "*")  desk     GA, pcm16, the caller speaks first
    5000            canary   dialect "rollout" with no variants of its own: GA against beta (beta safe; no flag: beta)
    6000            line     GA, pcm16, the agent greets first
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from _cdp import CHROMIUM, Browser, Page

from bridge.audio.frames import SAMPLE_RATE
from bridge.audio.wav import read_wav, write_wav
from bridge.devkit.ports import free_port
from bridge.devkit.process import stop_process
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.emulator import EmulatorServer
from bridge.store import keys
from bridge.store.reportfile import read_reports

ROOT = Path(__file__).resolve().parents[3]
OPERATOR_TOKEN = "op-7c1f0e2a9b8d4c6e5f3a1b0c9d8e7f6a"
READONLY_TOKEN = "ro-1a2b3c4d5e6f708192a3b4c5d6e7f809"
VAD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 400}

needs_browser_stack = pytest.mark.skipif(
    CHROMIUM is None or redis_server_binary() is None,
    reason="needs Debian's chromium (apt-get install chromium) and a redis-server binary",
)


def write_dialplans(directory: Path, transfer_target: str | None = None, goodbye_s: float | None = None) -> Path:
    """The test plans; ``transfer_target``: the "line" plan's (a supervisor's transfer goes there); ``goodbye_s``:
    every plan's ``max_call_goodbye_s`` (the most a hang-up waits for a quiet moment to say the goodbye in; the
    plan's default, 15 s, if None)."""
    directory.mkdir(parents=True, exist_ok=True)
    plans = (("desk", ["4000", "*"], "ga", "pcm16", None), ("canary", ["5000"], "rollout", "pcm16", None),
             ("line", ["6000"], "ga", "pcm16", "Greet the caller."))  # fmt: skip
    for name, match, dialect, audio_format, greeting in plans:
        plan = {
            "name": name,
            "match": match,
            "dialect": dialect,
            "greeting": greeting,
            "answer_timeout_s": 3,
            "profile": {"instructions": f"Test plan {name}.", "voice": "alloy", "audio_format": audio_format,
                        "turn_detection": VAD, "tools": ["end_call"]},
        }  # fmt: skip
        if name == "line" and transfer_target:
            plan["transfer_target"] = transfer_target
        if goodbye_s is not None:
            plan["max_call_goodbye_s"] = goodbye_s
        (directory / f"{name}.yaml").write_text(json.dumps(plan))  # JSON is YAML
    return directory


def caller_wav(path: Path, lead_in_s: float = 0.5) -> Path:
    """The bundled caller recording (8 kHz PCM16) after ``lead_in_s`` of silence."""
    write_wav(path, bytes(int(SAMPLE_RATE * 2 * lead_in_s)) + read_wav(ROOT / "bridge" / "assets" / "caller_hours.wav"))
    return path


@dataclass
class Stack:
    proc: subprocess.Popen[bytes]
    sip_port: int
    http_port: int
    log: Path
    redis: EmbeddedRedis
    emulator: EmulatorServer
    client: aioredis.Redis

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    async def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as http, http.get(self.url.rstrip("/") + path, headers=headers) as r:
            text = await r.text()
            return r.status, (json.loads(text) if r.content_type == "application/json" else text)

    async def put(self, path: str, body: Any, token: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession() as http,
            http.put(self.url.rstrip("/") + path, headers=headers, json=body) as r,
        ):
            return r.status, await r.json()

    async def worker_pid(self) -> int:
        _, health = await self.get("/healthz")
        return int(health["workers"][0]["pid"])

    async def entry_time(self, call_id: str, kind: str, within: float = 10.0) -> float:
        """``t`` of the call's first stream entry of ``kind`` (the time its session noted it)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for _, fields in await self.client.xrange(keys.call_events(call_id)):
                if fields.get("kind") == kind:
                    return float(fields["t"])
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no {kind} entry for call {call_id}")

    async def report(self, call_id: str, within: float = 10.0) -> dict[str, Any]:
        """The finished call's report, as its worker wrote it to ``calls.jsonl``."""
        path = self.log.with_name("calls.jsonl")
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for record in read_reports(path):
                if call_id in (record.get("sip_call_id"), record.get("call_id")):
                    return dict(record)
            await asyncio.sleep(0.1)
        raise TimeoutError(f"no report for call {call_id}")

    async def call_field(self, call_id: str, name: str, within: float = 10.0) -> str:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            value = await self.client.hget(keys.call(call_id), name)
            if value:
                return str(value)
            await asyncio.sleep(0.05)
        raise TimeoutError(f"call {call_id} has no {name}")


async def wait_healthy(http_port: int, proc: subprocess.Popen[bytes], within_s: float = 40) -> None:
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "serve exited"
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{http_port}/healthz") as r:
                    workers = (await r.json()).get("workers")  # none in a body that is not the health detail yet
                    if workers and all(w["alive"] and w["sip_port"] for w in workers):
                        return
            await asyncio.sleep(0.2)
    raise TimeoutError("serve did not become healthy")


@contextlib.asynccontextmanager
async def console_stack(
    tmp: Path,
    *,
    session_s: float | None = None,
    settings: dict[str, Any] | None = None,
    dialplans: Path | None = None,
    transfer_target: str | None = None,
    goodbye_s: float | None = None,
) -> AsyncIterator[Stack]:
    """Redis, the emulator and ``serve --http-port`` with both tokens (and ``settings``, as its config file, e.g.
    ``users_file``); serve's log goes to ``tmp/serve.log``, each finished call's report to ``tmp/calls.jsonl``.
    ``dialplans``: a directory of dialplans instead of the test ones (the shipped ``dialplans/``); ``goodbye_s``:
    the test plans' goodbye lead (``write_dialplans``)."""
    with EmbeddedRedis() as redis:
        async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
            sip_port, http_port = free_port(), free_port()
            env = {**os.environ, "CALLBRIDGE_SUPERVISOR_TOKEN": OPERATOR_TOKEN,
                   "CALLBRIDGE_SUPERVISOR_READONLY_TOKEN": READONLY_TOKEN}  # fmt: skip
            env.pop("OPENAI_API_KEY", None)
            # a test's stop may find a call still up: a short drain, then its goodbye (the drain's own tests:
            # tests/integration/serve/test_serve_stop_drain.py)
            env.setdefault("CALLBRIDGE_DRAIN_TIMEOUT_S", "2")
            if session_s is not None:
                env["CALLBRIDGE_SUPERVISOR_SESSION_S"] = str(session_s)
            log = tmp / "serve.log"
            config = []
            if settings:
                (tmp / "settings.yaml").write_text(json.dumps(settings))  # JSON is YAML
                config = ["--config", str(tmp / "settings.yaml")]
            with log.open("wb") as out:
                proc = subprocess.Popen(  # noqa: ASYNC220 (a long-lived server; stopped synchronously below)
                    [sys.executable, "-m", "bridge", "serve", "--workers", "1", "--sip-port", str(sip_port),
                     "--realtime-url", emulator.base_url, "--redis-url", redis.url, "--http-port", str(http_port),
                     "--dialplans", str(dialplans or write_dialplans(tmp / "dialplans", transfer_target, goodbye_s)),
                     "--report-file", str(tmp / "calls.jsonl"), *config],
                    env=env, stdout=out, stderr=out,
                )  # fmt: skip
            client = aioredis.from_url(redis.url, decode_responses=True)
            try:
                await wait_healthy(http_port, proc)
                yield Stack(proc, sip_port, http_port, log, redis, emulator, client)
            finally:
                await client.aclose()
                stop_process(proc, grace_s=45.0)  # the drain (2 s), then a goodbye within the plan's lead (15 s)
            assert proc.returncode == 0, log.read_text()[-3000:]


async def softphone(stack: Stack, number: str, play: Path, seconds: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "call", f"sip:{number}@127.0.0.1:{stack.sip_port}",
        "--play", str(play), "--hangup-after", str(seconds), "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), seconds + 60)
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


async def sign_in(page: Page, url: str, token: str, name: str = "") -> None:
    """Through the form, as a person would: type the token (and a name), press the button."""
    await page.goto(url)
    await page.wait_for("!document.getElementById('signin').hidden")
    await page.type("#token", token)
    if name:
        await page.type("#name", name)
    await page.click("#signin-button")
    await page.wait_for("!document.getElementById('console').hidden")


async def fetch(page: Page, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    """``fetch`` from inside the page (its cookies, its origin): ``[status, body text]``."""
    init = {"method": method, "headers": {"Content-Type": "application/json", **(headers or {})},
            "credentials": "same-origin"}  # fmt: skip
    if body is not None:
        init["body"] = json.dumps(body)
    return await page.eval(
        f"fetch({json.dumps(path)}, {json.dumps(init)}).then(async (r) => [r.status, await r.text()])"
    )


__all__ = ["Browser", "Page"]


# The supervisor API on calls a worker's real writer put into a real Redis (no serve): its two accounts' tokens
VIEWER = ("vic", "vic-watches-99")
SUPERVISOR = ("sam", "sam-acts-999")


@contextlib.asynccontextmanager
async def api_on_calls(
    redis_url: str, write: Any, worker: str, t0: float, trace_ui_url: str = ""
) -> AsyncIterator[tuple[Any, dict[str, str]]]:
    """The console's app (aiohttp's test server) over the calls ``write(store, clock)`` reports through a
    ``CallStore`` on ``redis_url``, its clock starting at ``t0``; with the viewer's and the supervisor's
    ``Authorization`` headers. ``trace_ui_url``: the ``tracing_ui_url`` setting."""
    from aiohttp.test_utils import TestClient, TestServer
    from fakes.clock import Clock

    from bridge.store.calls import CallStore, StoreTuning
    from bridge.supervisor.accounts import Users, add_token, add_user
    from bridge.supervisor.api import ConsoleOptions, create_app

    clock = Clock(t0)
    store = CallStore(redis_url, worker=worker, clock=clock, tuning=StoreTuning(reap_interval_s=None))
    await store.start()
    write(store, clock)
    assert await store.flush()
    users = add_user(add_user(Users(), VIEWER[0], "viewer", VIEWER[1]), SUPERVISOR[0], "supervisor", SUPERVISOR[1])
    users, vic = add_token(users, VIEWER[0])
    users, sam = add_token(users, SUPERVISOR[0])
    redis = aioredis.from_url(redis_url, decode_responses=True)
    app = create_app(
        token=None, redis=redis, rollouts=None, options=ConsoleOptions(users=users, trace_ui_url=trace_ui_url)
    )
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client, {"viewer": f"Bearer {vic}", "supervisor": f"Bearer {sam}"}
    finally:
        await client.close()
        await store.close()


async def api_get(api: tuple[Any, dict[str, str]], role: str, path: str) -> tuple[int, Any]:
    """GET ``path`` from :func:`api_on_calls`'s app as ``role``: the status and the JSON body, or (text, headers)."""
    client, auth = api
    r = await client.get(path, headers={"Authorization": auth[role]})
    body = await r.text()
    return r.status, json.loads(body) if r.content_type == "application/json" else (body, r.headers)
