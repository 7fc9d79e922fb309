"""`serve` becomes ready at every ``pjsua_log_level``, and with its Kamailio front at the edges and at the first
level that prints on stdout: the worker's readiness reaches the pool on a channel of its own, and what pjlib prints
on stdout (at 4 and up, before its log settings apply) is forwarded to the log, never parsed. One worker each;
stopped as soon as it is ready."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _serve_start import ROOT, Started, clean_env, port_block

from bridge.devkit.ports import can_bind, free_port_block
from bridge.emulator import EmulatorServer
from bridge.serve.front import kamailio_binary

FRONT_HOST = "127.0.0.2"  # the front's own address, apart from the callers' 127.0.0.1
LEVELS = range(0, 7)
FRONT_LEVELS = (0, 4, 6)

# Not in the CPU-heavy group (tests/conftest.py): one worker and an idle front, stopped once ready, take the CPU a
# start without the front takes (about 5 CPU-seconds, mostly the worker's preload)
front = [
    pytest.mark.skipif(kamailio_binary() is None, reason="kamailio is not installed (apt-get install kamailio)"),
    pytest.mark.skipif(not can_bind(FRONT_HOST), reason="127.0.0.2 is not usable here"),
]
pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("level", "with_front"),
    [pytest.param(level, False, id=f"{level}-workers") for level in LEVELS]
    # the level is the worker's: with the front, none, the first that prints on stdout, and the most
    + [pytest.param(level, True, id=f"{level}-front", marks=front) for level in FRONT_LEVELS],
)
async def test_serve_is_ready_at_every_pjsua_log_level(tmp_path: Path, level: int, with_front: bool) -> None:
    host = FRONT_HOST if with_front else "127.0.0.1"
    sip_port, http_port = port_block(2, (host,)), free_port_block(1)
    config = tmp_path / "serve.yaml"
    config.write_text(json.dumps({"pjsua_log_level": level, "http_host": host}))
    args = [
        "--config", str(config), "--workers", "1", "--sip-host", host, "--sip-port", str(sip_port),
        "--http-port", str(http_port), "--dialplans", str(ROOT / "dialplans"),
    ]  # fmt: skip
    if with_front:
        args += ["--front", "kamailio", "--front-dir", str(tmp_path / "front")]
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        serve = Started(tmp_path, "serve", [*args, "--realtime-url", emulator.base_url], clean_env(), cwd=tmp_path)
        try:
            health = await serve.ready(host, http_port, workers=1)
            (worker,) = health["workers"]
            assert worker["ready"] and worker["restarts"] == 0, health
            assert worker["sip_port"] == sip_port + (1 if with_front else 0)
        finally:
            rc = serve.stop()
        log = serve.stderr(1_000_000)
        assert rc == 0, log[-4000:]
        assert "is not ready" not in log, log[-4000:]
        if level >= 4:  # pjlib's first lines, on stdout before its log settings apply: in the log, as they came
            assert "bridge.serve.output: worker 0: " in log and "pjlib" in log, log[-4000:]


@pytest.mark.parametrize("_", [pytest.param(None, id="front", marks=front)])
async def test_under_systemd_kamailio_logs_to_the_journal_beside_serve(tmp_path: Path, _: None) -> None:
    """systemd names the journal's stream in JOURNAL_STREAM: Kamailio then writes to serve's stderr, not a file."""
    host = FRONT_HOST
    sip_port, http_port = port_block(2, (host,)), free_port_block(1)
    config = tmp_path / "serve.yaml"
    config.write_text(json.dumps({"http_host": host}))
    journal = tmp_path / "serve.stderr"  # Started writes serve's stderr here: the same inode stands for the journal
    journal.touch()
    stream = f"{journal.stat().st_dev}:{journal.stat().st_ino}"
    args = [
        "--config", str(config), "--workers", "1", "--sip-host", host, "--sip-port", str(sip_port),
        "--http-port", str(http_port), "--dialplans", str(ROOT / "dialplans"),
        "--front", "kamailio", "--front-dir", str(tmp_path / "front"),
    ]  # fmt: skip
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        env = clean_env(JOURNAL_STREAM=stream)
        serve = Started(tmp_path, "serve", [*args, "--realtime-url", emulator.base_url], env, cwd=tmp_path)
        try:
            await serve.ready(host, http_port, workers=1)
        finally:
            rc = serve.stop()
    log = serve.stderr(1_000_000)
    assert rc == 0, log[-4000:]
    assert "its log in the journal" in log, log[-4000:]
    assert "NOTICE: <core>" in log and "Thank you for flying kamailio" in log, log[-4000:]  # Kamailio's own stop
    assert not (tmp_path / "front" / "kamailio.log").exists()
