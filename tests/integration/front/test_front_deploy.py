"""deploy/ is checked by the tools that will run it: systemd-analyze verifies the units, Kamailio checks its script with
the example front.defs and dispatcher.list, and the example serve.yaml loads as settings."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from _front import ROOT

from bridge.config import load_settings
from bridge.serve.front import kamailio_binary

DEPLOY = ROOT / "deploy"
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
    text = text.replace("/opt/callbridge/.venv/bin/callbridge", str(ROOT / ".venv" / "bin" / "callbridge"))
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
    shutil.copy(DEPLOY / "kamailio" / "kamailio.cfg", tmp_path / "kamailio.cfg")
    shutil.copy(DEPLOY / "kamailio" / "dispatcher.list.example", tmp_path / "dispatcher.list")
    defs = (DEPLOY / "kamailio" / "front.defs.example").read_text()
    defs = defs.replace("/etc/callbridge/front", str(tmp_path)).replace("/run/callbridge-front", str(tmp_path))
    (tmp_path / "front.defs").write_text(defs.replace("203.0.113.10", "127.0.0.1"))
    check = subprocess.run([kamailio, "-c", "-f", "kamailio.cfg"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr[-3000:]
    assert "config file ok" in check.stdout + check.stderr


def test_the_example_settings_load() -> None:
    settings = load_settings(DEPLOY / "systemd" / "serve.yaml.example")
    assert (settings.front, settings.sip_port, settings.worker_sip_port(0)) == ("kamailio", 5060, 5061)
