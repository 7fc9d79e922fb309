"""One conversation replayed in both dialects yields the same bridge events.

The bridge's commands go through each dialect's encoders to the sans-I/O emulator speaking that dialect (in virtual
time), and every server frame comes back through the dialect's decoders. Ids are random per dialect, so they are
compared by order of first appearance; the two differences the dialects document are set aside: GA acknowledges
every item twice (``conversation.item.done``: ``ItemDone``) and sends ``rate_limits.updated`` at another point.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import orjson

from bridge import events as ev
from bridge.emulator.annotations import Annotations
from bridge.emulator.faults import Settings
from bridge.emulator.session import EmulatorSession, Send
from bridge.realtime.dialects import BETA, GA, Dialect
from bridge.realtime.profile import AgentProfile, ServerVad, Tool
from bridge.realtime.protocol import RealtimeProtocol

RATE = 24000
FRAME = RATE * 20 // 1000 * 2  # bytes of one 20 ms append
PROFILE = AgentProfile(
    model="gpt-realtime",
    voice="alloy",
    turn_detection=ServerVad(silence_duration_ms=500),
    tools=(Tool(name="transfer_to_human", description="Hand over to a person."),),
)
TURNS = [{"hears": "What are your hours?"}, {"hears": "Put me through to an agent."}]


def speech(seconds: float) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    x = np.sin(2 * np.pi * 300 * t) + 0.5 * np.sin(2 * np.pi * 600 * t)
    return np.round(0.1 * 32768 * x / np.sqrt(np.mean(x**2))).astype("<i2").tobytes()


class Conversation:
    """The bridge's side of one call, in one dialect: commands out, decoded events in."""

    def __init__(self, dialect: Dialect) -> None:
        self.proto = RealtimeProtocol(dialect)
        self.server = EmulatorSession(
            dialect,
            Settings(seed=3).with_values({"speed": 0}),
            model="gpt-realtime",
            annotations=Annotations.parse(TURNS),
            now=0.0,
            wall=1_700_000_000.0,
        )
        self.t = 0.0
        self.events: list[ev.Event] = []
        self._take(self.server.open())

    def _take(self, actions: list[object]) -> None:
        for action in actions:
            assert isinstance(action, Send), action
            self.events.extend(self.proto.decode(orjson.dumps(action.event)))

    def send(self, command: ev.Command) -> None:
        for frame in self.proto.encode(command):
            self._take(self.server.receive(frame, self.t))

    def speak(self, pcm: bytes) -> None:
        for i in range(0, len(pcm), FRAME):
            self.send(ev.AppendAudio(pcm[i : i + FRAME]))
            self.t += 0.02
            self._take(self.server.advance(self.t))

    def settle(self) -> None:
        while (deadline := self.server.next_deadline()) is not None and deadline <= self.t + 60:
            self.t = max(self.t, deadline)
            self._take(self.server.advance(self.t))

    def last(self, kind: type[ev.Event]) -> ev.Event:
        return next(e for e in reversed(self.events) if isinstance(e, kind))


def converse(dialect: Dialect) -> list[ev.Event]:
    """Configure, a voice turn and its reply, a truncate, a text item and an out-of-band reply, a cancel too late,
    a turn that calls a tool, and the tool's answer."""
    c = Conversation(dialect)
    c.send(ev.UpdateSession(PROFILE))
    c.speak(speech(1.0) + bytes(FRAME * 40))
    c.settle()
    spoken = c.last(ev.AudioDone)
    assert isinstance(spoken, ev.AudioDone)
    c.send(ev.Truncate(item_id=spoken.item_id, audio_end_ms=300))
    c.send(ev.AddText("The caller pressed 1."))
    c.send(ev.CreateResponse(instructions='Say "One moment please."', out_of_band=True))
    c.settle()
    c.send(ev.CancelResponse())  # nothing is active any more: response_cancel_not_active
    c.speak(speech(1.0) + bytes(FRAME * 40))
    c.settle()
    call = c.last(ev.FunctionCall)
    assert isinstance(call, ev.FunctionCall)
    c.send(ev.FunctionOutput(call_id=call.call_id, output=json.dumps({"queue": "billing"})))
    c.settle()
    return c.events


def comparable(events: list[ev.Event]) -> list[ev.Event]:
    """Ids by order of first appearance; the dialects' documented extras set aside."""
    ids: dict[str, str] = {}
    out = []
    for event in events:
        if isinstance(event, ev.ItemDone | ev.RateLimits):
            continue
        renamed = {
            f.name: ids.setdefault(value, f"id{len(ids)}")
            for f in dataclasses.fields(event)
            if f.name.endswith("_id") and isinstance(value := getattr(event, f.name), str) and value
        }
        out.append(dataclasses.replace(event, **renamed))
    return out


def test_one_conversation_gives_the_same_bridge_events_in_both_dialects() -> None:
    beta, ga = comparable(converse(BETA)), comparable(converse(GA))
    assert [e.kind for e in beta] == [e.kind for e in ga]
    assert beta == ga  # field by field: audio bytes, transcripts, truncation, the tool call and its name
    kinds = [e.kind for e in beta]
    assert "UnknownEvent" not in kinds
    (error,) = [e for e in beta if isinstance(e, ev.ErrorEvent)]
    assert error.code == "response_cancel_not_active"
    (truncated,) = [e for e in beta if isinstance(e, ev.ItemTruncated)]
    assert truncated.audio_end_ms == 300
    (call,) = [e for e in beta if isinstance(e, ev.FunctionCall)]
    assert call.name == "transfer_to_human"  # beta's arguments.done has no name: the decoder's table supplies it
    said = [e.text for e in beta if isinstance(e, ev.CallerTranscript) and e.final]
    assert said == ["What are your hours?", "Put me through to an agent."]
    assert [e.status for e in beta if isinstance(e, ev.ResponseDone)] == ["completed"] * 4
    assert sum(len(e.audio) for e in beta if isinstance(e, ev.AudioChunk)) > RATE * 2  # real audio, 24 kHz PCM16
