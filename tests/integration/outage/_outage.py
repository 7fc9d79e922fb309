"""Real processes for the outage tests: ``callbridge emulator`` (killed and started again on its port),
``callbridge serve`` (with Redis), the softphone, and what the caller heard, told apart by pitch: the hold
message's chime is 480 Hz, the emulator's agent speaks a tone of ``AGENT_HZ``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from numpy.typing import NDArray

from bridge.devkit.ports import free_port
from bridge.devkit.process import stop_process
from bridge.store.reportfile import read_reports

ROOT = Path(__file__).resolve().parents[3]
HOLD_HZ = 480.0
AGENT_HZ = 800.0
WINDOW_S = 0.1


async def until(predicate: Callable[[], Any], within_s: float, what: str, every_s: float = 0.05) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(every_s)
    raise TimeoutError(f"not within {within_s} s: {what}")


class Emulator:
    """``callbridge emulator`` as a process on a fixed port: :meth:`kill` (SIGKILL) and :meth:`start` again."""

    def __init__(self, port: int | None = None, *args: str) -> None:
        self.port = port or free_port()
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1"

    async def start(self) -> float:
        """Start it; returns (monotonic) when it answers HTTP."""
        self.proc = subprocess.Popen(  # noqa: ASYNC220 (a long-lived server, stopped by pid)
            [sys.executable, "-m", "bridge", "emulator", "--host", "127.0.0.1", "--port", str(self.port),
             "--speed", "4", "--tone-hz", str(int(AGENT_HZ)), "--ping-interval", "0", *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        await until(self.ready, 20, "the emulator up")
        return time.monotonic()

    async def ready(self) -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.port}/control/sessions"):
                return True
        except aiohttp.ClientError:
            return False

    async def sessions(self) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/control/sessions"
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            return list((await r.json())["sessions"])

    async def greeted(self) -> bool:
        """A session has sent a whole response (the greeting)."""
        return any(r["status"] == "completed" for s in await self.sessions() for r in s["responses"])

    def kill(self) -> float:
        """SIGKILL (no goodbye on its sockets); returns (monotonic) when it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        return time.monotonic()


class Serve:
    """``callbridge serve`` with one worker; its stderr (the log) is kept in a file."""

    def __init__(self, tmp: Path, realtime_url: str, *, redis_url: str | None = None, extra: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, config: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.sip_port, self.http_port = free_port(), free_port()
        self.reports = tmp / "calls.jsonl"
        self.log = tmp / "serve.log"
        args = [sys.executable, "-m", "bridge", "serve", "--workers", "1", "--sip-port", str(self.sip_port),
                "--realtime-url", realtime_url, "--http-port", str(self.http_port),
                "--dialplans", str(tmp / "dialplans"), "--report-file", str(self.reports), *extra]  # fmt: skip
        if redis_url:
            args += ["--redis-url", redis_url]
        if config:
            (tmp / "settings.yaml").write_text(json.dumps(config))
            args += ["--config", str(tmp / "settings.yaml")]
        full_env = {**os.environ, **(env or {})}
        if env is None or "OPENAI_API_KEY" not in env:
            full_env.pop("OPENAI_API_KEY", None)
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(args, env=full_env, stdout=subprocess.DEVNULL, stderr=self._log)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def healthz(self) -> dict[str, Any] | None:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.http_port}/healthz") as r:
                return dict(await r.json())
        except aiohttp.ClientError:
            return None

    async def wait_ready(self) -> None:
        async def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.text()[-3000:]}")
            health = await self.healthz()
            workers = (health or {}).get("workers") or []
            return bool(workers) and all(w["alive"] and w["sip_port"] for w in workers)

        await until(ready, 40, "serve healthy", every_s=0.2)

    def uri(self, number: str = "4000") -> str:
        return f"sip:{number}@127.0.0.1:{self.sip_port}"

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()

    def report(self) -> dict[str, Any]:
        (line,) = read_reports(self.reports)
        return dict(line)


def write_plan(directory: Path, **fields: Any) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    vad = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 400}
    plan = {
        "name": "outage",
        "match": ["*"],
        "dialect": "ga",
        "greeting": "Greet the caller briefly.",
        "profile": {"instructions": "A test agent.", "audio_format": "pcm16", "turn_detection": vad},
        **fields,
    }
    (directory / "outage.yaml").write_text(json.dumps(plan))


async def softphone(
    uri: str,
    record: Path,
    hangup_after: float,
    timeout: float = 90.0,  # noqa: ASYNC109
    sip_log: Path | None = None,
) -> dict[str, Any]:
    """Place a call; ``sip_log``: write the phone's log there, SIP messages included (pjsua log level 5)."""
    log = ["--log-level", "5"] if sip_log is not None else []
    # pjsua's SIP messages are logged at DEBUG: configured first, ``callbridge``'s own INFO set-up is a no-op
    debug = "import logging, sys; logging.basicConfig(level=logging.DEBUG); from bridge.cli import main; main()"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", debug, "call", uri, "--record", str(record), "--hangup-after", str(hangup_after),
        "--json", *log, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    if sip_log is not None:
        sip_log.write_bytes(out + err)
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


async def listener(port: int, record: Path, duration: float) -> asyncio.subprocess.Process:
    """``callbridge phone listen``: the human the caller is transferred to (a third user agent)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "phone", "listen", "--port", str(port), "--record", str(record),
        "--duration", str(duration), "--calls", "1", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return proc


# -- what the caller heard --------------------------------------------------------------------------------------


def read_wav(path: Path) -> tuple[NDArray[np.float64], int]:
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
    return data, rate


def pitch_track(x: NDArray[np.float64], rate: int) -> list[tuple[float, float]]:
    """(start s, dominant Hz or 0 for quiet) of each 100 ms window."""
    n = int(rate * WINDOW_S)
    out = []
    for i in range(0, len(x) - n + 1, n):
        w = x[i : i + n]
        rms = float(np.sqrt(np.mean(w * w)))
        if rms < 10 ** (-45 / 20):
            out.append((i / rate, 0.0))
            continue
        spectrum = np.abs(np.fft.rfft(w * np.hanning(n), rate))  # 1 Hz bins
        out.append((i / rate, float(np.argmax(spectrum[1:]) + 1)))
    return out


def first_heard(
    track: list[tuple[float, float]], hz: float, after_s: float, tolerance_hz: float = 25.0
) -> float | None:
    """When the first window at ``hz`` (within ``tolerance_hz``) starts, at or after ``after_s``."""
    for t, f in track:
        if t >= after_s - 1e-9 and abs(f - hz) <= tolerance_hz:
            return t
    return None


def timeline_ms(report: dict[str, Any], kind: str) -> list[float]:
    return [float(t) for t, k, _ in report["timeline"] if k == kind]
