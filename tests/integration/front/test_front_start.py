"""A front that cannot start (its port is taken) stops `serve` with the reason, and leaves nothing running: no
Kamailio, no worker. A wildcard sip_host is refused before anything starts (Record-Route needs a real address).
Kamailio's environment holds no tool secret (the workers', which run the tools, does)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from _front import NODE_A, ROOT, port_block, requirements

from bridge.serve.front import TEMPLATE_ENV, template_path

pytestmark = requirements
TOOL_SECRET_ENV, TOOL_SECRET = "ORDERS_TOKEN", "orders-tool-secret-5b2e"


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line holds ``text`` (a path unique to this test)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _serve(tmp_path: Path, *args: str, script: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "REDIS_URL")}
    if script is not None:
        env[TEMPLATE_ENV] = str(script)
    return subprocess.run(
        [sys.executable, "-m", "bridge", "serve", "--front", "kamailio", "--workers", "2",
         "--realtime-url", "ws://127.0.0.1:9/v1", "--dialplans", str(ROOT / "dialplans"), *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip


def test_a_front_that_cannot_start_stops_serve_and_leaves_nothing_behind(tmp_path: Path) -> None:
    port = port_block(3)
    front_dir = tmp_path / "front"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((NODE_A, port))  # Kamailio cannot listen there
        started = time.monotonic()
        result = _serve(tmp_path, "--sip-host", NODE_A, "--sip-port", str(port), "--front-dir", str(front_dir))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Kamailio exited at start" in result.stderr
    assert time.monotonic() - started < 80
    assert _processes_mentioning(str(front_dir)) == []  # no Kamailio left
    assert "worker 0 (pid" in result.stderr and "worker 1 (pid" in result.stderr  # the workers had started ...
    for line in result.stderr.splitlines():  # ... and are gone
        if "ready on port" in line:
            pid = int(line.split("(pid ")[1].split(")")[0])
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_a_front_that_never_answers_is_stopped_with_serve(tmp_path: Path) -> None:
    # a routing script that runs but refuses the readiness probe
    script = template_path().read_text()
    probe = 'sl_send_reply("200", "OK");  # a health check of the front itself'
    assert probe in script
    (tmp_path / "silent.cfg").write_text(script.replace(probe, 'sl_send_reply("403", "No");'))
    front_dir = tmp_path / "front"
    result = _serve(
        tmp_path, "--sip-host", NODE_A, "--sip-port", str(port_block(3)), "--front-dir", str(front_dir),
        script=tmp_path / "silent.cfg",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert "did not answer OPTIONS" in result.stderr
    assert _processes_mentioning(str(front_dir)) == []  # the Kamailio that ran was stopped


def test_a_wildcard_address_is_refused_before_anything_starts(tmp_path: Path) -> None:
    result = _serve(tmp_path, "--sip-host", "0.0.0.0", "--sip-port", str(port_block(3)))
    assert result.returncode == 2
    assert "sip_host" in result.stderr and "Record-Route" in result.stderr
    assert "ready on port" not in result.stderr


def test_a_killed_serve_takes_kamailio_and_its_workers_with_it(tmp_path: Path) -> None:
    """SIGKILL runs no clean-up in `serve`: the parent-death signal still stops Kamailio and every worker."""
    front_dir = tmp_path / "front"
    port = port_block(3)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "REDIS_URL")}
    env[TOOL_SECRET_ENV] = TOOL_SECRET  # a plan's tool header would read it: the workers may, Kamailio may not
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve", "--front", "kamailio", "--workers", "2",
         "--realtime-url", "ws://127.0.0.1:9/v1", "--dialplans", str(ROOT / "dialplans"),
         "--sip-host", NODE_A, "--sip-port", str(port), "--front-dir", str(front_dir)],
        env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    workers: list[int] = []
    try:
        for line in proc.stderr:  # wait for the front's start-up line, collecting the workers' pids
            if "ready on port" in line:
                workers.append(int(line.split("(pid ")[1].split(")")[0]))
            if "front: Kamailio (pid" in line:
                break
        kamailios = _processes_mentioning(str(front_dir))
        assert kamailios and len(workers) == 2
        fronts = [pid for pid in kamailios if "kamailio" in _command(pid).split()[0]]  # not serve, which names it
        assert fronts
        for pid in fronts:  # the front's environment holds no tool secret, nor any setting
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert TOOL_SECRET.encode() not in environ and b"CALLBRIDGE" not in environ, pid
        assert all(TOOL_SECRET.encode() in Path(f"/proc/{pid}/environ").read_bytes() for pid in workers)
    finally:
        proc.kill()
        proc.wait()
    # each worker hangs up and destroys pjsua first (3-5 s on a busy machine); the bound is for a loaded CI host
    deadline = time.monotonic() + 45
    left = kamailios + workers
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if _alive(pid)]
        time.sleep(0.1)
    survivors = {pid: _command(pid) for pid in left}
    for pid in left:  # a failure leaves nothing behind for the next tests
        os.kill(pid, signal.SIGKILL)
    assert survivors == {}, (survivors, workers)


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160]
    except OSError:
        return "(gone)"


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in status.lower()
