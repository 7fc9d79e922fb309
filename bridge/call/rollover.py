"""Rollover: the service caps one session's length (``session_expired``, then a close); a long call moves to a new
session before that, at a turn boundary, without the caller noticing.

::

    age >= cap - margin ──► prepare: open the next session with a summary as its history ──► ready
    ready, at a turn boundary (the table's TURN_BOUNDARY) ──► swap: the next session becomes the call's
    ready, the cap comes first (CAPPED...) ──► swap at once; an answer under way is asked for again
    the replaced session ──► retired: open until the transcripts of the caller turns it took along have come
                             (or RETIRE_DRAIN_S), which join the call's inbox; then closed

The margin is :data:`ROLLOVER_MARGIN_S`, at most 30 % of the cap. A failed preparation is reported and the
session's age starts again, so the next try is due ``cap - margin`` later; if the cap comes first, recovery covers
it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from bridge import events as ev
from bridge.errors import ConnectError

RETIRE_DRAIN_S = 5.0  # a replaced session stays open this long at most for the transcripts of turns it took along
ROLLOVER_MARGIN_S = 120.0  # start the next session this long before the service's cap (capped at 30% of it)
PREPARE_TIMEOUT_S = 10.0


class Session(Protocol):
    """What a rollover needs of a Realtime session (``bridge.realtime.client.RealtimeClient``)."""

    def send(self, command: ev.Command) -> None: ...
    def deliver_to(self, sink: Callable[[ev.Event], None] | None) -> None: ...
    async def close(self) -> None: ...


C = TypeVar("C", bound=Session)


class Rollover(Generic[C]):
    def __init__(
        self,
        max_session_s: float | None,
        open_session: Callable[[tuple[ev.AddText, ...]], Awaitable[C]],
        emit: Callable[[ev.Report], None],
        *,
        summary: Callable[[], str],
        clock: Callable[[], float],
        name: str = "",
    ) -> None:
        self.max_session_s = max_session_s  # the service's session cap; None: no rollover
        self._open = open_session
        self._emit = emit
        self._summary = summary
        self._clock = clock
        self._name = name
        self.opened_at = clock()  # when the newest session was configured
        self.next: C | None = None  # the next session, ready and configured
        self._preparing: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> bool:
        return self.next is not None

    def opened(self) -> None:
        """A session was configured (the call's first, a recovered one, or the next one)."""
        self.opened_at = self._clock()

    @property
    def check_at(self) -> float:
        """When a beat next has something to look at here: the margin before the cap (preparing starts), then
        every beat while the next session is prepared or ready (a turn boundary swaps it in); never without a cap."""
        if self.max_session_s is None:
            return math.inf
        if self._preparing is not None or self.next is not None:
            return 0.0
        return self.opened_at + self.max_session_s - min(ROLLOVER_MARGIN_S, 0.3 * self.max_session_s)

    def tick(self) -> None:
        """Start preparing the next session once the current one is within the margin of the cap."""
        if self._preparing is None and self.next is None and self._clock() >= self.check_at:
            self._preparing = asyncio.create_task(self._prepare(), name=f"rollover-{self._name}")

    async def _prepare(self) -> None:
        try:
            # the summary is the history the next session starts from (Realtime: an item after the configuration;
            # Live: session.start's input[], as instructions and voice are fixed at the start)
            history = (ev.AddText(self._summary(), ev.Role.SYSTEM),)
            client = await asyncio.wait_for(self._open(history), PREPARE_TIMEOUT_S)
        except (TimeoutError, ConnectError) as exc:
            self._emit(ev.RolloverFailed(str(exc) or "timeout"))
            self.opened_at = self._clock()  # try again when due again; recovery covers the cap
            return
        finally:
            self._preparing = None
        self.next = client
        self._emit(ev.RolloverReady())

    def take(self) -> C | None:
        """The next session, now the call's (a swap)."""
        client, self.next = self.next, None
        return client

    def retire(self, old: C, taken: set[str], keep: Callable[[ev.Event], None]) -> None:
        """Close a replaced session once the transcripts of the caller turns it took along (``taken``, item ids)
        have come, or after :data:`RETIRE_DRAIN_S`. Those transcripts go to ``keep``; nothing else it says is used."""
        task = asyncio.create_task(self._retire(old, taken, keep), name=f"retire-{self._name}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, old: C, taken: set[str], keep: Callable[[ev.Event], None]) -> None:
        if not taken:
            with contextlib.suppress(Exception):
                await old.close()
            return
        drained = asyncio.Event()

        def on_event(event: ev.Event) -> None:
            if isinstance(event, ev.CallerTranscript | ev.CallerTranscriptFailed) and event.item_id in taken:
                if not isinstance(event, ev.CallerTranscript) or event.final:
                    taken.discard(event.item_id)
                keep(event)
            elif isinstance(event, ev.Closed):
                drained.set()
            if not taken:
                drained.set()

        old.deliver_to(on_event)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drained.wait(), RETIRE_DRAIN_S)
        finally:  # also when the call ends first (cancelled): the socket is closed all the same
            old.deliver_to(None)
            with contextlib.suppress(Exception):
                await old.close()
        if taken:
            self._emit(ev.CallerTurnLost(len(taken), replaced=True))

    def stop(self) -> list[asyncio.Task[None]]:
        """The call ends: cancel the preparation and the retirements; the retirements to wait for."""
        for task in (self._preparing, *self._retiring):
            if task is not None:
                task.cancel()
        return list(self._retiring)
