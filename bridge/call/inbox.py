"""The call's one queue of events (Realtime and telephone), with the caller's interrupts first, and the table of
their handlers."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any, TypeVar

from bridge import events as ev


class Inbox:
    """One queue for a call's events: urgent ones (the caller's interrupts) first, the rest in arrival order (a
    response's ``AudioDone`` and ``ResponseDone`` never overtake its audio, even when all arrive in one read)."""

    def __init__(self) -> None:
        self._q: asyncio.PriorityQueue[tuple[int, int, ev.Event]] = asyncio.PriorityQueue()
        self._seq = itertools.count()

    def put(self, event: ev.Event) -> None:
        self._q.put_nowait((0 if event.urgent else 1, next(self._seq), event))

    async def get(self) -> ev.Event:
        return (await self._q.get())[2]

    def empty(self) -> bool:
        return self._q.empty()


E = TypeVar("E", bound=ev.Event)


class Handlers:
    """A type -> handler table for a call's events: ``on(ev.Dtmf, fn)`` types ``fn``'s argument as the event it
    gets. Calling the table runs the handler of the event's exact type (none: ignored) and returns its result (a
    coroutine for an async handler)."""

    def __init__(self) -> None:
        self._by_type: dict[type[ev.Event], Callable[[Any], object]] = {}

    def on(self, cls: type[E], handler: Callable[[E], object]) -> Handlers:
        self._by_type[cls] = handler
        return self

    def __call__(self, event: ev.Event) -> object:
        handler = self._by_type.get(type(event))
        return None if handler is None else handler(event)
