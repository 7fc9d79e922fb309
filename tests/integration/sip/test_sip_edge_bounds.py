"""The worker's edge (issue #33): identifiers the bridge makes, every call bounded at the SIP level, closed by default.

Real callers only: SIPp (crafted Call-IDs with ``-cid_str``, a caller that vanishes after its ACK, one that never
refreshes its session timer) and raw SIP from other loopback addresses, against ``callbridge serve`` (Redis, the
emulator, a recording plan) or the gateway test app, all on private ports.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import stat
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

from bridge.audio.wav import write_wav
from bridge.devkit.ports import free_port
from bridge.devkit.process import stop_process
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.emulator import EmulatorServer
from bridge.store import keys
from tests.integration.sip._helpers import (
    LOCALHOST,
    SCENARIOS,
    GatewayApp,
    RawSip,
    sdp_offer,
    sipp_failure,
)

pytestmark = [
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed"),
    pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary"),
]

ROOT = Path(__file__).resolve().parents[3]
RTP_TIMEOUT_S = 3.0
PCMU = {0: "PCMU/8000"}


@dataclass
class Node:
    proc: subprocess.Popen[str]
    sip_port: int
    http: str
    reports: Path
    recordings: Path
    log: Path
    redis: aioredis.Redis
    emulator: EmulatorServer

    def reports_now(self) -> list[dict[str, Any]]:
        if not self.reports.exists():
            return []
        return [json.loads(line) for line in self.reports.read_text().splitlines() if line.strip()]


def _recording_plan(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_wav(directory / "consent.wav", bytes(1600))  # the consent prompt: 0.1 s, played before recording starts
    plan = {
        "name": "recorded",
        "match": ["*"],
        "dialect": "ga",
        "greeting": None,
        "answer_timeout_s": 3,
        "recording": {"enabled": True, "consent_audio": str(directory / "consent.wav")},
        "profile": {"instructions": "Test plan.", "voice": "alloy", "audio_format": "g711_ulaw"},
    }
    (directory / "recorded.yaml").write_text(json.dumps(plan))
    return directory


async def _wait(what: str, probe: Any, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = await probe()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{what}: not within {within} s")


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    """`serve` with one worker, Redis, the emulator and a recording plan; 127.0.0.1 is the one allowed source."""
    with EmbeddedRedis() as redis:
        async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
            sip_port, http_port = free_port(), free_port()
            recordings = tmp_path / "state" / "recordings"
            settings = {
                "sip_allowed_sources": ["127.0.0.1/32"],
                "rtp_timeout_s": RTP_TIMEOUT_S,
                "recordings_dir": str(recordings),
            }
            config = tmp_path / "settings.yaml"
            config.write_text(json.dumps(settings))
            reports, log = tmp_path / "calls.jsonl", tmp_path / "serve.log"
            env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
            with log.open("w") as err:
                proc = subprocess.Popen(  # noqa: ASYNC220 (a long-lived server, stopped below)
                    [sys.executable, "-m", "bridge", "serve", "--config", str(config), "--workers", "1",
                     "--sip-port", str(sip_port), "--realtime-url", emulator.base_url, "--redis-url", redis.url,
                     "--http-port", str(http_port), "--dialplans", str(_recording_plan(tmp_path / "plans")),
                     "--report-file", str(reports)],
                    env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err, text=True,
                )  # fmt: skip
            client = aioredis.from_url(redis.url, decode_responses=True)
            found = Node(proc, sip_port, f"http://127.0.0.1:{http_port}", reports, recordings, log, client, emulator)
            try:
                await _wait("serve healthy", lambda: _healthy(found), 40)
                yield found
            finally:
                await client.aclose()
                stop_process(proc)


async def _healthy(node: Node) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{node.http}/healthz") as r:
            workers = (await r.json())["workers"]
            return bool(workers) and all(w["alive"] and w["sip_port"] for w in workers)
    except aiohttp.ClientError:
        return False


async def _metrics(node: Node) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{node.http}/metrics") as r:
        return await r.text()


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _sipp(
    cwd: Path, target_port: int, *args: str | bytes, scenario: str | None = None, within_s: int = 30
) -> subprocess.CompletedProcess[bytes]:
    """One SIPp call from 127.0.0.1 (``-sn uac``, or a scenario of ours); arguments may be bytes (a Call-ID that is
    not UTF-8)."""
    sipp = shutil.which("sipp")
    assert sipp is not None
    run: list[str | bytes] = [sipp]
    if scenario:
        shutil.copy(SCENARIOS / scenario, cwd / scenario)
        run += ["-sf", str(cwd / scenario)]
    else:
        run += ["-sn", "uac", "-d", "300"]
    run += ["-m", "1", "-i", LOCALHOST, "-p", str(free_port()), "-mp", str(free_port()), "-timeout", str(within_s),
            "-timeout_error", "-nostdin", "-trace_err", "-trace_msg", *args, f"{LOCALHOST}:{target_port}"]  # fmt: skip
    return subprocess.run(run, cwd=cwd, capture_output=True, timeout=within_s + 30)


def _failure(result: subprocess.CompletedProcess[bytes], cwd: Path) -> str:
    text = subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(errors="replace"),
                                       result.stderr.decode(errors="replace"))  # fmt: skip
    return sipp_failure(text, cwd)


async def test_crafted_call_ids_are_data_every_call_its_own_record(node: Node, tmp_path: Path) -> None:
    absolute = tmp_path / "abs"
    long_a, long_b = "x" * 130 + "-a", "x" * 130 + "-b"
    crafted: list[str | bytes] = [
        "../../x",
        str(absolute),
        "k" * 1024,
        long_a,
        long_b,
        b"bad-\xff\xfe-utf8",
        "same-call-id",
        "same-call-id",
        "after-the-bad-one",
    ]
    sipp_dir = tmp_path / "sipp"
    sipp_dir.mkdir()
    for call_id in crafted:
        result = await asyncio.to_thread(_sipp, sipp_dir, node.sip_port, "-cid_str", call_id)
        assert result.returncode == 0, f"Call-ID {call_id!r}: {_failure(result, sipp_dir)}"

    reports = await _wait("every call reported", lambda: _reports(node, len(crafted)))
    ids = [r["call_id"] for r in reports]
    assert len(set(ids)) == len(crafted), "two calls shared a record"
    assert all(re.fullmatch(r"c-[0-9a-f]{32}", i) for i in ids), ids
    sip_ids = [r["sip_call_id"] for r in reports]
    assert sip_ids.count("same-call-id") == 2 and "../../x" in sip_ids and str(absolute) in sip_ids
    assert all(len(s) <= 256 for s in sip_ids)  # a 1 KB Call-ID is kept cut, as data
    bad = next(s for s in sip_ids if s.startswith("bad-"))
    assert "\ufffd" in bad and bad.encode("utf-8")  # the bytes that are not UTF-8 were replaced

    # Redis: one hash per call, named by the bridge's id, the caller's Call-ID a field; the writer still writes
    for call_id, sip_call_id in zip(ids, sip_ids, strict=True):
        state = await _wait(f"{call_id} ended in Redis", lambda c=call_id: _ended(node, c))
        assert state["sip_call_id"] == sip_call_id
    assert not await node.redis.exists(keys.call("same-call-id"))

    # recordings: one directory per call, named by the bridge's id, 0700, files 0600, nothing outside
    root = node.recordings
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert sorted(p.name for p in root.iterdir()) == sorted(ids)
    for directory in root.iterdir():
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        files = list(directory.iterdir())
        assert {f.name for f in files} == {"audio.wav", "events.jsonl"}
        assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
        header = json.loads((directory / "events.jsonl").read_text().splitlines()[0])
        assert header["call_id"] == directory.name and header["sip_call_id"] in sip_ids
    assert not absolute.exists() and not (tmp_path / "x").exists() and not (root.parent / "x").exists()
    written = {p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".wav", ".jsonl")}
    assert {p for p in written if root not in p.parents} == {node.reports, tmp_path / "plans" / "consent.wav"}


async def _reports(node: Node, count: int) -> list[dict[str, Any]] | None:
    found = node.reports_now()
    return found if len(found) >= count else None


async def _ended(node: Node, call_id: str) -> dict[str, str] | None:
    state: dict[str, str] = await node.redis.hgetall(keys.call(call_id))
    return state if state.get("ended_at") else None


async def test_a_caller_that_vanishes_is_hung_up_and_its_slot_and_session_freed(node: Node, tmp_path: Path) -> None:
    before = len(node.emulator.sessions)
    started = time.monotonic()
    result = await asyncio.to_thread(_sipp, tmp_path, node.sip_port, "-cid_str", "vanishing", scenario="uac_vanish.xml")
    took = time.monotonic() - started
    # the scenario passes only if the bridge's BYE arrives, with Reason: SIP;cause=408;text="media timeout"
    assert result.returncode == 0, _failure(result, tmp_path)
    assert took < RTP_TIMEOUT_S + 5 + 3, f"the BYE came {took:.1f} s after the INVITE"  # + the answer's own time
    (report,) = await _wait("the call's report", lambda: _reports(node, 1))
    assert report["sip_call_id"] == "vanishing" and report["end_reason"] == "media timeout"
    state = await _wait("the call ended in Redis", lambda: _ended(node, report["call_id"]))
    assert "media timeout" in state["end_reason"]
    assert not await node.redis.smembers(keys.worker_calls(state["worker"]))  # its slot is free
    sessions = node.emulator.sessions[before:]
    assert len(sessions) == 1
    await _wait("the model session closed", lambda: _closed(sessions[0]))
    text = await _metrics(node)
    assert _metric(text, "callbridge_sip_bounded_calls_total", reason="media timeout") == 1
    assert _metric(text, "callbridge_calls_active") == 0


async def _closed(session: Any) -> bool:
    return bool(session.closed)


async def test_a_stranger_gets_403_and_opens_no_model_session(node: Node) -> None:
    before = len(node.emulator.sessions)
    with RawSip(node.sip_port, local_host="127.0.0.5") as stranger:
        final, _ = await asyncio.to_thread(stranger.invite, sdp_offer(free_port(), PCMU))
    assert final.status == 403 and "not allowed" in final.reason
    assert len(node.emulator.sessions) == before and not node.reports_now()
    assert _metric(await _metrics(node), "callbridge_sip_rejected_total", code="403") == 1
    assert "SIP access: calls answered from sources in sip_allowed_sources (127.0.0.1/32)" in node.log.read_text()


def test_serve_on_a_public_address_with_nothing_configured_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "serve", "--sip-host", "0.0.0.0", "--sip-port", str(free_port()),
         "--dialplans", str(ROOT / "dialplans"), "--realtime-check", "off"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    for name in ("sip_allowed_sources", "sip_auth_users", "sip_trusted_fronts", "sip_allow_any_source"):
        assert name in done.stderr
    assert "SIP listening" not in done.stderr  # refused before any worker started


def _public_address() -> str | None:
    """This machine's first address that is not loopback (``hostname -I``), or None."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return next((a for a in out.split() if "." in a and not a.startswith("127.")), None)


def test_with_nothing_configured_a_worker_answers_loopback_only() -> None:
    public = _public_address()
    if public is None:
        pytest.skip("no non-loopback address on this machine")
    app = GatewayApp("--host", "0.0.0.0", "--hangup-after", "0.2")
    try:
        with RawSip(app.port, target_host=public, local_host=public) as outsider:
            refused, _ = outsider.invite(sdp_offer(free_port(), PCMU))
        with RawSip(app.port, local_host="127.0.0.3") as local:
            accepted, _ = local.invite(sdp_offer(free_port(), PCMU))
        app.wait_calls_ended()
    finally:
        done = app.stop()
    assert refused.status == 403 and accepted.status == 200
    assert done.report is not None and len(done.report["calls"]) == 1  # the outsider never reached the app


def test_a_session_timer_nobody_refreshes_ends_the_call(tmp_path: Path) -> None:
    """RFC 4028 §10: the caller asked to refresh (Session-Expires 90, refresher=uac; 90 s is the smallest Min-SE)
    and never did; the bridge ends the session with a BYE before it expires, not after RTP or anything else."""
    app = GatewayApp("--mode", "silent", "--rtp-timeout", "300", "--session-expires", "90")
    try:
        started = time.monotonic()
        result = _sipp(tmp_path, app.port, "-key", "se", "90", scenario="uac_timer_no_refresh.xml", within_s=120)
        took = time.monotonic() - started
        app.wait_calls_ended()
    finally:
        done = app.stop()
    assert result.returncode == 0, _failure(result, tmp_path)  # the caller got the bridge's BYE
    assert 45 <= took <= 95, f"the BYE came after {took:.0f} s"
    assert done.report is not None
    (call,) = done.report["calls"]
    assert call["end_cause"] == "session timer expired"
    assert call["hangup_event"][1] == "session timer expired"
