"""No caller is dropped by an upstream fault (real processes: ``callbridge serve``, ``callbridge emulator`` killed with
SIGKILL and started again on its port, Redis, pjsua2 softphones). What the caller heard is told apart by pitch: the
hold message's chime (480 Hz) and the emulator's agent (800 Hz).

The recording starts at the answer; the worker's report places the loss on the same clock (its timeline counts
from the ring, and says when the call was answered and when the session was lost).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from _outage import (
    AGENT_HZ,
    HOLD_HZ,
    Emulator,
    Serve,
    first_heard,
    listener,
    pitch_track,
    read_wav,
    softphone,
    timeline_ms,
    until,
    write_plan,
)

from bridge.devkit.ports import free_port
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.store.read import read_call_events, read_live_calls

pytestmark = pytest.mark.integration
OUTAGE_S = 3.0  # how long the emulator stays dead: the scenario's outage, not a wait for anything
REASON = 'Reason: SIP;cause=503;text="model unavailable"'


@pytest.fixture
def redis_server() -> Iterator[EmbeddedRedis]:
    if redis_server_binary() is None:
        pytest.skip("no redis-server binary")
    with EmbeddedRedis() as server:
        yield server


async def test_a_3_s_outage_mid_call_is_ridden_out_on_hold(tmp_path: Path, redis_server: EmbeddedRedis) -> None:
    emulator = Emulator()
    await emulator.start()
    write_plan(tmp_path / "dialplans", outage={"hold_s": 20})
    # the documented endpoint form of the URL
    serve = Serve(tmp_path, emulator.base_url + "/realtime", redis_url=redis_server.url)
    redis = aioredis.from_url(redis_server.url, decode_responses=True)
    try:
        await serve.wait_ready()
        phone = asyncio.create_task(softphone(serve.uri(), tmp_path / "heard.wav", hangup_after=12))

        async def greeted() -> str | None:  # the greeting played out: the call listens
            calls = await read_live_calls(redis)
            return calls[0].call_id if calls and calls[0].phase == "LISTENING" else None

        call_id = await until(greeted, 20, "the greeting played out")
        killed = emulator.kill()
        await asyncio.sleep(OUTAGE_S)
        back = await emulator.start()
        summary = await phone
        report = serve.report()
    finally:
        serve.stop()
        emulator.kill()
    # the call lasted its full length, and the caller hung up
    assert summary["answered"] and summary["hangup_by"] == "local"
    assert summary["duration_s"] == pytest.approx(12, abs=0.5)
    (answered,) = timeline_ms(report, "answered")
    (lost,) = timeline_ms(report, "realtime_closed")
    lost_s = (lost - answered) / 1000  # on the recording's clock
    back_s = lost_s + (back - killed)
    heard, rate = read_wav(tmp_path / "heard.wav")
    track = pitch_track(heard, rate)
    hold = first_heard(track, HOLD_HZ, lost_s)
    assert hold is not None and hold - lost_s <= 1.5, (lost_s, track)
    agent = first_heard(track, AGENT_HZ, back_s)
    assert agent is not None and agent - back_s <= 1.5, (back_s, track)
    assert first_heard(track, HOLD_HZ, agent + 0.2) is None  # the hold stopped at once
    kinds = [k for _, k, _ in report["timeline"]]
    assert kinds.index("realtime_closed") < kinds.index("hold_started") < kinds.index("outage_ended")
    # the call's record in Redis: the agent's words before the loss and after the return
    events = await read_call_events(redis, call_id, count=1000)
    await redis.aclose()
    order = [e.kind for e in events]
    lost_at, back_at = order.index("realtime_closed"), order.index("outage_ended")
    assert "agent_transcript" in order[:lost_at]
    assert "agent_transcript" in order[back_at:]


async def test_an_outage_longer_than_hold_s_transfers_the_caller_to_a_human(tmp_path: Path) -> None:
    emulator = Emulator()
    await emulator.start()
    human_port = free_port()
    write_plan(tmp_path / "dialplans", transfer_target=f"sip:human@127.0.0.1:{human_port}", outage={"hold_s": 3})
    serve = Serve(tmp_path, emulator.base_url)
    human = await listener(human_port, tmp_path / "human.wav", duration=40)
    try:
        await serve.wait_ready()
        phone = asyncio.create_task(softphone(serve.uri(), tmp_path / "heard.wav", hangup_after=14))
        await until(emulator.greeted, 20, "the greeting sent")
        emulator.kill()
        summary = await phone
        out, _ = await asyncio.wait_for(human.communicate(), 60)
    finally:
        serve.stop()
        emulator.kill()
        if human.returncode is None:
            human.kill()
    report = serve.report()
    assert report["end_reason"] == "transferred"
    assert summary["transfer"] is not None and summary["transfer"]["answered"], summary
    heard = [line for line in out.decode().splitlines() if line.startswith("{")]
    assert heard, "the human's phone answered no call"
    kinds = [k for _, k, _ in report["timeline"]]
    assert kinds.index("hold_started") < kinds.index("failed_over") < kinds.index("transfer")


async def test_the_goodbye_failover_plays_the_apology_and_ends_with_a_reason(tmp_path: Path) -> None:
    emulator = Emulator()
    await emulator.start()
    write_plan(tmp_path / "dialplans", outage={"hold_s": 2, "failover": "goodbye"})
    serve = Serve(tmp_path, emulator.base_url)
    sip_log = tmp_path / "phone-sip.log"
    try:
        await serve.wait_ready()
        phone = asyncio.create_task(softphone(serve.uri(), tmp_path / "heard.wav", hangup_after=30, sip_log=sip_log))
        await until(emulator.greeted, 20, "the greeting sent")
        emulator.kill()
        summary = await phone
    finally:
        serve.stop()
        emulator.kill()
    report = serve.report()
    assert summary["hangup_by"] == "remote" and summary["duration_s"] < 25
    assert report["end_reason"] == "realtime unavailable"
    (answered,) = timeline_ms(report, "answered")
    (lost,) = timeline_ms(report, "realtime_closed")
    (failed_over,) = timeline_ms(report, "failed_over")
    heard, rate = read_wav(tmp_path / "heard.wav")
    track = pitch_track(heard, rate)
    hold = first_heard(track, HOLD_HZ, (lost - answered) / 1000)
    assert hold is not None and hold < (failed_over - answered) / 1000
    apology = [t for t, f in track if f and t >= (failed_over - answered) / 1000 + 0.1]
    assert len(apology) >= 15  # at least 1.5 s of the apology was heard before the BYE
    bye = sip_log.read_text(errors="replace").split("BYE sip:", 1)[-1].split("--end msg--", 1)[0]
    assert REASON in bye, bye  # the BYE the caller got carried the Reason header (RFC 3326)


async def test_a_model_unreachable_at_arrival_puts_the_caller_on_hold_then_fails_over(tmp_path: Path) -> None:
    nowhere = Emulator()  # never started: its port refuses
    write_plan(tmp_path / "dialplans", outage={"hold_s": 2, "failover": "goodbye"})
    serve = Serve(tmp_path, nowhere.base_url)
    try:
        await serve.wait_ready()
        summary = await softphone(serve.uri(), tmp_path / "heard.wav", hangup_after=30)
        health = await serve.healthz()  # every attempt failed: the worker's breaker is open
    finally:
        serve.stop()
    assert health is not None and health["realtime"] == {"state": "down", "breaker_open_workers": [0]}, health
    report = serve.report()
    assert summary["answered"] and summary["hangup_by"] == "remote"
    heard, rate = read_wav(tmp_path / "heard.wav")
    hold = first_heard(pitch_track(heard, rate), HOLD_HZ, 0.0)
    assert hold is not None and hold <= 1.5
    assert "failed_over" in [k for _, k, _ in report["timeline"]]
    # one log line for the cause, with the URL, however many attempts failed
    failures = [line for line in serve.text().splitlines() if "realtime connect to" in line]
    assert len(failures) == 1 and nowhere.base_url in failures[0], failures


async def test_reject_when_model_down_answers_503_so_that_a_front_tries_another_node(tmp_path: Path) -> None:
    nowhere = Emulator()
    write_plan(tmp_path / "dialplans")
    serve = Serve(tmp_path, nowhere.base_url, extra=("--reject-when-model-down",))
    try:
        await serve.wait_ready()
        summary = await softphone(serve.uri(), tmp_path / "heard.wav", hangup_after=5)
    finally:
        serve.stop()
    assert not summary["answered"] and summary["sip_status"] == 503, summary


async def test_a_realtime_url_that_is_not_a_websocket_url_is_refused_at_start(tmp_path: Path) -> None:
    write_plan(tmp_path / "dialplans")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "serve", "--realtime-url", "https://api.openai.com/v1",
        "--dialplans", str(tmp_path / "dialplans"), stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    text = err.decode()
    assert "realtime_url" in text and "wss://api.openai.com/v1/realtime" in text


async def test_a_refused_key_is_reported_at_start_and_logged_once_without_the_key(tmp_path: Path) -> None:
    emulator = Emulator(None, "--api-key", "sk-the-right-key")
    await emulator.start()
    write_plan(tmp_path / "dialplans", outage={"hold_s": 1, "failover": "goodbye"})
    key = "sk-wrong-key-0123456789abcdef"
    required = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "serve", "--realtime-url", emulator.base_url, "--realtime-check", "require",
        "--dialplans", str(tmp_path / "dialplans"), "--sip-port", str(free_port()),
        env={**_env(), "OPENAI_API_KEY": key}, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    _, err = await asyncio.wait_for(required.communicate(), 30)
    assert required.returncode == 2
    check = err.decode()
    assert "HTTP 401" in check and "invalid_api_key" in check and emulator.base_url.replace("ws", "http") in check
    assert key not in check
    # realtime_check: warn (the default) starts anyway; two calls fail alike, the cause is logged once
    serve = Serve(tmp_path, emulator.base_url, env={"OPENAI_API_KEY": key})
    try:
        await serve.wait_ready()
        for n in range(2):
            await softphone(serve.uri(), tmp_path / f"heard{n}.wav", hangup_after=20)
    finally:
        serve.stop()
        emulator.kill()
    log = serve.text()
    assert key not in log
    failures = [line for line in log.splitlines() if "realtime connect to" in line]
    assert len(failures) == 1 and "invalid_api_key" in failures[0], failures


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
