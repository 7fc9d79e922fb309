"""`callbridge serve` is operable: real SIP calls land in a real Redis (and survive its restart), /metrics has every
metric per dialect, the supervisor API wants its token, and the rollout and calls commands work against it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.devkit.ports import free_port
from bridge.devkit.process import stop_process
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.emulator import EmulatorServer
from bridge.store import keys
from bridge.store.reportfile import read_reports

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "supervisor-test-token"
pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary")


def caller_wav(path: Path, lead_in_s: float = 1.0) -> Path:
    with wave.open(str(ROOT / "bridge" / "assets" / "caller_hours.wav"), "rb") as src:
        speech = src.readframes(src.getnframes())
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(bytes(int(16000 * lead_in_s)) + speech)
    return path


class Serve:
    def __init__(self, proc: subprocess.Popen[str], sip_port: int, http_port: int, reports: Path) -> None:
        self.proc, self.sip_port, self.http_port, self.reports = proc, sip_port, http_port, reports
        self.http = f"http://127.0.0.1:{http_port}"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[Serve, EmbeddedRedis, EmulatorServer]]:
    with EmbeddedRedis() as redis:
        async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
            sip_port, http_port = free_port(), free_port()
            reports = tmp_path / "calls.jsonl"
            env = {**os.environ, "CALLBRIDGE_SUPERVISOR_TOKEN": TOKEN}
            env.pop("OPENAI_API_KEY", None)
            proc = subprocess.Popen(  # noqa: ASYNC220 (a long-lived server; stopped synchronously in finally)
                [sys.executable, "-m", "bridge", "serve", "--workers", "1", "--sip-port", str(sip_port),
                 "--realtime-url", emulator.base_url, "--redis-url", redis.url, "--http-port", str(http_port),
                 "--dialplans", str(ROOT / "dialplans"), "--report-file", str(reports)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            serve = Serve(proc, sip_port, http_port, reports)
            try:
                await wait_healthy(serve)
                yield serve, redis, emulator
            finally:
                stop_serve(proc)


def stop_serve(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then (after 15 s) SIGKILL; a clean stop exits 0 (else the assertion shows serve's stderr)."""
    assert stop_process(proc) == 0, (proc.stderr.read() if proc.stderr else "")[-2000:]


async def wait_healthy(serve: Serve, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(f"{serve.http}/healthz") as r:
                    workers = (await r.json()).get("workers")  # none in a body that is not the health detail yet
                    if workers and all(w["alive"] and w["sip_port"] for w in workers):
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError("serve did not become healthy")


async def api(path: str, serve: Serve, token: str | None = TOKEN, method: str = "GET", body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, serve.http + path, headers=headers, json=body) as r,
    ):
        return r.status, await r.json()


async def softphone(serve: Serve, number: str, play: Path, seconds: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "call", f"sip:{number}@127.0.0.1:{serve.sip_port}",
        "--play", str(play), "--hangup-after", str(seconds), "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


async def test_calls_in_redis_metrics_api_and_cli(
    stack: tuple[Serve, EmbeddedRedis, EmulatorServer], tmp_path: Path
) -> None:
    serve, redis, _ = stack
    play = caller_wav(tmp_path / "caller.wav")

    # -- the supervisor API refuses without its token, and leaks nothing
    for path in ("/api/calls", "/api/rollout", "/api/calls/whatever"):
        status, body = await api(path, serve, token=None)
        assert (status, body) == (401, {"error": "unauthorized"})
        status, body = await api(path, serve, token="wrong")
        assert status == 401

    # -- a GA call (dialplan support, 1000): watch its phases in Redis while it runs; restart Redis mid-call
    call = asyncio.create_task(softphone(serve, "1000", play, seconds=8.0))
    seen_phases: list[str] = []
    call_id = None
    restarted = False
    t0 = time.monotonic()
    while not call.done():
        status, body = await api("/api/calls", serve)
        if status == 200 and body["calls"]:
            live = body["calls"][0]
            call_id = live["call_id"]
            if not seen_phases or seen_phases[-1] != live["phase"]:
                seen_phases.append(live["phase"])
        if not restarted and time.monotonic() - t0 > 3.0 and call_id:
            redis.restart()  # an empty Redis comes back on the same port mid-call
            restarted = True
        await asyncio.sleep(0.15)
    phone = await call
    assert phone["answered"] and phone["sip_status"] == 200
    assert phone["duration_s"] >= 7.5, "the Redis restart must not drop the call"
    assert restarted and call_id is not None
    assert len(set(seen_phases)) >= 2, seen_phases  # the hash followed the call through its phases

    # after the restart the writer re-synced: the call's hash is complete again
    status, detail = await asyncio.wait_for(_wait_call(serve, call_id), 10)
    state = detail["call"]
    for field in ("call_id", "worker", "caller", "called", "dialplan", "dialect", "model", "voice", "phase",
                  "session_id", "response_id", "last_user_audio_seq", "started_at", "last_activity"):  # fmt: skip
        assert state.get(field), f"field {field} empty after Redis restart: {state}"
    assert (state["called"], state["dialplan"], state["dialect"]) == ("1000", "support", "ga")
    assert int(state["last_user_audio_seq"]) > 100  # 20 ms frames appended
    kinds = [e["kind"] for e in detail["events"]]
    assert "agent_transcript" in kinds and "caller_transcript" in kinds
    assert {k.removesuffix("_unix") for k in state} <= set(keys.CALL_FIELDS)  # a moment's Unix twin beside it

    # -- a beta call (billing, 2000, G.711 passthrough)
    phone = await softphone(serve, "2000", play, seconds=6.0)
    assert phone["answered"]

    # -- /metrics has every metric, per dialect, with plausible values
    async with aiohttp.ClientSession() as http, http.get(f"{serve.http}/metrics") as r:
        text = await r.text()
    for dialect in ("ga", "beta"):
        assert f'callbridge_calls_started_total{{dialect="{dialect}"' in text
        assert f'callbridge_calls_ended_total{{dialect="{dialect}"' in text
        for segment in ("capture", "uplink", "inference", "downlink", "playback", "first_reply", "turn"):
            assert f'callbridge_latency_seconds_count{{dialect="{dialect}",segment="{segment}"}}' in text, segment
    # the greeting: only where the agent spoke first (the support plan's GA call)
    assert 'callbridge_latency_seconds_count{dialect="ga",segment="greeting"}' in text
    for name in ("callbridge_calls_active", "callbridge_realtime_connect_failures_total",
                 "callbridge_realtime_dropped_sessions_total", "callbridge_realtime_reconnects_total",
                 "callbridge_barge_ins_total", "callbridge_truncate_error_seconds",
                 "callbridge_playout_underruns_total", "callbridge_playout_dropped_frames_total",
                 "callbridge_redis_write_queue_depth", "callbridge_credential_rotations_total",
                 "callbridge_rollout_rollbacks_total"):  # fmt: skip
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    assert "call_id" not in text and "sk-" not in text

    # -- the support calls ran on the shipped rollout's safe variant; their cost is in the report and /metrics
    ga_report = next(r for r in read_reports(serve.reports) if r["dialplan"] == "support")
    assert (ga_report["variant"], ga_report["dialect"], ga_report["model"], ga_report["voice"]) == (
        "gpt-realtime-2.1", "ga", "gpt-realtime-2.1", "alloy",
    )  # fmt: skip
    tokens = ga_report["usage"]
    assert tokens["input_tokens"] > 0 and tokens["output_tokens"] > 0  # the emulator's response.done usage
    expected = (tokens["input_tokens"] * 32.0 + tokens["output_tokens"] * 64.0) / 1e6  # prices.yaml, gpt-realtime-2.1
    assert ga_report["cost_usd"] == pytest.approx(expected, abs=1e-6) and ga_report["cost_usd"] > 0
    cost = _metric(text, "callbridge_variant_cost_usd_total", dialplan="support", variant="gpt-realtime-2.1")
    assert cost == pytest.approx(ga_report["cost_usd"], rel=1e-3)
    calls = _metric(
        text, "callbridge_variant_calls_total", dialplan="support", outcome="ok", variant="gpt-realtime-2.1"
    )
    assert calls == 1
    shutdown = _metric(  # the current models: no shutdown announced, never (+Inf), not a date
        text, "callbridge_rollout_model_shutdown_timestamp_seconds",
        dialplan="support", model="gpt-realtime-2.1", variant="gpt-realtime-2.1",
    )  # fmt: skip
    assert shutdown == float("inf")

    # -- rollout through the CLI, visible in the API; calls --json works
    env = {**os.environ, "REDIS_URL": redis.url}
    dialplans = ("--dialplans", str(ROOT / "dialplans"))
    weights = ("--weights", "gpt-realtime-2.1=75,gpt-realtime-2.1-mini=25")
    rc, out, err = await run_cli(env, "rollout", "set", "support", *weights, "--reason", "canary", *dialplans)
    assert rc == 0, err
    status, body = await api("/api/rollout", serve)
    assert status == 200 and body["flags"]["support"]["weights"] == {
        "gpt-realtime-2.1": 75,
        "gpt-realtime-2.1-mini": 25,
    }
    assert [v["share_percent"] for v in body["rollouts"]["support"]["variants"]] == [75, 25]
    assert body["audit"][0]["reason"] == "canary"
    status, body = await api("/api/rollout/support", serve, method="PUT", body={"kill": True, "reason": "incident"})
    assert status == 200 and body["flag"]["kill"] is True
    for change, field in (
        ({"kill": False}, "reason"),
        ({"weights": {"gpt-realtime-3": 1}, "reason": "r"}, "weights.gpt-realtime-3"),
        ({"weights": "gpt-realtime-2.1=x", "reason": "r"}, "weights.gpt-realtime-2.1"),
        ({"ga_percent": 5, "reason": "r"}, "ga_percent"),
    ):
        status, body = await api("/api/rollout/support", serve, method="PUT", body=change)
        assert status == 400 and body["field"] == field, body
    rc, out, err = await run_cli(env, "rollout", "show", "support", "--json", *dialplans)
    assert rc == 0 and json.loads(out)["dialplans"][0]["flag"]["kill"] is True, err
    rc, out, err = await run_cli(env, "calls", "--json")
    assert rc == 0, err
    json.loads(out)


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition ``text`` (labels in Prometheus' sorted order)."""
    wanted = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {wanted}")


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


async def _wait_call(serve: Serve, call_id: str) -> tuple[int, Any]:
    while True:
        status, detail = await api(f"/api/calls/{call_id}", serve)
        if status == 200 and detail["call"].get("phase") == "ENDED" and detail["call"].get("session_id"):
            return status, detail
        await asyncio.sleep(0.2)


FAKE_KEY = "sk-proj-FAKEKEY0123456789abcdefSECRET"
REDIS_PASSWORD = "redis-pw-Q7z9xLmN"
NONCE_SECRET = "nonce-secret-0a1b2c3d4e5f"


async def test_broker_mode_workers_never_see_the_key_and_nothing_leaks_it(tmp_path: Path) -> None:
    """`serve` in broker mode with a known fake key, a Redis password, a supervisor token and a digest nonce key: the
    call works through short-lived credentials, and no configured secret appears in any log, Redis value, report,
    metric, API answer, or the environment or command line of `serve` or its worker (the start-up log shows the
    Redis URL with its password masked)."""
    with EmbeddedRedis(password=REDIS_PASSWORD) as redis:
        async with EmulatorServer("127.0.0.1", 0, speed=4, api_key=FAKE_KEY) as emulator:
            sip_port, http_port = free_port(), free_port()
            reports = tmp_path / "calls.jsonl"
            env = {**os.environ, "CALLBRIDGE_SUPERVISOR_TOKEN": TOKEN, "OPENAI_API_KEY": FAKE_KEY,
                   "CALLBRIDGE_CREDENTIALS": "broker", "REDIS_URL": redis.url,
                   "CALLBRIDGE_SIP_NONCE_SECRET": NONCE_SECRET}  # fmt: skip
            log_file = tmp_path / "serve.log"
            with log_file.open("w") as log:
                proc = subprocess.Popen(  # noqa: ASYNC220 (a long-lived server; stopped synchronously below)
                    [sys.executable, "-m", "bridge", "serve", "--workers", "1", "--sip-port", str(sip_port),
                     "--realtime-url", emulator.base_url, "--http-port", str(http_port),
                     "--dialplans", str(ROOT / "dialplans"), "--report-file", str(reports)],
                    env=env, stdout=log, stderr=log,
                )  # fmt: skip
                serve = Serve(proc, sip_port, http_port, reports)
                try:
                    await wait_healthy(serve)
                    _, health = await api("/healthz", serve)
                    worker_pid = health["workers"][0]["pid"]
                    assert b"CALLBRIDGE_BROKER_URL=" in Path(f"/proc/{worker_pid}/environ").read_bytes()
                    phone = await softphone(serve, "1000", caller_wav(tmp_path / "c.wav"), seconds=6.0)
                    assert phone["answered"]
                    (record,) = read_reports(reports)
                    assert record["agent_transcript"], record  # the model answered: the credential worked
                    assert await _redis_client_count(redis.url) >= 2  # serve and its worker use the passworded Redis
                    scanned = {
                        "metrics": (await _get(f"{serve.http}/metrics")),
                        "api_calls": json.dumps(await api("/api/calls", serve)),
                        "api_call": json.dumps(await api(f"/api/calls/{record['call_id']}", serve)),
                        "api_rollout": json.dumps(await api("/api/rollout", serve)),
                        "healthz": json.dumps(health),
                        "report": reports.read_text(),
                        "redis": await _dump_redis(redis.url),
                    }
                    for name, pid in (("serve", proc.pid), ("worker", worker_pid)):
                        for part in ("environ", "cmdline"):
                            raw = Path(f"/proc/{pid}/{part}").read_bytes()
                            scanned[f"{name} {part}"] = raw.decode(errors="replace")
                finally:
                    proc.terminate()
                    proc.wait(15)
            scanned["logs"] = log_file.read_text()
            assert proc.returncode == 0
            assert "credential broker on" in scanned["logs"]
            assert f"redis://:****@127.0.0.1:{redis.port}/0" in scanned["logs"]  # shown, masked
            for name, text in scanned.items():
                for secret in (FAKE_KEY, FAKE_KEY[:20], REDIS_PASSWORD, TOKEN, NONCE_SECRET):
                    assert secret not in text, f"a secret ({secret[:4]}...) leaked into {name}"


async def _redis_client_count(url: str) -> int:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, decode_responses=True)
    try:
        return len(await client.client_list()) - 1  # without this one
    finally:
        await client.aclose()


async def _get(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return await r.text()


async def _dump_redis(url: str) -> str:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, decode_responses=True)
    out = []
    async for key in client.scan_iter("*"):
        kind = await client.type(key)
        if kind == "hash":
            out.append(json.dumps(await client.hgetall(key)))
        elif kind == "stream":
            out.append(json.dumps(await client.xrange(key)))
        elif kind == "string":
            out.append(str(await client.get(key)))
        elif kind in ("set", "zset"):
            out.append(str(await client.smembers(key) if kind == "set" else await client.zrange(key, 0, -1)))
    await client.aclose()
    assert out, "Redis holds nothing: the scan would prove nothing"
    return "\n".join(out)
