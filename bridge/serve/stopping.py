"""A worker's part in a drain, a graceful stop and a rolling restart: what it takes, and when it exits.

The pool (``bridge.serve.pool``, orchestrated by ``bridge.serve.control``) talks to each worker over a socket pair
of its own: one word a line from the pool, ``calls N`` lines back each time the worker's count of calls changes.

==========  ====================================================================================================
``drain``   new INVITEs get ``503 Service Unavailable`` (with ``Retry-After``); live calls go on
``resume``  new calls are taken again
``stop``    as ``drain``, and the worker exits once its last call has ended
``end BY``  every live call ends now with a spoken goodbye, then BYE, recorded as ended by ``BY`` (``shutdown`` or
            ``drain``: :class:`bridge.events.EndedBy`); then the worker exits
``close``   the worker exits now (its gateway hangs up what is left: ended by ``shutdown``)
``reload``  the dialplans are read again (a bad file is refused, named, and the old plans stay)
==========  ====================================================================================================

Signals: the node's control signals (SIGUSR1, SIGUSR2, SIGHUP) are for ``serve`` alone and ignored here, so that
``systemctl kill -s USR1`` (which signals every process of the unit) drains the node instead of killing its
workers. SIGTERM and SIGINT mean ``stop`` while the pool lives (systemd's stop and a terminal's Ctrl-C reach every
process: the pool orchestrates the rest); a worker whose pool has died (the parent-death signal is SIGTERM) closes
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import Protocol

from bridge import events as ev

log = logging.getLogger("bridge.serve.worker")

RETRY_AFTER_S = 30  # the Retry-After of a draining worker's 503
IGNORED = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)  # the node's control signals: serve's, not the workers'
COMMANDS = ("drain", "resume", "stop", "end", "close", "reload")


class Refusable(Protocol):
    """A new call as this module sees it (``bridge.sip.gateway.IncomingCall``)."""

    call_id: str

    def reject(self, code: int, reason: str | None = None, retry_after: int | None = None) -> None: ...


class WorkerControl:
    """One worker's drain state, its calls (each one's inbox), and its end: ``done`` is set when it should exit."""

    def __init__(self, index: int, done: asyncio.Event, reload: Callable[[], None] = lambda: None) -> None:
        self.index = index
        self.done = done
        self.draining = False
        self._exit_when_idle = False
        self._ending: ev.EndedBy | None = None  # every call (and one that attaches later) is asked to end so
        self._calls: dict[str, Callable[[ev.Event], None] | None] = {}  # call id -> its session's inbox, once made
        self._reload = reload
        self._parent = os.getppid()
        self._writer: asyncio.StreamWriter | None = None

    # ------------------------------------------------------------------------------------------------ the calls
    def begin(self, call: Refusable) -> bool:
        """A new call: counted, or (draining) refused with ``503`` and False."""
        if self.draining:
            from bridge import metrics  # here: serve imports this module before its metrics may be (multiprocess mode)

            metrics.SIP_REJECTED.labels("503").inc()
            log.info("call %s refused (503): worker %d is draining", call.call_id, self.index)
            call.reject(503, "Service Unavailable", retry_after=RETRY_AFTER_S)
            return False
        self._calls[call.call_id] = None
        self._tell()
        return True

    def attach(self, call_id: str, inbox: Callable[[ev.Event], None]) -> None:
        """The call's session exists: a node's end reaches it through ``inbox``."""
        if call_id in self._calls:
            self._calls[call_id] = inbox
            if self._ending is not None:
                inbox(ev.EndRequested(self._ending))

    def finished(self, call_id: str) -> None:
        self._calls.pop(call_id, None)
        self._tell()
        if self.draining and self._calls:
            log.info("worker %d draining, %d call(s) left", self.index, len(self._calls))
        if self._exit_when_idle and not self._calls:
            log.info("worker %d drained: no call left", self.index)
            self.done.set()

    @property
    def calls(self) -> int:
        return len(self._calls)

    # ------------------------------------------------------------------------------------------------ commands
    def command(self, line: str) -> None:
        word, _, arg = line.strip().partition(" ")
        if word in ("drain", "stop"):
            if not self.draining:
                log.info("worker %d draining, %d call(s): new calls get 503", self.index, len(self._calls))
            self.draining = True
            self._exit_when_idle = self._exit_when_idle or word == "stop"
            if self._exit_when_idle and not self._calls:
                self.done.set()
        elif word == "resume":
            self.draining = self._exit_when_idle = False
            log.info("worker %d taking calls again", self.index)
        elif word == "end":
            self._end(ev.EndedBy(arg) if arg in {str(by) for by in ev.EndedBy} else ev.EndedBy.SHUTDOWN)
        elif word == "close":
            self.done.set()
        elif word == "reload":
            self._reload()
        else:
            log.error("worker %d: unknown control command %r", self.index, line[:40])

    def _end(self, by: ev.EndedBy) -> None:
        self.draining = self._exit_when_idle = True
        self._ending = by
        log.warning("worker %d ending %d call(s) with a goodbye (ended by %s)", self.index, len(self._calls), by)
        for inbox in self._calls.values():
            if inbox is not None:
                inbox(ev.EndRequested(by))
        if not self._calls:
            self.done.set()

    def _tell(self) -> None:
        """``calls N`` to the pool (it logs the node's drain and waits on it)."""
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(f"calls {len(self._calls)}\n".encode())

    # ------------------------------------------------------------------------------------------------ channels
    async def serve(self, fd: int) -> None:
        """Read the pool's commands from the inherited socket ``fd`` until the pool closes it."""
        sock = socket.socket(fileno=fd)
        reader, self._writer = await asyncio.open_unix_connection(sock=sock)
        self._tell()
        try:
            while line := await reader.readline():
                self.command(line.decode(errors="replace"))
        except (ConnectionError, OSError) as exc:
            log.warning("worker %d: the pool's control channel failed: %s", self.index, exc)
        finally:
            self._writer.close()

    def on_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in IGNORED:
            signal.signal(sig, signal.SIG_IGN)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._terminate, sig)

    def _terminate(self, sig: signal.Signals) -> None:
        if os.getppid() != self._parent:  # the pool is gone: nobody will orchestrate an end; close now
            log.warning("worker %d: %s and the pool is gone: closing", self.index, sig.name)
            self.done.set()
            return
        log.info("worker %d: %s: draining, then exiting once its calls are over", self.index, sig.name)
        self.command("stop")


async def read_calls(reader: asyncio.StreamReader, on_count: Callable[[int], None]) -> None:
    """The pool's side: each ``calls N`` line of a worker, until it closes its end."""
    with contextlib.suppress(ConnectionError, OSError):
        while line := await reader.readline():
            word, _, count = line.decode(errors="replace").strip().partition(" ")
            if word == "calls" and count.isdigit():
                on_count(int(count))
