"""deploy/ is checked by the tools that will run it: systemd-analyze verifies the units, Kamailio checks its script with
the example front.defs and dispatcher.list, and the example serve.yaml loads as settings."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from _front import ROOT

from bridge.config import load_settings
from bridge.serve.front import kamailio_binary
from bridge.serve.front_dialogs import has_db_redis

DEPLOY = ROOT / "deploy"
KAMAILIO = ROOT / "bridge" / "serve" / "kamailio"  # the routing script and its examples, package data
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", ["callbridge.service", "callbridge-front.service"])
def test_systemd_units_verify(unit: str, tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    kamailio = kamailio_binary()
    if unit == "callbridge-front.service" and kamailio is None:
        pytest.skip("kamailio is not installed (apt-get install kamailio)")
    # verify checks that ExecStart's program exists: point the install paths at this checkout's
    text = (DEPLOY / "systemd" / unit).read_text()
    text = text.replace("/opt/callbridge/venv/bin/callbridge", str(ROOT / ".venv" / "bin" / "callbridge"))
    text = text.replace("/usr/sbin/kamailio", kamailio or "/usr/sbin/kamailio")
    if not (ROOT / ".venv" / "bin" / "callbridge").exists():
        pytest.skip("no .venv/bin/callbridge in this checkout (./dev setup)")
    (tmp_path / unit).write_text(text)
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(tmp_path / unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert unit not in result.stderr, result.stderr  # no warning about the unit itself


def test_the_kamailio_examples_pass_kamailios_check(tmp_path: Path) -> None:
    kamailio = kamailio_binary()
    if kamailio is None:
        pytest.skip("kamailio is not installed (apt-get install kamailio)")
    shutil.copy(KAMAILIO / "kamailio.cfg", tmp_path / "kamailio.cfg")
    shutil.copy(KAMAILIO / "dispatcher.list.example", tmp_path / "dispatcher.list")
    shutil.copy(KAMAILIO / "front.sources.example", tmp_path / "front.sources")
    defs = (KAMAILIO / "front.defs.example").read_text()
    defs = defs.replace("/etc/callbridge/front", str(tmp_path)).replace("/run/callbridge-front", str(tmp_path))
    defs = defs.replace("203.0.113.10", "127.0.0.1")
    if not has_db_redis():  # the dialogs in Redis need kamailio-redis-modules
        defs = defs.replace("##!define FRONT_DIALOG_DB\n", "")
    users = (KAMAILIO / "front.users.example").read_text()
    # as it comes (every guard off: front.users is only its route), then with every guard on, then with listed
    # trunks and digest but no allow-list
    open_users = "\n".join(line for line in users.splitlines() if not line.startswith("modparam"))
    trunks = defs.replace("##!define FRONT_TRUNKS", "#!define FRONT_TRUNKS").replace(
        "##!define FRONT_AUTH", "#!define FRONT_AUTH"
    )
    trunk_users = "\n".join(line for line in users.splitlines() if "topoh" not in line)
    variants = ((defs, open_users), (defs.replace("##!define", "#!define"), users), (trunks, trunk_users))
    for front_defs, front_users in variants:
        (tmp_path / "front.defs").write_text(front_defs)
        (tmp_path / "front.users").write_text(front_users)
        check = subprocess.run([kamailio, "-c", "-f", "kamailio.cfg"], cwd=tmp_path, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr[-3000:]
        assert "config file ok" in check.stdout + check.stderr


def test_the_example_settings_load() -> None:
    settings = load_settings(DEPLOY / "systemd" / "serve.yaml.example")
    assert (settings.front, settings.sip_port, settings.worker_sip_port(0)) == ("kamailio", 5060, 5061)


# -- the container set-up (no Docker daemon needed: checked against the files and the settings loader) -------------

COMPOSE_DIR = DEPLOY / "docker"


def test_the_dockerfile_is_slim_non_root_and_health_checked() -> None:
    text = (COMPOSE_DIR / "Dockerfile").read_text()
    stages = text.split("\nFROM ")
    final = stages[-1]
    assert final.startswith("python:3.11-slim")
    assert "gcc" not in final  # the compiler stays in the build stage
    users = [line.split()[1] for line in final.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in final and 'CMD ["callbridge", "health"]' in final  # serve's settings, serve's address
    for line in text.splitlines():  # every file copied from the build context exists
        if line.startswith("COPY ") and "--from=" not in line:
            sources = [word for word in line.split()[1:-1] if not word.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), line
    # the image's default settings have the HTTP API the health check asks
    assert load_settings(COMPOSE_DIR / "serve.yaml").http_port is not None


def test_compose_wires_files_addresses_and_settings_that_exist() -> None:
    compose = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    services = compose["services"]
    addresses = {name: s["networks"]["sip"]["ipv4_address"] for name, s in services.items() if "networks" in s}
    assert set(services) - set(addresses) == {"make-secrets"}  # the one-shot secrets maker is on no network
    named_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            host_path = volume.split(":")[0]
            # a named volume is declared at the top level; anything else is a path beside compose.yaml
            assert host_path in named_volumes or (COMPOSE_DIR / host_path).exists(), (name, volume)
    # each node's settings load, name its own address, and the front's peers are node B's workers
    nodes = {}
    for name in ("node-a", "node-b"):
        (mount,) = [m for m in services[name]["volumes"] if m.startswith("./")]
        nodes[name] = load_settings(COMPOSE_DIR / mount.split(":")[0])
        assert nodes[name].sip_host == addresses[name]
    a, b = nodes["node-a"], nodes["node-b"]
    assert a.front == "kamailio" and b.front == "none"
    assert list(a.front_peers) == [f"{b.sip_host}:{b.worker_sip_port(i)}" for i in range(b.workers)]
    assert b.trusted_fronts() == (f"{a.sip_host}/32",)
    # Prometheus scrapes both nodes' /metrics
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert sorted(targets) == sorted(f"{n.sip_host}:{n.http_port}" for n in nodes.values())


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing: apt-get install prometheus")
def test_the_prometheus_config_checks() -> None:
    check = subprocess.run(
        ["promtool", "check", "config", "prometheus.yml"], cwd=DEPLOY / "prometheus", capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
