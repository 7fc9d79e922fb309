"""The container image, the compose lab and the systemd unit, checked against the code they run: every command they
call exists in the CLI, every setting variable and secret file they set is one the settings loader reads, and the
image's plan set is safe."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from bridge import cli
from bridge.config import (
    ENV_PREFIX,
    FILE_SUFFIX,
    SUPERVISOR_READONLY_TOKEN_ENV,
    SUPERVISOR_TOKEN_ENV,
    WILDCARD_HOSTS,
    Settings,
    is_secret,
    load_settings,
    variables,
)
from bridge.dialplan import check_file, dialplan_files, load_dialplans, plan_warnings

ROOT = Path(__file__).resolve().parents[3]
DOCKER = ROOT / "deploy" / "docker"
UNIT = ROOT / "deploy" / "systemd" / "callbridge.service"
LOADER_INPUTS = {"CALLBRIDGE_CONFIG"}  # read by the settings flags themselves (bridge/serve/pool.py)
SECRET_VARIABLES = {
    *(v for name in Settings.model_fields if is_secret(name) for v in variables(name)),
    SUPERVISOR_TOKEN_ENV,
    SUPERVISOR_READONLY_TOKEN_ENV,
}
SETTING_VARIABLES = {v for name in Settings.model_fields for v in variables(name)} | LOADER_INPUTS | SECRET_VARIABLES


DOCUMENTED = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", (ROOT / "docs" / "configuration.md").read_text()))


def _known_variable(name: str) -> bool:
    """A setting's variable, a secret's _FILE, or another variable docs/configuration.md documents."""
    if name.endswith(FILE_SUFFIX):
        return name.removesuffix(FILE_SUFFIX) in SECRET_VARIABLES
    return not name.startswith(ENV_PREFIX) or name in SETTING_VARIABLES or name in DOCUMENTED


def test_compose_commands_settings_and_secrets() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    generated = set(_generated_secrets(compose))
    for name, service in compose["services"].items():
        if service.get("image") != "callbridge:local":
            continue
        assert service["command"][0] in cli.COMMANDS, (name, service["command"])
        env = service.get("environment", {})
        for variable, value in env.items():
            assert _known_variable(variable), (name, variable)
            if variable.endswith(FILE_SUFFIX):  # a secret the lab generated, in the volume mounted there
                assert value.startswith(f"{SECRETS_DIR}/") and value.removeprefix(f"{SECRETS_DIR}/") in generated
                assert f"{SECRETS_VOLUME}:{SECRETS_DIR}:ro" in service.get("volumes", []), name
        if service["command"][0] == "serve":  # the node's settings load as serve (and its health check) read them
            (mount,) = [m for m in service["volumes"] if m.startswith("./")]
            host, container = mount.split(":")[:2]
            assert env["CALLBRIDGE_CONFIG"] == container
            settings = load_settings(DOCKER / host)
            assert settings.http_port is not None  # what `callbridge health` asks
            assert settings.http_host not in WILDCARD_HOSTS, host


SECRETS_DIR, SECRETS_VOLUME = "/run/secrets", "lab-secrets"


def _generated_secrets(compose: dict[str, Any]) -> list[str]:
    """The files the lab's one-shot service writes into the secrets volume (the names its script makes)."""
    script = compose["services"]["make-secrets"]["command"][0]
    (names,) = re.findall(r"^for name in (.*); do$", script, re.MULTILINE)
    return [*names.split(), "redis_url"]


def test_the_compose_lab_commits_no_secret_guards_redis_and_publishes_on_loopback_only(tmp_path: Path) -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    # no secret is committed: no compose secret read from a file of the checkout, no secrets directory, no value of a
    # secret variable written into the file
    assert "secrets" not in compose and not (DOCKER / "secrets").exists()
    for name, service in services.items():
        for variable, value in (service.get("environment") or {}).items():
            if variable.removesuffix(FILE_SUFFIX) in SECRET_VARIABLES or variable.endswith(FILE_SUFFIX):
                assert variable.endswith(FILE_SUFFIX) and str(value).startswith(f"{SECRETS_DIR}/"), (name, variable)
            assert "REDIS_URL" not in variable or variable.endswith(FILE_SUFFIX), (name, variable)
        # everything published is on the Docker host's loopback
        for published in service.get("ports", []):
            assert str(published).startswith("127.0.0.1:"), (name, published)
    assert services["node-a"]["ports"] == ["127.0.0.1:8080:9090"]  # the console and the API

    # Redis asks for the generated password, read from the secrets volume (never on a command line), and the
    # nodes' redis_url carries it
    redis = services["redis"]
    script = redis["command"][0]
    assert "requirepass %s" in script and f"cat {SECRETS_DIR}/redis_password" in script
    assert "redis-server /tmp/redis.conf" in script and "--requirepass" not in script
    assert f"{SECRETS_VOLUME}:{SECRETS_DIR}:ro" in redis["volumes"]
    for service in (*(s for s in services.values() if s.get("image") == "callbridge:local"), redis):
        if service.get("command", [""])[0] != "emulator":
            assert service["depends_on"]["make-secrets"] == {"condition": "service_completed_successfully"}

    # the generator, run as the lab runs it: random values, kept on the next run, the URL with the password
    generator = services["make-secrets"]
    assert generator["volumes"] == [f"{SECRETS_VOLUME}:{SECRETS_DIR}"]
    script = generator["command"][0].replace("$$", "$").replace("chown 10001:10001", "true")  # compose's escape

    def run() -> dict[str, str]:
        subprocess.run(["sh", "-c", script], env={**os.environ, "LAB_SECRETS": str(tmp_path)}, check=True)
        return {f.name: f.read_text() for f in tmp_path.iterdir()}

    first = run()
    assert sorted(first) == sorted(_generated_secrets(compose))
    for name, value in first.items():
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
        if name != "redis_url":
            assert re.fullmatch(r"[0-9a-f]{48}", value), (name, value)
    assert len({v for k, v in first.items() if k != "redis_url"}) == len(first) - 1  # each its own
    assert first["redis_url"] == f"redis://:{first['redis_password']}@redis:6379/0"
    assert Settings(redis_url=first["redis_url"]).redis_url == first["redis_url"]
    assert run() == first  # a second `up` keeps them


def test_the_image_installs_the_wheel_with_its_c_parts_and_no_compiler() -> None:
    build_stage, final = (DOCKER / "Dockerfile").read_text().split("\nFROM ")[1:]
    assert "COPY pyproject.toml setup.py" in build_stage  # setup.py compiles the C parts into the wheel
    assert "pip wheel --no-cache-dir --no-deps -w /wheels ." in build_stage
    assert "gcc" not in final and "CALLBRIDGE_CACHE" not in final  # nothing compiled, no cache of C parts
    assert "/opt/venv/bin/pip install --no-cache-dir /wheels/callbridge-*.whl" in final
    assert "/opt/venv/bin/python -m bridge.devkit.native_check --packaged" in final  # the build fails otherwise


def test_the_image_runs_health_and_a_safe_plan_set() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    final = text.split("\nFROM ")[-1]
    (check,) = re.findall(r"^HEALTHCHECK .* CMD (\[.*\])$", final, re.MULTILINE)
    assert yaml.safe_load(check) == ["callbridge", "health"]
    assert yaml.safe_load(re.findall(r"^CMD (\[.*\])$", final, re.MULTILINE)[-1])[0] in cli.COMMANDS
    assert "CALLBRIDGE_CONFIG=/etc/callbridge/serve.yaml" in final
    assert "COPY deploy/docker/serve.yaml /etc/callbridge/serve.yaml" in final
    assert "COPY deploy/docker/dialplans /etc/callbridge/dialplans" in final
    assert "COPY dialplans /etc/callbridge/dialplans" not in final  # the examples only under a path mounted on purpose
    settings = load_settings(DOCKER / "serve.yaml")
    assert settings.dialplans == Path("/etc/callbridge/dialplans")
    files = dialplan_files(DOCKER / "dialplans")
    assert files and not [e for f in files for e in check_file(f)]
    for plan in load_dialplans(DOCKER / "dialplans"):
        assert "*" not in plan.match and not list(plan_warnings(plan)), plan.name
        assert plan.dialect == "ga", plan.name  # the dialect the service keeps


def _unit() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_the_systemd_unit_is_notify_watchdog_wheel_and_credentials() -> None:
    unit = _unit()
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert int(unit["WatchdogSec"][0]) > 0
    program, command, *_ = unit["ExecStart"][0].split()
    assert program == "/opt/callbridge/venv/bin/callbridge" and command in cli.COMMANDS  # the wheel's entry point
    environment = dict(e.split("=", 1) for e in unit["Environment"])
    for variable in environment:
        assert _known_variable(variable), variable
    credentials = [c.split(":", 1)[0] for c in unit["LoadCredential"]]
    given = {v.removeprefix("%d/"): k for k, v in environment.items() if v.startswith("%d/")}
    assert sorted(given) == sorted(credentials)  # every credential is read through a _FILE setting
    assert all(k.endswith(FILE_SUFFIX) for k in given.values())
    assert "OPENAI_API_KEY_FILE" in given.values() and "EnvironmentFile" not in unit  # no secrets in the environment
