"""When what the model says goes out, for both sessions: the Realtime session's responses
(:mod:`~bridge.emulator.responses`) and the Live session's speech (:mod:`~bridge.emulator.live_speech`) are both
laid out and paced here.

A response is numbered when it is created (the faults' "Nth response"), answered after the response latency
(scaled by ``speed``; the ``delay_first_delta_ms`` fault adds its own wait, unscaled), spoken as an
:class:`Utterance` (the reply's audio cut into the wire's deltas, its words spread over them), and speaks while it
is the active one; later ones wait their turn. After the ``fault_after_deltas``-th delta of the Nth response, the
faults set for it fire (:meth:`ResponseScheduler.fire_faults`). It ends completed, or cut short (cancelled,
interrupted, failed), and goes into the session's record either way.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from bridge.emulator import voice
from bridge.emulator.core import SessionCore
from bridge.emulator.formats import WireFormat
from bridge.emulator.record import SessionRecord


class Status(enum.StrEnum):
    """A response's or an output item's ``status`` on the wire (and in the record); Live's speech is
    ``interrupted`` when the caller speaks over it."""

    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    INCOMPLETE = "incomplete"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class CancelledBy(enum.StrEnum):
    """Who cut a response short (the record's ``by``; ``turn_detected`` is also the wire's reason)."""

    CLIENT = "client"
    TURN_DETECTED = "turn_detected"


@dataclass(frozen=True)
class Utterance:
    """Reply audio as the wire's deltas (encoded), with how long each lasts and the words said over each."""

    chunks: tuple[bytes, ...]
    chunk_ms: tuple[float, ...]
    words: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, pcm: bytes, fmt: WireFormat, delta_ms: float, words: Sequence[str]) -> Utterance:
        chunks, chunk_ms = voice.wire_chunks(pcm, fmt.rate, delta_ms, fmt.from_pcm16)
        return cls(tuple(chunks), tuple(chunk_ms), spread(words, len(chunks)))


def spread(words: Sequence[str], n: int) -> tuple[tuple[str, ...], ...]:
    """``words`` over ``n`` deltas, in order and as evenly as they go (the transcript keeps pace with the audio)."""
    slots: list[list[str]] = [[] for _ in range(n)]
    if n:
        for j, word in enumerate(words):
            slots[min(n - 1, j * n // len(words))].append(word)
    return tuple(tuple(s) for s in slots)


class FaultTarget(Protocol):
    """How a dialect's output shows the per-delta faults that differ between the dialects."""

    def unknown_event(self, t: float) -> None: ...

    def invalid_base64_delta(self, t: float) -> None: ...

    def oversized_delta(self, t: float) -> None: ...

    def fail(self, t: float) -> None: ...


R = TypeVar("R")


class ResponseScheduler(Generic[R]):
    """Responses in order and on time, for either dialect's session."""

    def __init__(self, core: SessionCore) -> None:
        self.core = core  # the session's plumbing: events out, its record
        self.settings = core.settings
        self.count = 0  # responses created so far: the faults' "Nth response"
        self.active: R | None = None  # the response speaking now
        self.waiting: deque[R] = deque()  # the ones after it

    def number(self) -> int:
        """The next response's number."""
        self.count += 1
        return self.count

    def latency(self, t: float) -> float:
        """When a response created at ``t`` starts answering."""
        return t + self.settings.scaled(self.settings.response_latency_ms)

    def first_delta_delay(self) -> float:
        """The ``delay_first_delta_ms`` fault's extra wait before a response's first audio (seconds)."""
        return self.settings.faults.delay_first_delta_ms / 1000.0

    def fault_due(self, deltas: int) -> bool:
        return deltas == self.settings.faults.fault_after_deltas

    def fire_faults(self, number: int, target: FaultTarget, t: float) -> None:
        """The faults set for the ``number``-th response, once its ``fault_after_deltas``-th delta is out."""
        f = self.settings.faults
        if f.unknown_event == number:
            target.unknown_event(t)
        if f.malformed_json == number:
            self.core.malformed_json(t)
        if f.invalid_base64_delta == number:
            target.invalid_base64_delta(t)
        if f.oversized_delta == number:
            target.oversized_delta(t)
        if f.error_mid_response == number:
            target.fail(t)
        if f.drop_mid_response == number:
            self.core.abort(f"drop_mid_response={number}", t)

    def oversized_audio(self, fmt: WireFormat) -> bytes:
        """The ``oversized_delta`` fault's audio, encoded: ``oversized_delta_ms`` of the reply tone in one delta."""
        s = self.settings
        return fmt.from_pcm16(voice.tone(s.tone_hz, s.faults.oversized_delta_ms, fmt.rate, dbfs=s.tone_dbfs))

    def cancelled(self, response_id: str | None, by: CancelledBy, t: float, *, ok: bool = True) -> None:
        """A cancel (the client's, or the caller's speech), in the session's record."""
        self.core.record.cancels.append({"t": t, "response_id": response_id, "by": by, "ok": ok})


def record_response(
    record: SessionRecord,
    response_id: str,
    number: int,
    status: Status,
    reason: str | None,
    outputs: list[dict[str, Any]],
    *,
    out_of_band: bool = False,
) -> None:
    """A response that ended, in ``record`` (either dialect's, and a Live backend's)."""
    record.responses.append(
        {
            "id": response_id,
            "number": number,
            "status": status,
            "reason": reason,
            "out_of_band": out_of_band,
            "outputs": outputs,
        }
    )
