"""What a session records (tests, QA, recording to disk): every event both ways, the caller's audio, turns,
responses, cancels and errors; :class:`Recorder` writes it to disk as it happens."""

from __future__ import annotations

import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import orjson

ELIDED = "<elided>"  # recorded input_audio_buffer.append events keep their size, not their audio


@dataclass
class AudioSegment:
    """Input audio in one format: ``pcm`` is PCM16 at ``rate``; ``raw`` the G.711 bytes as received, if G.711."""

    format: str
    rate: int
    pcm: bytearray = field(default_factory=bytearray)
    raw: bytearray = field(default_factory=bytearray)


SUMMARY_FIELDS: Final = ("id", "dialect", "model", "closed", "close_code", "close_reason")  # summary() copies these
Listener = Callable[[str, float, Any], None]  # (direction "in" | "out" | "raw", time, event or text)


@dataclass
class SessionRecord:
    id: str
    dialect: str
    model: str
    settings: dict[str, Any] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)  # client events, parsed (append audio elided)
    sent: list[dict[str, Any]] = field(default_factory=list)  # server events
    raw_sent: list[str] = field(default_factory=list)  # frames that are not events (faults)
    timeline: list[tuple[float, str, str]] = field(default_factory=list)  # (time, "in"/"out", type)
    audio: list[AudioSegment] = field(default_factory=list)
    transcripts: list[dict[str, Any]] = field(default_factory=list)  # caller turns: item_id, text, audio_ms
    responses: list[dict[str, Any]] = field(default_factory=list)
    truncates: list[dict[str, Any]] = field(default_factory=list)
    cancels: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # error events sent
    closed: bool = False
    close_code: int | None = None
    close_reason: str = ""
    listener: Listener | None = None

    @property
    def input_rate(self) -> int:
        return self.audio[0].rate if self.audio else 0

    @property
    def input_audio(self) -> bytes:
        """All input audio at the first segment's rate, as PCM16 (24 kHz for pcm16, 8 kHz decoded for G.711)."""
        return b"".join(bytes(s.pcm) for s in self.audio if s.rate == self.input_rate)

    @property
    def input_g711(self) -> bytes:
        return b"".join(bytes(s.raw) for s in self.audio)

    def types_sent(self) -> list[str]:
        return [str(e.get("type")) for e in self.sent]

    def types_received(self) -> list[str]:
        return [str(e.get("type")) for e in self.received]

    def log(self, direction: str, t: float, obj: Any) -> None:
        if direction == "in":
            self.received.append(obj)
        elif direction == "out":
            self.sent.append(obj)
            if obj.get("type") == "error":
                self.errors.append(obj)
        else:
            self.raw_sent.append(obj)
        kind = obj.get("type", "?") if isinstance(obj, dict) else "<raw>"
        self.timeline.append((t, direction, str(kind)))
        if self.listener is not None:
            self.listener(direction, t, obj)

    def summary(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name) for name in SUMMARY_FIELDS},
            "received": len(self.received),
            "sent": len(self.sent),
            "input_audio_ms": round(sum(len(s.pcm) / 2 / s.rate * 1000 for s in self.audio)),
            "transcripts": [t["text"] for t in self.transcripts],
            "responses": [{k: r[k] for k in ("id", "status", "reason")} for r in self.responses],
            "truncates": self.truncates,
            "cancels": self.cancels,
            "errors": [e["error"].get("code") for e in self.errors],
        }


class Recorder:
    """``<id>.events.jsonl`` as events happen, ``<id>.in.wav`` (and raw G.711) when the session ends."""

    def __init__(self, directory: Path, record: SessionRecord) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.record = record
        self._events: IO[bytes] = open(directory / f"{record.id}.events.jsonl", "ab")  # noqa: SIM115 - closed in close()

    def __call__(self, direction: str, t: float, obj: Any) -> None:
        line = {"t": round(time.time(), 6), "mono": round(t, 6), "dir": direction, "event": obj}
        self._events.write(orjson.dumps(line) + b"\n")

    def close(self) -> None:
        self._events.close()
        for i, seg in enumerate(self.record.audio):
            suffix = "" if i == 0 else f".{i}"
            with wave.open(str(self.directory / f"{self.record.id}.in{suffix}.wav"), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(seg.rate)
                w.writeframes(bytes(seg.pcm))
            if seg.raw:
                (self.directory / f"{self.record.id}.in{suffix}.{seg.format}").write_bytes(bytes(seg.raw))
