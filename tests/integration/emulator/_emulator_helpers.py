"""Helpers for the emulator's integration tests: test signals, an FFT, and a raw ``websockets`` client."""

from __future__ import annotations

import asyncio
import base64
import json
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

PCM_RATE = 24000
BETA_HEADERS = {"OpenAI-Beta": "realtime=v1"}


def speech(seconds: float, rate: int = PCM_RATE, dbfs: float = -20.0) -> bytes:
    """Speech-like PCM16: 300 Hz plus two harmonics, RMS at ``dbfs``."""
    t = np.arange(int(rate * seconds)) / rate
    x = np.sin(2 * np.pi * 300 * t) + 0.5 * np.sin(2 * np.pi * 600 * t) + 0.25 * np.sin(2 * np.pi * 900 * t)
    x *= 10 ** (dbfs / 20) * 32768 / np.sqrt(np.mean(x**2))
    return np.round(x).astype("<i2").tobytes()


def silence(seconds: float, rate: int = PCM_RATE) -> bytes:
    return b"\x00\x00" * int(rate * seconds)


def peak_hz(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def ulaw_encode(pcm: bytes) -> bytes:
    with warnings.catch_warnings():  # the stdlib reference codec (3.11), independent of the emulator's
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    return audioop.lin2ulaw(pcm, 2)


def ulaw_decode(data: bytes) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    return audioop.ulaw2lin(data, 2)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class RawClient:
    """A bare ``websockets`` client that keeps every frame it received (parsed), in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[str] = []
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def open(
        cls, url: str, *, beta: bool = False, key: str | None = "sk-test-key", headers: Mapping[str, str] | None = None
    ) -> RawClient:
        """``headers``: a dialect's extra headers (``Dialect.extra_headers``); ``beta`` adds beta's by hand."""
        sent = {**(BETA_HEADERS if beta else {}), **(headers or {})}
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        ws = await connect(url, additional_headers=sent, max_size=None)
        return cls(ws)

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def append(self, pcm: bytes, chunk_ms: int = 20, rate: int = PCM_RATE, width: int = 2) -> None:
        step = rate * chunk_ms // 1000 * width
        for i in range(0, len(pcm), step):
            await self.send({"type": "input_audio_buffer.append", "audio": b64(pcm[i : i + step])})

    async def recv(self, wait_s: float = 5.0) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.ws.recv(), wait_s)
        text = frame if isinstance(frame, str) else frame.decode()
        self.frames.append(text)
        try:
            event: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError:  # the malformed_json fault
            event = {"type": "<malformed>", "raw": text}
        self.events.append(event)
        return event

    async def until(self, pred: Callable[[dict[str, Any]], bool], wait_s: float = 5.0) -> dict[str, Any]:
        """Receive until an event matches ``pred``; returns it (everything is kept in ``events``)."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"no matching event; last: {[e.get('type') for e in self.events[-5:]]}")
            event = await self.recv(left)
            if pred(event):
                return event

    async def until_type(self, kind: str, wait_s: float = 5.0) -> dict[str, Any]:
        return await self.until(lambda e: e.get("type") == kind, wait_s)

    async def close(self) -> None:
        await self.ws.close()


def of_type(events: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("type") in kinds]


def audio_of(events: list[dict[str, Any]], delta_type: str) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events if e.get("type") == delta_type)


def compress(types: list[str], deltas: set[str]) -> list[str]:
    """Consecutive delta events collapse to one ``"<deltas>"`` marker."""
    out: list[str] = []
    for t in types:
        if t in deltas:
            if not out or out[-1] != "<deltas>":
                out.append("<deltas>")
        else:
            out.append(t)
    return out
