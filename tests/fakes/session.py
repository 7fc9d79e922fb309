"""A model session with no socket: what it was sent and opened with, and a way to make it speak."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bridge import events as ev


class FakeSession:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[ev.Command] = []
        self.history: tuple[ev.AddText, ...] = ()  # what it was opened with
        self.sink: Callable[[ev.Event], None] | None = None
        self.closed_at: float | None = None

    def send(self, command: ev.Command) -> None:
        self.sent.append(command)

    def deliver_to(self, sink: Callable[[ev.Event], None] | None) -> None:
        self.sink = sink

    async def close(self) -> None:
        self.closed_at = asyncio.get_running_loop().time()

    def say(self, event: ev.Event) -> None:
        assert self.sink is not None, "nobody listens to this session"
        self.sink(event)
