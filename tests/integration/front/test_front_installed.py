"""The product as an operator installs it: the wheel, built from this checkout and installed into a fresh virtual
environment outside it, runs ``callbridge serve --front kamailio`` from an empty directory with nothing but
environment settings (workers, ports, the Redis URL, the API key from a ``_FILE``), and a SIPp call goes through.
The same node, bound to 127.0.0.2 as a machine binds its own address, answers the image's health check
(``callbridge health``, which reads the same settings) until a worker is killed, and tells systemd it is ready over
``NOTIFY_SOCKET`` (then pings its watchdog).

The fresh environment gets the wheel only; its dependencies come from this checkout's environment through a ``.pth``
line (installing them again would cost minutes and prove nothing about the wheel). ``bridge`` is imported from the
wheel's copy: the test checks where it comes from.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _front import (
    CALLER,
    NODE_A,
    ROOT,
    heavy,
    long_test,
    port_block,
    requirements,
    sipp,
    sipp_dir,
    stop_process,
    wait_for,
)

from bridge.devkit.ports import free_port_block
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.store import keys
from bridge.store.reportfile import read_reports

pytestmark = [*requirements, heavy, pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary")]

API_KEY = "sk-test-from-a-secret-file"
KEPT = ("CALLBRIDGE_CACHE", "CALLBRIDGE_PORT_RANGE")  # the compiled C parts' cache, the suite's port range


def _run(*args: str | Path, timeout: float = 240) -> None:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-3000:]}"


def install_wheel(tmp: Path) -> Path:
    """Build the wheel, install it into a fresh venv under ``tmp``; the venv's ``bin`` directory."""
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist", ROOT)
    (wheel,) = (tmp / "dist").glob("callbridge-*.whl")
    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # after the wheel's own
    _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-deps", wheel)
    return venv / "bin"


def operator_env(settings: dict[str, str]) -> dict[str, str]:
    """This process's environment without any callbridge setting or secret or checkout path, plus ``settings``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if (not k.startswith("CALLBRIDGE_") or k in KEPT) and k not in ("OPENAI_API_KEY", "REDIS_URL", "PYTHONPATH")
    }
    return env | settings


@dataclass
class Installed:
    bin: Path
    run_dir: Path
    env: dict[str, str]
    port: int
    proc: subprocess.Popen[bytes]
    stderr: Path
    reports: Path
    redis_url: str
    notify: socket.socket  # systemd's side of NOTIFY_SOCKET

    def stderr_tail(self) -> str:
        return self.stderr.read_text(errors="replace")[-4000:]


def _wait_healthy(node: Installed, within_s: float = 60) -> dict[str, object]:
    import urllib.request

    url = f"http://{NODE_A}:{node.env['CALLBRIDGE_HTTP_PORT']}/healthz"
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        assert node.proc.poll() is None, node.stderr_tail()
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                health: dict[str, object] = json.load(answer)
            workers = health.get("workers") or []
            front = health.get("front") or {}
            if workers and all(w["alive"] and w["ready"] and w["sip_port"] for w in workers) and front.get("alive"):  # type: ignore[index, union-attr]  # JSON
                return health
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"serve not healthy: {node.stderr_tail()}")


def _wait_listening(port: int, proc: subprocess.Popen[bytes], within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    tmp = tmp_path_factory.mktemp("installed")
    bin_dir = install_wheel(tmp)
    run_dir = tmp / "run"  # an operator's directory: the dialplans and nothing of the checkout
    shutil.copytree(ROOT / "dialplans", run_dir / "dialplans")
    (tmp / "openai-key").write_text(API_KEY + "\n")
    emulator_port = free_port_block(1)
    emulator = subprocess.Popen(
        [sys.executable, "-m", "bridge", "emulator", "--port", str(emulator_port), "--api-key", API_KEY,
         "--speed", "4", "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_listening(emulator_port, emulator)
    port = port_block(3)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp / "notify.sock"))
    notify.settimeout(10)
    with EmbeddedRedis() as redis, notify:
        env = operator_env(
            {
                "CALLBRIDGE_WORKERS": "2",
                "CALLBRIDGE_SIP_HOST": NODE_A,
                "CALLBRIDGE_SIP_PORT": str(port),
                "CALLBRIDGE_FRONT": "kamailio",
                "CALLBRIDGE_FRONT_DIR": str(tmp / "front"),
                "CALLBRIDGE_HTTP_PORT": str(free_port_block(1)),
                "CALLBRIDGE_HTTP_HOST": NODE_A,  # /healthz on the node's address
                "CALLBRIDGE_HTTP_HEALTH_DETAIL": "open",  # the test reads the workers from /healthz
                "CALLBRIDGE_REALTIME_URL": f"ws://127.0.0.1:{emulator_port}/v1",
                "CALLBRIDGE_REALTIME_CHECK": "require",  # the key from the file must reach the model service
                "CALLBRIDGE_REDIS_URL": redis.url,
                "CALLBRIDGE_REPORT_FILE": str(tmp / "calls.jsonl"),
                "OPENAI_API_KEY_FILE": str(tmp / "openai-key"),
                "NOTIFY_SOCKET": str(tmp / "notify.sock"),
                "WATCHDOG_USEC": "1000000",  # WATCHDOG=1 every 0.5 s
            }
        )
        stderr = tmp / "serve.stderr"
        with stderr.open("wb") as err:
            proc = subprocess.Popen([bin_dir / "callbridge", "serve"], cwd=run_dir, env=env, stdout=err, stderr=err)
        node = Installed(bin_dir, run_dir, env, port, proc, stderr, tmp / "calls.jsonl", redis.url, notify)
        try:
            _wait_healthy(node)
            yield node
        finally:
            rc = stop_process(proc)
            stop_process(emulator)
        assert rc == 0, node.stderr_tail()


def test_the_wheel_carries_what_serve_needs(installed: Installed) -> None:
    where = subprocess.run(
        [installed.bin / "python", "-c", "import bridge.serve.front as f; print(f.__file__); print(f.template_path())"],
        cwd=installed.run_dir, env=installed.env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    venv = installed.bin.parent
    assert all(Path(p).is_relative_to(venv) for p in where), where  # the wheel's copy, not the checkout
    version = subprocess.run(
        [installed.bin / "callbridge", "--version"], env=installed.env, capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == "callbridge 0.1.0"


@long_test
async def test_a_call_through_the_installed_front(installed: Installed, tmp_path: Path) -> None:
    work = sipp_dir(tmp_path)
    run = await sipp(work, f"{NODE_A}:{installed.port}", calls=1, scenario="uac_short.xml", local_host=CALLER)
    assert (run.successful, run.failed) == (1, 0), run.output[-3000:] + installed.stderr_tail()

    async def reports() -> list[dict[str, Any]]:
        return read_reports(installed.reports)

    (report,) = await wait_for(reports, "the call's report", 20)
    # a model session: the emulator accepts only API_KEY, so the key from the file reached the worker
    assert [kind for _, kind, _ in report["timeline"]].count("session_ready") == 1, report
    assert report["end_reason"].startswith("caller hung up"), report
    from bridge.store.connection import connect

    redis = connect(installed.redis_url)

    async def ended() -> str:
        state = await redis.hgetall(keys.call(report["call_id"]))  # type: ignore[misc]  # redis-py's async stubs
        return str(state.get("end_reason", ""))

    try:  # per-call state went to the Redis the variable named (written as the call ends, beside the report)
        assert await wait_for(ended, "the call's end in Redis", 10) == report["end_reason"]
    finally:
        await redis.aclose()


def test_ready_then_watchdog_over_notify_socket(installed: Installed) -> None:
    first = installed.notify.recv(4096).decode()
    assert first == "READY=1", first
    assert installed.notify.recv(4096).decode() == "WATCHDOG=1"
    health = _wait_healthy(installed)
    assert all(w["ready"] for w in health["workers"])  # type: ignore[attr-defined]  # JSON


def _healthz(installed: Installed) -> dict[str, Any]:
    """The node's /healthz body, also when it answers 503 (not ready: the body says why)."""
    import urllib.error
    import urllib.request

    url = f"http://{NODE_A}:{installed.env['CALLBRIDGE_HTTP_PORT']}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return dict(json.load(answer))
    except urllib.error.HTTPError as refused:
        assert refused.code == 503, refused
        return dict(json.load(refused))


def test_health_passes_then_fails_when_a_worker_is_killed(
    installed: Installed, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the image's HEALTHCHECK command, from the installed wheel, with serve's settings (and from another directory)
    probe = [installed.bin / "callbridge", "health", "--json"]
    done = subprocess.run(probe, env=installed.env, cwd="/", capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert answer["healthy"] is True and answer["url"].startswith(f"http://{NODE_A}:"), answer

    from bridge.serve.health import main as health

    for name, value in installed.env.items():  # the same settings in this process: the probe runs at once
        if name.startswith("CALLBRIDGE_"):
            monkeypatch.setenv(name, value)
    victim = _healthz(installed)["workers"][0]
    os.kill(victim["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _healthz(installed)["workers"][0]["pid"] == victim["pid"] and _healthz(installed)["workers"][0]["alive"]:
        assert time.monotonic() < deadline, "the pool did not notice the killed worker"
        time.sleep(0.02)
    assert health([]) == 1  # before the pool's restart has reported its port again
    assert "worker 0 is" in capsys.readouterr().out
    _wait_healthy(installed)  # restarted
    assert health([]) == 0
