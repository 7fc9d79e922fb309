"""Every serve settings file under deploy/ starts a ready `serve`, as its deployment starts it: the image's default
settings with the image's command, the compose lab's two nodes (node A with its Kamailio front) with compose's
environment and secrets, and the systemd example with the unit's command, environment and credentials. Each is
closed as the start-up exposure check requires, and a caller it does not name is refused.

What a test machine cannot have is moved, and only that (:data:`OVERRIDABLE`): the node's own addresses onto
loopback ones, its ports onto private ones, the image's and the host's paths into a temp dir, the services it
reaches (Redis, the model) onto the test's own, secret files onto temp files. Who may call is never changed, and the
exposure check is never switched off.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml
from _serve_start import ROOT, Started, clean_env, invite_status, port_block

from bridge.config import Settings, load_settings
from bridge.devkit.ports import can_bind, free_port_block
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.emulator import EmulatorServer
from bridge.serve.front import kamailio_binary

DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
SYSTEMD = DEPLOY / "systemd"
# the compose lab's two node addresses (172.28.0.11 and .12, each a container's own), as two loopback addresses
NODE_A, NODE_B = "127.0.0.2", "127.0.0.3"
COMPOSE_ADDRESSES = {"172.28.0.11": NODE_A, "172.28.0.12": NODE_B}
# The settings a test may move, each because it cannot exist on a test machine:
OVERRIDABLE = {
    "sip_host",  # the node's own address (a container's, a server's): a loopback address here
    "http_host",  # likewise; a wildcard (every interface of the container) becomes loopback: no console opened
    "sip_port",  # 5060 and up, 9090: taken, privileged, or shared with the suite's other workers
    "http_port",
    "front_peers",  # the other node's workers, at its address and ports as moved
    "sip_trusted_fronts",  # the other node's front, at its address as moved
    "dialplans",  # /etc/callbridge/dialplans: the image copies deploy/docker/dialplans there
    "recordings_dir",  # /var/lib/callbridge: a temp dir
    "control_socket",  # /run/callbridge (systemd's RuntimeDirectory=): a temp dir, one per test
}
STARTED_HERE = {
    "deploy/docker/serve.yaml",
    "deploy/docker/node-a.yaml",
    "deploy/docker/node-b.yaml",
    "deploy/systemd/serve.yaml.example",
}

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),  # up to 8 workers and Kamailio started on a loaded machine
    pytest.mark.xdist_group("cpu"),  # pools of workers (8 for the systemd example), and Kamailio
    pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary"),
]
needs_kamailio = pytest.mark.skipif(
    kamailio_binary() is None, reason="kamailio is not installed (apt-get install kamailio)"
)
needs_aliases = pytest.mark.skipif(not can_bind(NODE_B), reason="127.0.0.2/127.0.0.3 are not usable here")


def _serve_settings_files() -> set[str]:
    """The files under deploy/ that are serve settings: YAML whose every key is a setting."""
    found = set()
    for path in DEPLOY.rglob("*"):
        if not path.is_file() or not re.search(r"\.ya?ml(\.example)?$", path.name):
            continue
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and data and set(data) <= set(Settings.model_fields):
            found.add(str(path.relative_to(ROOT)))
    return found


def test_every_serve_settings_file_under_deploy_is_started_here() -> None:
    assert _serve_settings_files() == STARTED_HERE


def settings_copy(source: Path, dest: Path, **changes: Any) -> Settings:
    """``source`` with ``changes`` (only settings it sets itself, and only :data:`OVERRIDABLE` ones) in ``dest``."""
    data = yaml.safe_load(source.read_text())
    assert set(changes) <= OVERRIDABLE, set(changes) - OVERRIDABLE
    assert set(changes) <= set(data), set(changes) - set(data)
    dest.write_text(json.dumps({**data, **changes}))  # JSON is YAML
    return load_settings(dest)


def _run_dir(args: list[str], tmp: Path, name: str) -> list[str]:
    """The deployment's serve arguments, its run directory (/run/callbridge/front) moved into ``tmp``."""
    return [str(tmp / f"{name}-front") if a == "/run/callbridge/front" else a for a in args]


async def test_the_image_default_settings_start_closed(tmp_path: Path) -> None:
    shipped = load_settings(DOCKER / "serve.yaml")
    assert shipped.sip_host == "0.0.0.0" and shipped.front == "none"  # kept: the exposure check sees the wildcard
    base, http_port = port_block(shipped.workers), free_port_block(1)
    config = tmp_path / "serve.yaml"
    settings = settings_copy(
        DOCKER / "serve.yaml", config, sip_port=base, http_port=http_port, http_host="127.0.0.1",
        dialplans=str(DOCKER / "dialplans"), recordings_dir=str(tmp_path / "recordings"),
    )  # fmt: skip
    final = (DOCKER / "Dockerfile").read_text().split("\nFROM ")[-1]
    (cmd,) = re.findall(r"^CMD (\[.*\])$", final, re.MULTILINE)
    with EmbeddedRedis() as redis:
        async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
            # the image's settings file, and the secrets and services it takes from the environment (its comment)
            env = clean_env(
                CALLBRIDGE_CONFIG=str(config), OPENAI_API_KEY="sk-test-image", REDIS_URL=redis.url,
                CALLBRIDGE_REALTIME_URL=emulator.base_url,
            )  # fmt: skip
            serve = Started(tmp_path, "image", _run_dir(yaml.safe_load(cmd)[1:], tmp_path, "image"), env, cwd=tmp_path)
            try:
                health = await serve.ready("127.0.0.1", http_port, workers=settings.workers)
                assert [w["sip_port"] for w in health["workers"]] == [base + i for i in range(settings.workers)]
                assert "SIP access: calls answered from sources in sip_allowed_sources" in serve.stderr(100_000)
                # on every interface, and closed: a caller it does not name is refused
                assert await asyncio.to_thread(invite_status, "127.0.0.1", base) == 403
            finally:
                rc = serve.stop()
            assert rc == 0, serve.stderr()


def _compose_node(
    name: str, compose: dict[str, Any], tmp: Path, moved: dict[str, Any], services: dict[str, str]
) -> tuple[list[str], dict[str, str], Settings]:
    """Compose's command and environment for node ``name``, its settings moved by ``moved``; ``services``: the
    variables that point at compose's Redis and emulator, pointed at the test's."""
    service = compose["services"][name]
    (mount,) = [m for m in service["volumes"] if m.startswith("./")]
    host_file, container_file = mount.split(":")[:2]
    config = tmp / f"{name}.yaml"
    settings = settings_copy(DOCKER / host_file, config, **moved)
    env: dict[str, str] = {}
    for variable, value in service["environment"].items():
        if value == container_file:
            value = str(config)
        elif value.startswith("/run/secrets/"):  # a secret the lab generates at its first `up`: one of the test's
            secret = value.removeprefix("/run/secrets/")
            value = str(tmp / f"{name}-{secret}")
            Path(value).write_text(services.get(variable.removesuffix("_FILE")) or secrets.token_hex(24))
            env[variable] = value
            continue
        env[variable] = services.get(variable, value)
    command, *args = service["command"]
    assert command == "serve"
    return _run_dir(args, tmp, name), clean_env(**env), settings


@needs_kamailio
@needs_aliases
async def test_the_compose_lab_nodes_start_closed(tmp_path: Path) -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    b = load_settings(DOCKER / "node-b.yaml")
    a_port, b_port = (
        port_block(load_settings(DOCKER / "node-a.yaml").workers + 1, (NODE_A, NODE_B)),
        port_block(b.workers, (NODE_A, NODE_B)),
    )
    moved_b = {
        "sip_host": NODE_B, "http_host": NODE_B, "sip_port": b_port, "http_port": free_port_block(1),
        "sip_trusted_fronts": [f"{NODE_A}/32"], "dialplans": str(DOCKER / "dialplans"),
        "recordings_dir": str(tmp_path / "b-recordings"),
    }  # fmt: skip
    assert list(b.sip_trusted_fronts) == ["172.28.0.11/32"]  # node A's address, as moved
    moved_a = {
        "sip_host": NODE_A, "http_host": NODE_A, "sip_port": a_port, "http_port": free_port_block(1),
        "front_peers": [f"{NODE_B}:{b_port + i}" for i in range(b.workers)], "dialplans": str(DOCKER / "dialplans"),
        "recordings_dir": str(tmp_path / "a-recordings"),
    }  # fmt: skip
    with EmbeddedRedis() as redis:
        async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
            services = {"CALLBRIDGE_REDIS_URL": redis.url, "CALLBRIDGE_REALTIME_URL": emulator.base_url}
            started: list[Started] = []
            try:
                for name, moved in (("node-b", moved_b), ("node-a", moved_a)):  # as compose would: B, then A
                    args, env, settings = _compose_node(name, compose, tmp_path, moved, services)
                    node = Started(tmp_path, name, args, env, cwd=tmp_path)
                    started.append(node)
                    await node.ready(settings.http_host, settings.http_port or 0, workers=settings.workers)
                stderr_a = started[1].stderr(100_000)
                assert "calls the front admits (front_allowed_sources: 172.28.0.1/32)" in stderr_a
                # closed: the front refuses a caller outside front_allowed_sources (the lab's Docker host)
                assert await asyncio.to_thread(invite_status, NODE_A, a_port) == 403
            finally:
                codes = [node.stop() for node in reversed(started)]
            assert codes == [0, 0], [node.stderr() for node in started]


@needs_kamailio
@needs_aliases
async def test_the_systemd_example_starts_closed(tmp_path: Path) -> None:
    shipped = load_settings(SYSTEMD / "serve.yaml.example")
    base, http_port = port_block(shipped.workers + 1, (NODE_A,)), free_port_block(1)
    config = tmp_path / "serve.yaml"
    settings = settings_copy(
        SYSTEMD / "serve.yaml.example", config, sip_host=NODE_A, sip_port=base, http_port=http_port,
        dialplans=str(DOCKER / "dialplans"), recordings_dir=str(tmp_path / "recordings"),
        control_socket=str(tmp_path / "run" / "control.sock"),
    )  # fmt: skip
    unit = [line.partition("=") for line in (SYSTEMD / "callbridge.service").read_text().splitlines()]
    (exec_start,) = [value for key, _, value in unit if key == "ExecStart"]
    credentials = tmp_path / "credentials"  # LoadCredential='s directory (%d)
    credentials.mkdir()
    with EmbeddedRedis() as redis:
        async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
            values = {"openai_api_key": "sk-test-systemd", "redis_url": redis.url, "supervisor_token": "t1",
                      "supervisor_readonly_token": "t2", "sip_nonce_secret": "n" * 32,
                      "rollout_key": "r" * 64}  # fmt: skip
            for key, _, value in unit:
                if key == "LoadCredential":
                    name = value.split(":", 1)[0]
                    (credentials / name).write_text(values[name])
            env = {}
            for key, _, value in unit:
                if key == "Environment":
                    variable, _, setting = value.partition("=")
                    env[variable] = setting.replace("%d", str(credentials))
            env["CALLBRIDGE_CONFIG"] = str(config)
            del env["CALLBRIDGE_CACHE"]  # /var/cache/callbridge: the C parts as this checkout built them
            # the model service: the test's emulator (the unit's settings reach OpenAI's)
            env["CALLBRIDGE_REALTIME_URL"] = emulator.base_url
            args = _run_dir(exec_start.split()[2:], tmp_path, "systemd")  # after ".../callbridge serve"
            serve = Started(tmp_path, "systemd", args, clean_env(**env), cwd=tmp_path)  # WorkingDirectory: a temp dir
            try:
                health = await serve.ready("127.0.0.1", http_port, workers=settings.workers)
                assert [w["sip_port"] for w in health["workers"]] == [base + 1 + i for i in range(settings.workers)]
                assert "calls the front admits (front_allowed_sources:" in serve.stderr(100_000)
                # closed: the front refuses a caller outside front_allowed_sources (the trunk)
                assert await asyncio.to_thread(invite_status, NODE_A, base) == 403
            finally:
                rc = serve.stop()
            assert rc == 0, serve.stderr()
