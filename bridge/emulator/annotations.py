"""Call-script annotations: what the caller "says" and what the agent answers, turn by turn.

A session holds a queue of turns; each committed caller turn consumes the next one. JSON forms accepted::

    [{"hears": "I want to talk to a person",
      "reply": {"text": "Connecting you.", "tone_hz": 500, "wav": "/path.wav", "duration_ms": 1500,
                "silence": false, "tool_call": {"name": "transfer_to_human", "arguments": {"reason": "asked"}},
                "after_tool": "I am putting you through now."}},
     {"greeting": {"text": "Welcome to ACME."}}]

or ``{"greeting": {...}, "turns": [...]}``. ``hears`` is the caller transcript (the input transcription and the
input for the reply rules); ``reply`` overrides the reply: text, voice and/or a forced tool call (a reply with
both text and a tool call speaks, then calls; ``after_tool`` is what it says once the tool's result is back, where
the result is read out otherwise). ``greeting`` answers a ``response.create`` that comes before any
caller turn. A turn's fields are all optional.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as the wire carries it


@dataclass(frozen=True)
class Reply:
    text: str | None = None
    tone_hz: float | None = None
    wav: str | None = None
    duration_ms: float | None = None
    silence: bool = False
    tool_call: ToolCall | None = None
    after_tool: str | None = None  # with tool_call: said once the tool's result is back (else it is read out)


@dataclass(frozen=True)
class Turn:
    hears: str | None = None
    reply: Reply | None = None


def parse_reply(obj: Any) -> Reply:
    if isinstance(obj, str):
        return Reply(text=obj)
    if not isinstance(obj, Mapping):
        raise ValueError(f"a reply must be an object or a string, not {type(obj).__name__}")
    unknown = set(obj) - {"text", "tone_hz", "wav", "duration_ms", "silence", "tool_call", "after_tool"}
    if unknown:
        raise ValueError(f"unknown reply field(s): {sorted(unknown)}")
    tool = obj.get("tool_call")
    call = None
    if tool is not None:
        if not isinstance(tool, Mapping) or not isinstance(tool.get("name"), str):
            raise ValueError("tool_call needs a name")
        args = tool.get("arguments", {})
        call = ToolCall(name=tool["name"], arguments=args if isinstance(args, str) else json.dumps(args))
    return Reply(
        text=None if obj.get("text") is None else str(obj["text"]),
        tone_hz=None if obj.get("tone_hz") is None else float(obj["tone_hz"]),
        wav=None if obj.get("wav") is None else str(obj["wav"]),
        duration_ms=None if obj.get("duration_ms") is None else float(obj["duration_ms"]),
        silence=bool(obj.get("silence", False)),
        tool_call=call,
        after_tool=None if obj.get("after_tool") is None else str(obj["after_tool"]),
    )


def parse_turn(obj: Any) -> Turn:
    if not isinstance(obj, Mapping):
        raise ValueError("a turn must be an object")
    unknown = set(obj) - {"hears", "reply"}
    if unknown:
        raise ValueError(f"unknown turn field(s): {sorted(unknown)}")
    reply = obj.get("reply")
    return Turn(
        hears=None if obj.get("hears") is None else str(obj["hears"]),
        reply=None if reply is None else parse_reply(reply),
    )


class Annotations:
    """The queue a session consumes."""

    def __init__(self, turns: list[Turn] | None = None, greeting: Reply | None = None) -> None:
        self.turns: deque[Turn] = deque(turns or ())
        self.greeting = greeting

    @classmethod
    def parse(cls, obj: Any) -> Annotations:
        out = cls()
        out.extend(obj)
        return out

    def extend(self, obj: Any) -> None:
        """Add turns (and maybe a greeting) from any accepted JSON form."""
        if obj is None:
            return
        if isinstance(obj, Mapping):
            unknown = set(obj) - {"greeting", "turns"}
            if unknown:
                raise ValueError(f"unknown annotation field(s): {sorted(unknown)}")
            if obj.get("greeting") is not None:
                self.greeting = parse_reply(obj["greeting"])
            self.extend(obj.get("turns"))
            return
        if not isinstance(obj, list):
            raise ValueError("annotations must be a list of turns or an object")
        for entry in obj:
            if isinstance(entry, Mapping) and "greeting" in entry:
                self.extend(entry)
            else:
                self.turns.append(parse_turn(entry))

    def next_turn(self) -> Turn | None:
        return self.turns.popleft() if self.turns else None

    def take_greeting(self) -> Reply | None:
        greeting, self.greeting = self.greeting, None
        return greeting

    def copy(self) -> Annotations:
        return Annotations(list(self.turns), self.greeting)
