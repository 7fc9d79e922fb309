"""What happened on one call (:class:`CallReport`): the demo prints it, replays compare it, Redis keeps a summary
of it. ``bridge.call.session`` fills it in as the call goes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CallReport:
    """What happened on one call: the demo prints it, replays compare it, Redis keeps a summary of it."""

    call_id: str
    dialect: str
    dialplan: str
    answered: bool = False
    phases: list[str] = field(default_factory=list)
    caller_transcript: list[str] = field(default_factory=list)
    agent_transcript: list[str] = field(default_factory=list)
    agent_audio_ms: int = 0
    first_audio_ms: float | None = None
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    barge_ins: int = 0
    truncates: list[dict[str, Any]] = field(default_factory=list)
    talk_over_ms: list[float] = field(default_factory=list)  # per barge-in on a model that stops itself
    usage: dict[str, float | int] = field(default_factory=dict)  # audio seconds and tokens, all sessions (cost)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)  # an orchestrated call: each decision, in order
    dtmf: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    reconnects: int = 0
    rollovers: int = 0
    media: dict[str, Any] = field(default_factory=dict)  # SIP calls: the media port's kind and counters
    timeline: list[tuple[float, str, str]] = field(default_factory=list)
    end_reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}
