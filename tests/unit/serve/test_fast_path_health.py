"""When the installed packages cannot serve the Realtime socket's fast paths (``ws_fastpath.fast_path_problems``),
``serve`` says so at start in one line, ``/healthz`` lists it under ``degraded`` (still 200: calls go on) and
``callbridge health`` prints it; with the fast paths on, none of them mentions it."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import pytest
from aiohttp import web

from bridge.config import Settings
from bridge.serve import health, pool
from bridge.supervisor.http import SUPERVISOR
from bridge.supervisor.monitoring import add_routes

SLOW = "websockets 99 lacks ClientProtocol.send_text(): the Realtime socket runs on websockets' own asyncio client"


class _Supervisor:
    redis = None

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def health(self) -> dict[str, Any]:
        return self.state


def _ready_pool() -> dict[str, Any]:
    state = pool.Pool(Settings(workers=1)).health()
    state["workers"][0] |= {"alive": True, "ready": True, "sip_port": 5060}
    return state


async def _health_of(state: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    app = web.Application()
    app[SUPERVISOR] = _Supervisor(state)  # type: ignore[assignment]
    add_routes(app, metrics=False, health_detail="open")  # the detail, as an open node shows it
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    monkeypatch.setenv("CALLBRIDGE_HTTP_PORT", str(port))
    try:
        code = await asyncio.to_thread(health.main, [])
    finally:
        await runner.cleanup()
    out = capsys.readouterr().out
    assert code == health.EXIT_HEALTHY, out
    return out


async def test_a_fast_path_that_cannot_run_is_degraded_in_healthz_and_health(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(pool, "fast_path_problems", lambda secure=False: [SLOW])
    state = _ready_pool()
    assert state["fast_path"] == {"on": False, "problems": [SLOW]}
    out = await _health_of(state, monkeypatch, capsys)
    assert out.startswith("healthy (") and f"degraded: {SLOW}" in out


async def test_with_the_fast_path_on_health_says_nothing_of_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _ready_pool()
    assert state["fast_path"] == {"on": True, "problems": []}
    out = await _health_of(state, monkeypatch, capsys)
    assert "degraded" not in out


def test_serve_says_so_at_start_in_one_line(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    pool.announce_fast_path(Settings())
    assert not [r for r in caplog.records if "fast path" in r.getMessage()]
    monkeypatch.setattr(pool, "fast_path_problems", lambda secure=False: [SLOW])
    pool.announce_fast_path(Settings())
    assert [r.getMessage() for r in caplog.records if "fast path" in r.getMessage()] == [f"fast path off: {SLOW}"]
    assert "announce_fast_path(settings)" in inspect.getsource(pool.main)  # serve's start


def test_without_the_native_tls_engine_the_fast_path_is_off_for_a_wss_model_only(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from bridge.realtime import tls_native

    caplog.set_level(logging.INFO)
    monkeypatch.setenv(tls_native.ENV, "0")
    tls_native._reset_for_tests()
    try:
        plain = pool.Pool(Settings(workers=1, realtime_url="ws://127.0.0.1:8765/v1")).health()["fast_path"]
        secure = pool.Pool(Settings(workers=1, realtime_url="wss://api.openai.com/v1")).health()["fast_path"]
        pool.announce_fast_path(Settings(realtime_url="wss://api.openai.com/v1"))
    finally:
        monkeypatch.delenv(tls_native.ENV)
        tls_native._reset_for_tests()
    assert plain == {"on": True, "problems": []}
    (problem,) = secure["problems"]
    assert not secure["on"] and problem.startswith("no native TLS engine (off by CALLBRIDGE_NATIVE_TLS=0)")
    (line,) = [r.getMessage() for r in caplog.records if "fast path" in r.getMessage()]
    assert line == f"fast path off: {problem}"
