"""``sip_host`` set to an IPv6 address (issue 62, item 8): the workers serve SIP and RTP over IPv4 only (pjsua's IPv4
transports, the media guard, the access rules and the front's routing), and pjsua could not bind one, so each worker
died at start and the pool restarted it for ever. ``serve`` now refuses the setting before it starts anything: one
error naming the setting and where it came from, exit status 2, no worker started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
WITHIN_S = 30.0  # a refusal comes before any worker starts: seconds, not a restart loop


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_") and k != "OPENAI_API_KEY"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["XDG_STATE_HOME"] = str(tmp / "state")
    return env


@pytest.mark.parametrize(("host", "origin"), [("::1", "flag --sip-host"), ("::", "variable CALLBRIDGE_SIP_HOST")])
def test_an_ipv6_sip_host_is_refused_once_at_start(tmp_path: Path, host: str, origin: str) -> None:
    args = [sys.executable, "-m", "bridge", "serve", "--workers", "1", "--sip-port", "0", "--realtime-url",
            "ws://127.0.0.1:9/v1", "--dialplans", str(ROOT / "dialplans")]  # fmt: skip
    env = _env(tmp_path)
    if origin.startswith("flag"):
        args += ["--sip-host", host]
    else:
        env["CALLBRIDGE_SIP_HOST"] = host
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=WITHIN_S, cwd=tmp_path)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"serve still running after {WITHIN_S} s:\n{str(exc.stderr or '')[-3000:]}") from None
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"{origin}: sip_host" in done.stderr, done.stderr[-3000:]
    assert "IPv6" in done.stderr and "IPv4 only" in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "worker 0" not in done.stderr, done.stderr[-3000:]  # refused before any worker started
