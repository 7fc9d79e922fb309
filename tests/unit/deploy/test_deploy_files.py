"""The container image, the compose lab and the systemd unit, checked against the code they run: every command they
call exists in the CLI, every setting variable and secret file they set is one the settings loader reads, and the
image's plan set is safe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bridge import cli
from bridge.config import (
    ENV_PREFIX,
    FILE_SUFFIX,
    SUPERVISOR_READONLY_TOKEN_ENV,
    SUPERVISOR_TOKEN_ENV,
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
    declared = compose["secrets"]
    for secret in declared.values():
        assert (DOCKER / secret["file"]).is_file(), secret
    for name, service in compose["services"].items():
        if service.get("image") != "callbridge:local":
            continue
        assert service["command"][0] in cli.COMMANDS, (name, service["command"])
        env = service.get("environment", {})
        for variable, value in env.items():
            assert _known_variable(variable), (name, variable)
            if variable.endswith(FILE_SUFFIX):  # a compose secret this service is given
                secret = value.removeprefix("/run/secrets/")
                assert value.startswith("/run/secrets/") and secret in service["secrets"] and secret in declared
        if service["command"][0] == "serve":  # the node's settings load as serve (and its health check) read them
            (mount,) = service["volumes"]
            host, container = mount.split(":")[:2]
            assert env["CALLBRIDGE_CONFIG"] == container
            settings = load_settings(DOCKER / host)
            assert settings.http_port is not None  # what `callbridge health` asks


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


@pytest.mark.parametrize("path", ["deploy/docker/secrets/supervisor_token", "deploy/docker/secrets/sip_nonce_secret"])
def test_the_lab_secrets_say_they_are_lab_only(path: str) -> None:
    assert "lab-only" in (ROOT / path).read_text()
