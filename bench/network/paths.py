"""One call of each path through the impairment relay, and what both ends of it recorded.

- ``anchor``: pjsua2 to pjsua2. The softphone calls a listening softphone (``callbridge phone listen``) that plays
  the agent's speech and records what it hears: pjsua2's own jitter buffer and PLC at both ends, nothing else.
- ``g711``: a bridge worker whose plan passes G.711 through (``audio_format: g711_ulaw``), to the emulator.
- ``resampled``: the same with PCM16 at 24 kHz (``audio_format: pcm16``): the bridge resamples both ways.

The caller is the same softphone on every path (``callbridge call``, its PLC on, as a phone's is), placed through
an :class:`~bridge.devkit.rtprelay.RtpRelay` whose uplink and downlink carry the same impairment, each with its own
seed. The emulator speaks the agent's speech as its greeting (``wav_path``) and detects the caller's turns with
server VAD; the caller records what it hears, the emulator what the model received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.calls.machine import ROOT, child_env, stderr_to, stop
from bench.network.signals import Signals
from bridge.audio.wav import read_wav
from bridge.devkit.netem import Impairment
from bridge.devkit.ports import free_port, free_port_block, listen_port, pool_rtp, rtp_block, softphone_port_args
from bridge.devkit.rtprelay import RtpRelay

PATHS = ("anchor", "g711", "resampled")
FORMATS = {"g711": "g711_ulaw", "resampled": "pcm16"}
NUMBER = "4000"
VAD: dict[str, Any] = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 600}
CALL_SLACK_S = 30.0  # a call's process gets this long beyond the call itself
POOL_READY_S = 60.0
Lines = tuple[Impairment, Impairment]  # uplink, downlink


@dataclass
class Heard:
    """One call's recordings: what the caller heard (8 kHz) and what the model (or the callee) received."""

    caller: np.ndarray
    model: np.ndarray
    model_rate: int
    turns: int | None  # speech_started events the emulator sent (the bridge paths)
    line: dict[str, Any] = field(default_factory=dict)  # the relay's counters, both directions
    errors: list[str] = field(default_factory=list)


def plan(directory: Path, path: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    doc = {
        "name": "network",
        "match": [NUMBER, "*"],
        "dialect": "ga",
        "greeting": "Greet the caller.",
        "answer_timeout_s": 5,
        "profile": {
            "instructions": "Network benchmark.",
            "audio_format": FORMATS[path],
            "turn_detection": VAD,
            "input_transcription": None,
        },
    }
    (directory / "network.yaml").write_text(json.dumps(doc))
    return directory


@dataclass(frozen=True, slots=True)
class Floors:
    """The jitter buffers' floors in ms (``SipConfig.jitter_buffer_ms``): every softphone's (the caller, the anchor's
    callee; 0: pjmedia's defaults, as a phone keeps them) and the bridge's (None: ``serve``'s default)."""

    phone_ms: int = 0
    bridge_ms: int | None = None


async def place(uri: str, signals: Signals, record: Path, log: Path, floors: Floors) -> dict[str, Any]:
    """The caller: plays its WAV, records what it hears, hangs up after the call's length."""
    args = ["call", uri, "--play", str(signals.caller_play), "--record", str(record), "--json"]
    args += softphone_port_args()  # its SIP and RTP ports in CALLBRIDGE_PORT_RANGE when that is set
    args += ["--jitter-buffer-ms", str(floors.phone_ms)]
    args += ["--hangup-after", f"{signals.call_s:.2f}"]
    proc = await _softphone(args, log)
    out, _ = await asyncio.wait_for(proc.communicate(), signals.call_s + CALL_SLACK_S)
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {"answered": False, "reason": f"exit {proc.returncode}"}


async def _softphone(args: list[str], log: Path) -> asyncio.subprocess.Process:
    with stderr_to(log):
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge.devkit.softphone",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            env=child_env(),
            cwd=str(ROOT),
        )


def _line(relay: RtpRelay) -> dict[str, Any]:
    return {"up": relay.uplink.stats.as_dict(), "down": relay.downlink.stats.as_dict()}


def impairments(loss_pct: float, jitter_ms: float, delay_ms: float, burst_share: float, seed: int) -> Lines:
    """Uplink and downlink at ``loss_pct`` % loss (``burst_share`` of it in Gilbert-Elliott bursts, the rest at
    random) and ``delay_ms`` plus 0..``jitter_ms`` of delay; their seeds differ."""
    loss = loss_pct / 100.0
    burst = loss * burst_share
    random_loss = 1.0 - (1.0 - loss) / (1.0 - burst)  # together: ``loss``
    up, down = (
        Impairment(loss=random_loss, burst_loss=burst, delay_ms=delay_ms, jitter_ms=jitter_ms, seed=seed + way)
        for way in (0, 1)
    )
    return up, down


async def _bound(port: int, within: float) -> bool:
    """Has a process bound UDP ``port`` on loopback (a listening softphone that is up)?"""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return True
        await asyncio.sleep(0.1)
    return False


async def anchor_call(signals: Signals, lines: Lines, work: Path, log: Path, floors: Floors) -> Heard:
    port = free_port()
    callee_wav, caller_wav = work / "anchor-callee.wav", work / "anchor-caller.wav"
    args = ["listen", "--port", str(port), "--play", str(signals.agent_8k), "--record", str(callee_wav)]
    rtp = rtp_block(2)  # 0 without CALLBRIDGE_PORT_RANGE: any
    args += ["--rtp-port", str(rtp)] if rtp else []
    args += ["--jitter-buffer-ms", str(floors.phone_ms)]
    listener = await _softphone([*args, "--calls", "1", "--duration", str(signals.call_s + CALL_SLACK_S)], log)
    errors: list[str] = []
    try:
        if not await _bound(port, 30.0):
            raise RuntimeError(f"the anchor's listening softphone did not bind port {port}")
        async with RtpRelay(("127.0.0.1", port), lines[0], lines[1]) as relay:
            summary = await place(f"sip:{NUMBER}@127.0.0.1:{relay.sip_port}", signals, caller_wav, log, floors)
            line = _line(relay)
        await asyncio.wait_for(listener.communicate(), CALL_SLACK_S)
    finally:
        await stop(listener)
    if not summary.get("answered"):
        errors.append(f"anchor call not answered: {summary.get('reason')}")
    return Heard(_pcm(caller_wav), _pcm(callee_wav), 8000, None, line, errors)


def _pcm(path: Path) -> np.ndarray:
    return np.frombuffer(read_wav(path), "<i2") if path.exists() else np.zeros(0, np.int16)


class BridgePath:
    """A bridge worker and the emulator behind it, for every call of one path (``g711`` or ``resampled``)."""

    def __init__(self, path: str, signals: Signals, work: Path, log: Path, floors: Floors) -> None:
        self.path, self.signals, self.work, self.log, self.floors = path, signals, work, log, floors
        self.emulator: Any = None
        self.pool: Any = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[BridgePath]:
        from bridge.config import Settings
        from bridge.emulator import EmulatorServer
        from bridge.serve.pool import Pool

        voice = self.signals.agent_24k if self.path == "resampled" else self.signals.agent_8k
        floor = self.floors.bridge_ms
        if floor is None:
            floor = Settings.model_fields["sip_jitter_buffer_ms"].default
        async with EmulatorServer("127.0.0.1", listen_port(), wav_path=str(voice)) as emulator:
            settings = Settings(
                sip_jitter_buffer_ms=floor,
                sip_port=free_port_block(1),
                workers=1,
                **pool_rtp(1),
                realtime_url=emulator.base_url,
                dialplans=plan(self.work / f"plans-{self.path}", self.path),
                report_file=self.work / f"reports-{self.path}.jsonl",
            )
            self.emulator, self.pool = emulator, Pool(settings)
            try:
                with stderr_to(self.log):
                    await self.pool.start()
                    await asyncio.wait_for(self.pool.wait_ready(), POOL_READY_S)
                yield self
            finally:
                with stderr_to(self.log):
                    await self.pool.stop()

    async def call(self, lines: Lines, tag: str) -> Heard:
        first = len(self.emulator.sessions)
        port = self.pool.slots[0].sip_port
        record = self.work / f"{self.path}-{tag}-caller.wav"
        async with RtpRelay(("127.0.0.1", port), lines[0], lines[1]) as relay:
            uri = f"sip:{NUMBER}@127.0.0.1:{relay.sip_port}"
            summary = await place(uri, self.signals, record, self.log, self.floors)
            line = _line(relay)
        errors = [] if summary.get("answered") else [f"{self.path} call not answered: {summary.get('reason')}"]
        sessions = self.emulator.sessions[first:]
        if not sessions:
            return Heard(_pcm(record), np.zeros(0, np.int16), 8000, None, line, [*errors, "no model session"])
        session = sessions[-1]
        await _closed(session)
        model = np.frombuffer(session.input_audio, "<i2")
        turns = sum(1 for event in session.sent if event.get("type") == "input_audio_buffer.speech_started")
        return Heard(_pcm(record), model, session.input_rate or 8000, turns, line, errors)


async def _closed(session: Any, within: float = 10.0) -> None:
    """Wait for the bridge to close the model session (its last appends are in then)."""
    deadline = time.monotonic() + within
    while not session.closed and time.monotonic() < deadline:  # noqa: ASYNC110 (a record's flag, no event)
        await asyncio.sleep(0.05)
