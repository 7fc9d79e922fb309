"""Helpers for the store tests: a phone leg without SIP that drives a real CallSession against the emulator."""

from __future__ import annotations

from fakes.leg import FakeLeg, speech_8k, wait_until  # noqa: F401 (re-exported for the store tests)

from bridge.call.session import CallSession
from bridge.dialplan import Dialplan
from bridge.emulator import EmulatorServer
from bridge.realtime.client import RealtimeClient
from bridge.realtime.dialects import Dialect

GREETING = "Welcome to ACME."
ANSWER = "We open at nine."
QUESTION = "what time do you open"


def annotations() -> list[dict[str, object]]:
    return [{"greeting": {"text": GREETING}}, {"hears": QUESTION, "reply": {"text": ANSWER}}]


def plan() -> Dialplan:
    return Dialplan(name="support", match=("100",), dialect="rollout", greeting="Greet the caller.")


def session_for(emulator: EmulatorServer, leg: FakeLeg, dialect: Dialect) -> CallSession:
    emulator.queue_next(settings={"speed": 0}, annotations=annotations())

    async def connect() -> RealtimeClient:
        client = RealtimeClient(dialect, emulator.base_url, "sk-test-store")
        await client.connect()
        return client

    return CallSession(leg, plan(), dialect, connect)
