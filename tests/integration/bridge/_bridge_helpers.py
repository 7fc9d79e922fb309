"""Shared helpers for the end-to-end bridge tests: the whole stack on loopback, and the audio measurements.

One test = one :class:`BridgeStack`: the Realtime emulator in-process (on the test's event loop, so its session
records can be inspected), a :class:`~bridge.serve.pool.Pool` of one worker subprocess pointed at it with a report
file, and a temporary dialplans directory with the test plans below. Callers are ``python -m bridge call``
subprocesses (a pjsua2 Endpoint is one per process), started with asyncio so the emulator keeps serving while
they run. Every wait here is async for the same reason. Processes are stopped by their own pid, never by name.

Test plans (called number -> plan):

    3101 (and "*")  ga-pcm      GA,   pcm16 (24 kHz, resampled)
    3102            beta-pcm    beta, pcm16
    3103            ga-ulaw     GA,   g711_ulaw passthrough
    3104            beta-ulaw   beta, g711_ulaw passthrough
    3105            ga-xfer     GA,   pcm16, transfer_to_human to the listen-mode UA of the test (if given)
    3106            live-pcm    Live, pcm16_16k (16 kHz, resampled), a greeting
    3107            live-ulaw   Live, g711_ulaw passthrough, a greeting
    3108            live-xfer   Live, as ga-xfer

Level convention (``bridge.audio.analysis``): dBFS = 20·log10(rms / 32768). The emulator's ``tone_dbfs`` is a *peak*
level, so its reply tone has an RMS of ``tone_dbfs - 3.01`` dB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import signal
import socket
import sys
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web
from numpy.typing import NDArray

from bridge.audio.analysis import peak_frequency
from bridge.audio.wav import read_wav, write_wav
from bridge.config import Settings
from bridge.devkit.ports import free_port_block
from bridge.devkit.tlscert import self_signed
from bridge.emulator import EmulatorServer
from bridge.emulator.server import server_tls
from bridge.emulator.session import SessionRecord
from bridge.serve.pool import Pool
from bridge.store.reportfile import read_reports

REPO = Path(__file__).resolve().parents[3]
ASSETS = REPO / "bridge" / "assets"
LOCALHOST = "127.0.0.1"
RATE = 8000
SINE_PEAK_TO_RMS_DB = 20 * math.log10(math.sqrt(2))  # 3.01 dB

PLANS: dict[str, tuple[str, str, str]] = {  # number -> (plan name, dialect, audio format)
    "3101": ("ga-pcm", "ga", "pcm16"),
    "3102": ("beta-pcm", "beta", "pcm16"),
    "3103": ("ga-ulaw", "ga", "g711_ulaw"),
    "3104": ("beta-ulaw", "beta", "g711_ulaw"),
    "3106": ("live-pcm", "live", "pcm16_16k"),
    "3107": ("live-ulaw", "live", "g711_ulaw"),
}
NUMBER = {(dialect, fmt): number for number, (_name, dialect, fmt) in PLANS.items()}
XFER_NUMBER = "3105"
LIVE_XFER_NUMBER = "3108"
SILENCE_MS = 400  # turn_detection.silence_duration_ms of every test plan


# -- processes and ports ---------------------------------------------------------------------------------------


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIP listens on both)."""
    return free_port_block(1)


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(REPO) + os.pathsep + out.get("PYTHONPATH", "")
    return out


@dataclass
class Finished:
    returncode: int
    report: dict[str, Any] | None  # the last JSON line of stdout
    stdout: str
    stderr: str

    def describe(self) -> str:
        return f"rc={self.returncode} stderr tail:\n{self.stderr[-3000:]}"


def last_json(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            out: dict[str, Any] = json.loads(line)
            return out
    return None


async def start(*args: str, cwd: Path | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env(),
        cwd=str(cwd or REPO),
    )


async def finish(proc: asyncio.subprocess.Process, timeout: float = 60.0) -> Finished:  # noqa: ASYNC109
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        out, err = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode is not None
    return Finished(proc.returncode, last_json(text), text, err.decode(errors="replace"))


async def run(*args: str, timeout: float = 60.0, cwd: Path | None = None) -> Finished:  # noqa: ASYNC109
    return await finish(await start(*args, cwd=cwd), timeout)


async def stop(proc: asyncio.subprocess.Process, timeout: float = 15.0) -> Finished:  # noqa: ASYNC109
    """SIGTERM this one process (by its pid) and collect its output."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    return await finish(proc, timeout)


def softphone_args(
    uri: str,
    *,
    play: Path | None = None,
    record: Path | None = None,
    dtmf: Sequence[str] = (),
    hangup_after: float | None = None,
    timeout: float | None = None,
    loop: bool = False,
    no_plc: bool = False,
    echo: str | None = None,
) -> list[str]:
    """``python -m bridge call URI ... --json`` (the real CLI); ``no_plc``: record late frames as the gaps they
    were (no packet loss concealment), for a test that measures what the caller got against the bridge's count."""
    args = [sys.executable, "-m", "bridge", "call", uri, "--json"]
    if no_plc:
        args.append("--no-plc")
    if play is not None:
        args += ["--play", str(play)]
    if loop:
        args.append("--loop")
    if record is not None:
        args += ["--record", str(record)]
    for d in dtmf:
        args += ["--dtmf", d]
    if hangup_after is not None:
        args += ["--hangup-after", str(hangup_after)]
    if timeout is not None:
        args += ["--timeout", str(timeout)]
    if echo is not None:
        args.append(f"--echo={echo}")  # "-14@120": the line returns what the caller hears (an = for the minus)
    return args


async def call(uri: str, *, timeout: float = 60.0, **kwargs: Any) -> Finished:  # noqa: ASYNC109
    return await run(*softphone_args(uri, **kwargs), timeout=timeout)


async def listener(port: int, record: Path, duration: float, calls: int = 1) -> asyncio.subprocess.Process:
    """``python -m bridge phone listen`` (the transfer target), ready when it answers OPTIONS."""
    proc = await start(
        sys.executable, "-m", "bridge", "phone", "listen", "--port", str(port), "--record", str(record),
        "--duration", str(duration), "--calls", str(calls), "--json",
    )  # fmt: skip
    await wait_sip_ready(port, proc=proc)
    return proc


def _options(port: int) -> bytes:
    tag, call_id, branch = secrets.token_hex(4), secrets.token_hex(8), "z9hG4bK" + secrets.token_hex(6)
    return (
        f"OPTIONS sip:probe@{LOCALHOST}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOCALHOST}:{{local}};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{LOCALHOST}>;tag={tag}\r\n"
        f"To: <sip:probe@{LOCALHOST}:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def sip_options_status(port: int, timeout: float = 0.3) -> int | None:
    """The status of one OPTIONS over UDP, or None if nothing answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCALHOST, 0))
        local = sock.getsockname()[1]
        sock.settimeout(timeout)
        sock.sendto(_options(port).replace(b"{local}", str(local).encode()), (LOCALHOST, port))
        try:
            while True:
                data, _ = sock.recvfrom(65535)
                if data.startswith(b"SIP/2.0 "):
                    status = int(data.split(b" ", 2)[1])
                    if status >= 200:
                        return status
        except (TimeoutError, ConnectionRefusedError, OSError):
            return None


async def wait_sip_ready(port: int, timeout: float = 15.0, proc: asyncio.subprocess.Process | None = None) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.returncode is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        if await asyncio.to_thread(sip_options_status, port) is not None:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"nothing answered SIP OPTIONS on port {port}")


# -- dialplans -------------------------------------------------------------------------------------------------


def write_dialplans(directory: Path, transfer_target: str | None = None) -> Path:
    """The test plans (see the module docstring) as YAML files in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    vad = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": SILENCE_MS}
    for number, (name, dialect, fmt) in PLANS.items():
        plan = {
            "name": name,
            "match": [number, "*"] if number == "3101" else [number],
            "dialect": dialect,
            "greeting": None,
            "answer_timeout_s": 3,
            "profile": {
                "instructions": f"Test plan {name}.",
                "voice": "alloy",
                "audio_format": fmt,
                "turn_detection": vad,
                "tools": ["end_call"],
            },
        }
        if dialect == "live":  # Live takes turns itself (no turn_detection) and greets through commentary
            profile = {k: v for k, v in plan["profile"].items() if k != "turn_detection"}  # type: ignore[attr-defined]
            plan |= {"greeting": "Greet the caller.", "profile": {**profile, "model": "gpt-live-1", "voice": "marin"}}
        (directory / f"{name}.yaml").write_text(json.dumps(plan))  # JSON is YAML
    if transfer_target is not None:
        plan = {
            "name": "ga-xfer",
            "match": [XFER_NUMBER],
            "dialect": "ga",
            "transfer_target": transfer_target,
            "profile": {
                "instructions": "Transfer to a human on request.",
                "audio_format": "pcm16",
                "turn_detection": vad,
                "tools": ["transfer_to_human", "end_call"],
            },
        }
        (directory / "ga-xfer.yaml").write_text(json.dumps(plan))
        live_profile = {k: v for k, v in plan["profile"].items() if k != "turn_detection"}  # type: ignore[attr-defined]
        live = {**plan, "name": "live-xfer", "match": [LIVE_XFER_NUMBER], "dialect": "live"}
        live["profile"] = {**live_profile, "model": "gpt-live-1"}
        (directory / "live-xfer.yaml").write_text(json.dumps(live))
    return directory


# -- the service at a network distance -----------------------------------------------------------------------


class DelayProxy:
    """A WebSocket relay in front of the emulator that delivers every server frame ``delay_s`` late (in order).

    The real service is tens of milliseconds away; in-process the emulator answers in microseconds, which hides
    races between server events that arrive back to back (``response.done``, then the ``response.created`` that
    a client command triggered). Client frames pass at once. Headers (credential, ``OpenAI-Beta``) and the
    query (``model``) are forwarded, so the emulator still picks the dialect from the handshake.
    """

    def __init__(self, target_base_url: str, delay_s: float) -> None:
        self.target = target_base_url.rstrip("/")
        self.delay_s = delay_s
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"ws://{LOCALHOST}:{self.port}/v1"

    async def __aenter__(self) -> DelayProxy:
        app = web.Application()
        app.router.add_get("/v1/realtime", self._relay)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOCALHOST, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        client = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
        await client.prepare(request)
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "openai-beta")}
        url = f"{self.target}/realtime?{request.query_string}"
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, str | None]] = asyncio.Queue()
        async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=headers, max_msg_size=0) as server:

            async def upstream() -> None:
                async for msg in client:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await server.send_str(msg.data)
                await server.close()

            async def downstream_in() -> None:
                async for msg in server:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        queue.put_nowait((loop.time() + self.delay_s, msg.data))
                queue.put_nowait((loop.time() + self.delay_s, None))

            async def downstream_out() -> None:
                while True:
                    due, text = await queue.get()
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    if text is None:
                        await client.close()
                        return
                    await client.send_str(text)

            tasks = [asyncio.create_task(f()) for f in (upstream, downstream_in, downstream_out)]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return client


# -- the stack -------------------------------------------------------------------------------------------------


@dataclass
class BridgeStack:
    """Emulator (in-process) + a pool of ``workers`` worker subprocesses, on a temporary directory."""

    tmp: Path
    transfer_target: str | None = None
    workers: int = 1
    emulator_settings: dict[str, Any] = field(default_factory=lambda: {"speed": 4.0})
    service_delay_s: float = 0.0  # > 0: the workers reach the emulator through a DelayProxy
    redis_url: str | None = None  # the workers' state store and rollout flags (None: none)
    extra_plans: list[dict[str, Any]] = field(default_factory=list)  # more dialplans, as the YAML files say them
    model_tls: bool = False  # the emulator behind TLS (wss://, as OpenAI is reached), its certificate trusted
    emulator: EmulatorServer | None = None
    pool: Pool | None = None
    proxy: DelayProxy | None = None

    @property
    def reports_path(self) -> Path:
        return self.tmp / "calls.jsonl"

    @property
    def dialplans(self) -> Path:
        return self.tmp / "dialplans"

    @property
    def emu(self) -> EmulatorServer:
        assert self.emulator is not None
        return self.emulator

    @property
    def sip_port(self) -> int:
        assert self.pool is not None
        return self.pool.slots[0].sip_port

    def uri(self, number: str) -> str:
        return f"sip:{number}@{LOCALHOST}:{self.sip_port}"

    async def __aenter__(self) -> BridgeStack:
        write_dialplans(self.dialplans, self.transfer_target)
        for plan in self.extra_plans:
            (self.dialplans / f"{plan['name']}.yaml").write_text(json.dumps(plan))  # JSON is YAML
        trust: dict[str, str] = {}
        tls = None
        if self.model_tls:
            cert, key = self_signed(self.tmp / "model-tls", LOCALHOST)
            tls, trust = server_tls(cert, key), {"SSL_CERT_FILE": str(cert)}
        self.emulator = EmulatorServer(LOCALHOST, 0, ping_interval_s=0, tls=tls, **self.emulator_settings)
        await self.emulator.start()
        realtime_url = self.emulator.base_url
        if self.service_delay_s > 0:
            self.proxy = await DelayProxy(realtime_url, self.service_delay_s).__aenter__()
            realtime_url = self.proxy.base_url
        settings = Settings(
            sip_port=free_port(),
            workers=self.workers,
            rtp_port=0,
            realtime_url=realtime_url,
            dialplans=self.dialplans,
            report_file=self.reports_path,
            redis_url=self.redis_url,
        )
        self.pool = Pool(settings, trust)
        await self.pool.start()
        try:
            await asyncio.wait_for(self.pool.wait_ready(), 30)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.pool is not None:
            await self.pool.stop()
        if self.proxy is not None:
            await self.proxy.__aexit__()
        if self.emulator is not None:
            await self.emulator.close()

    def reports(self) -> list[dict[str, Any]]:
        return read_reports(self.reports_path)

    async def report(self, call_id: str, within: float = 10.0) -> dict[str, Any]:
        return await wait_report(self.reports_path, call_id, within)


async def wait_report(path: Path, call_id: str, within: float = 10.0) -> dict[str, Any]:
    """The worker's JSON report of the call with this SIP Call-ID (its ``sip_call_id``; ``call_id`` is the bridge's
    own id), written when the call session ends."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for line in read_reports(path):
            if call_id in (line.get("sip_call_id"), line.get("call_id")):
                return line
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no worker report for call {call_id} after {within} s")


async def wait_reports(path: Path, count: int, within: float = 10.0) -> list[dict[str, Any]]:
    """At least ``count`` worker reports (each written when its call session ends)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = read_reports(path)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise TimeoutError(f"fewer than {count} worker reports after {within} s")


def one_session(emulator: EmulatorServer, before: int) -> SessionRecord:
    """The single emulator session opened since ``len(emulator.sessions) == before``."""
    new = emulator.sessions[before:]
    assert len(new) == 1, f"expected one Realtime session for the call, got {len(new)}"
    return new[0]


def timeline(report: dict[str, Any], kind: str) -> list[tuple[float, str]]:
    """(ms since the session started, summary) of the worker report's timeline entries of ``kind``."""
    return [(float(t), str(s)) for t, k, s in report["timeline"] if k == kind]


# -- audio -----------------------------------------------------------------------------------------------------


def tone(freq_hz: float, seconds: float, dbfs: float, rate: int = RATE) -> NDArray[np.float64]:
    """A sine whose RMS is ``dbfs``, with 5 ms raised-cosine ramps (no clicks that would look like speech)."""
    n = round(seconds * rate)
    x = 32768.0 * 10 ** (dbfs / 20) * math.sqrt(2) * np.sin(2 * np.pi * freq_hz * np.arange(n) / rate)
    ramp = min(n // 2, rate // 200)
    if ramp:
        w = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp))
        x[:ramp] *= w
        x[-ramp:] *= w[::-1]
    return x


def silence(seconds: float, rate: int = RATE) -> NDArray[np.float64]:
    return np.zeros(round(seconds * rate))


def speech(start_s: float = 0.0, seconds: float | None = None) -> NDArray[np.float64]:
    """A piece of the bundled caller recording (8 kHz)."""
    x = pcm(read_wav(ASSETS / "caller_hours.wav"))
    a = round(start_s * RATE)
    return x[a:] if seconds is None else x[a : a + round(seconds * RATE)]


def write_pcm_wav(path: Path, *parts: NDArray[np.float64]) -> NDArray[np.float64]:
    x = np.concatenate(parts) if parts else np.zeros(0)
    write_wav(path, np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes())
    return x


def pcm(data: bytes) -> NDArray[np.float64]:
    return np.frombuffer(data[: len(data) - len(data) % 2], dtype="<i2").astype(np.float64)


def read_pcm_wav(path: Path) -> tuple[NDArray[np.float64], int]:
    with wave.open(str(path), "rb") as w:
        return pcm(w.readframes(w.getnframes())), w.getframerate()


def dbfs(x: NDArray[np.float64]) -> float:
    rms = float(np.sqrt(np.mean(np.square(x)))) if len(x) else 0.0
    return 20 * math.log10(max(rms, 1e-9) / 32768.0)


def frame_dbfs(x: NDArray[np.float64], rate: int, frame_ms: float = 10.0) -> NDArray[np.float64]:
    n = int(rate * frame_ms / 1000)
    frames = x[: len(x) // n * n].reshape(-1, n)
    rms = np.sqrt(np.mean(np.square(frames), axis=1))
    return np.asarray(20 * np.log10(np.maximum(rms, 1e-9) / 32768.0), dtype=np.float64)


@dataclass(frozen=True)
class Region:
    start_s: float
    end_s: float

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s


def active_regions(
    x: NDArray[np.float64], rate: int, floor_dbfs: float = -45.0, bridge_gap_ms: float = 60.0, frame_ms: float = 5.0
) -> list[Region]:
    """Stretches whose ``frame_ms`` frames are above ``floor_dbfs``; gaps shorter than ``bridge_gap_ms`` are joined.

    Edges are refined to the sample: the first / last sample whose magnitude exceeds the floor's amplitude.
    """
    levels = frame_dbfs(x, rate, frame_ms)
    n = int(rate * frame_ms / 1000)
    on = levels > floor_dbfs
    regions: list[list[int]] = []
    for i, active in enumerate(on.tolist()):
        if not active:
            continue
        if regions and (i - regions[-1][1]) * frame_ms <= bridge_gap_ms:
            regions[-1][1] = i + 1
        else:
            regions.append([i, i + 1])
    thresh = 32768.0 * 10 ** (floor_dbfs / 20)
    out = []
    for a, b in regions:
        lo, hi = max(0, (a - 1) * n), min(len(x), (b + 1) * n)
        idx = np.nonzero(np.abs(x[lo:hi]) > thresh)[0]
        s, e = (lo + int(idx[0]), lo + int(idx[-1]) + 1) if len(idx) else (a * n, b * n)
        out.append(Region(s / rate, e / rate))
    return out


def segment(x: NDArray[np.float64], rate: int, start_s: float, end_s: float) -> NDArray[np.float64]:
    return x[max(0, round(start_s * rate)) : max(0, round(end_s * rate))]


def peak_hz(x: NDArray[np.float64], rate: int) -> float:
    found = peak_frequency(x, rate)
    assert found is not None, "no spectral peak (empty audio?)"
    return float(found)


def assert_tone(x: NDArray[np.float64], rate: int, hz: float) -> None:
    """The strongest component of ``x`` is ``hz``, within one FFT bin of the analysis or 2 Hz, whichever is wider.

    Over a few seconds a bin is a fraction of a hertz, and one frame the jitter buffer drops or conceals (a phase
    jump) moves the interpolated peak by about that much. 2 Hz is still 0.2 % of the tones used here: a wrong rate
    anywhere on the path (8/16/24/44.1/48 kHz) is off by percents, and the other tones in these tests by hundreds of Hz.
    """
    found = peak_hz(x, rate)
    tolerance = max(rate / len(x), 2.0)
    assert abs(found - hz) <= tolerance, f"peak at {found:.2f} Hz, expected {hz} Hz within {tolerance:.2f}"


def band_dbfs(x: NDArray[np.float64], rate: int, freq_hz: float, frame_ms: float = 10.0) -> NDArray[np.float64]:
    """Per-frame level of the ``freq_hz`` component (single-bin DFT over each frame, in dBFS RMS)."""
    n = int(rate * frame_ms / 1000)
    frames = x[: len(x) // n * n].reshape(-1, n)
    basis = np.exp(-2j * np.pi * freq_hz * np.arange(n) / rate)
    amp = 2 * np.abs(frames @ basis) / n  # sine amplitude
    return np.asarray(20 * np.log10(np.maximum(amp / math.sqrt(2), 1e-9) / 32768.0), dtype=np.float64)


def to_8k(x: NDArray[np.float64], rate: int) -> list[NDArray[np.float64]]:
    """The 8 kHz versions of band-limited audio: every phase of a decimation by ``rate / 8000``."""
    step = rate // RATE
    return [x[p::step] for p in range(step)]
