"""Regressions for decoder gaps found by replaying emulator sessions through the bridge's protocol core."""

from __future__ import annotations

import json

from test_emulator_session import TOOLS, Driver, speech, zeros

from bridge import events as bev
from bridge.realtime.dialects import BETA, GA, Dialect
from bridge.realtime.protocol import RealtimeProtocol


def function_calls(dialect: Dialect) -> list[bev.FunctionCall]:
    d = Driver(dialect, annotations=[{"hears": "Put me through to an agent."}])
    d.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "tools": TOOLS} if dialect is GA else {"tools": TOOLS},
        }
    )
    d.append(speech(1.0) + zeros(0.7))
    d.settle()
    proto = RealtimeProtocol(dialect)
    decoded = [x for e in d.events for x in proto.decode(json.dumps(e))]
    return [e for e in decoded if isinstance(e, bev.FunctionCall)]


def test_ga_function_call_is_named() -> None:
    assert [c.name for c in function_calls(GA)] == ["transfer_to_human"]


def test_beta_function_call_is_named() -> None:
    calls = function_calls(BETA)
    assert calls and all(c.name == "transfer_to_human" for c in calls)


def test_ga_custom_voice_object_decodes() -> None:
    d = Driver(GA)
    d.send(
        {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"voice": {"id": "voice_1"}}}}}
    )
    updated = d.events[-1]
    assert updated["type"] == "session.updated"
    (configured,) = RealtimeProtocol(GA).decode(json.dumps(updated))
    assert isinstance(configured, bev.SessionConfigured) and configured.voice == "voice_1"
