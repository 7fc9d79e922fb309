"""``serve``'s start-up log says when pages of other origins may call the API (``http_cors_origins``), and which;
with none listed (the default) it says nothing of CORS. The HTTP port is really started, on a free port."""

from __future__ import annotations

import logging
import types
from pathlib import Path

import pytest

from bridge.config import Settings
from bridge.serve.pool import ConsoleTokens, start_http

DIALPLANS = Path(__file__).resolve().parents[3] / "dialplans"


async def started_log(caplog: pytest.LogCaptureFixture, origins: list[str]) -> str:
    settings = Settings(http_port=0, dialplans=DIALPLANS, http_cors_origins=origins)
    pool = types.SimpleNamespace(
        health=dict, dead_workers=frozenset, settings=types.SimpleNamespace(listen_key=None), http_app=None, tls=None
    )
    with caplog.at_level(logging.INFO, logger="bridge.serve.pool"):
        runner = await start_http(pool, settings, ConsoleTokens("t" * 32))  # type: ignore[arg-type]  # the pool's HTTP parts
        await runner.cleanup()
    return caplog.text


async def test_the_start_up_log_names_the_origins_when_cors_is_on(caplog: pytest.LogCaptureFixture) -> None:
    text = await started_log(caplog, ["https://crm.example.com", "*"])
    assert "supervisor API: CORS on for https://crm.example.com, any origin without credentials" in text


async def test_nothing_of_cors_is_said_when_it_is_off(caplog: pytest.LogCaptureFixture) -> None:
    assert "CORS" not in await started_log(caplog, [])


def test_a_wrong_origin_is_refused_naming_the_entry() -> None:
    with pytest.raises(ValueError, match=r"(?s)http_cors_origins.*\[1\] 'https://crm.example.com/page'"):
        Settings(http_cors_origins=["https://ok.example", "https://crm.example.com/page"])
