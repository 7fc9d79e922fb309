"""Listen-in, the worker's side: the calls' taps (:class:`bridge.call.tap.ListenTap`) and their audio on Redis pub/sub.

A supervisor's page asks the ``serve`` process that serves it to hear a call; that process (any node's:
``bridge.supervisor.listen``) subscribes to the call's audio channel (``keys.listen_audio``), then publishes
``{"call_id", "who", "nonce", "exp", "sig"}``, signed with the node's listen key
(:mod:`bridge.supervisor.listen_token`; a worker ignores and logs an unsigned, forged, expired or replayed one), on
:data:`~bridge.store.keys.LISTEN_CONTROL` and repeats it every
:data:`~bridge.store.keys.LISTEN_RENEW_S` while anyone listens there. Every worker hears the request (one idle
subscription per worker process); the one holding the call starts its tap and a pump task that, every
:data:`PUMP_S`, publishes what the tap took: one message of ``[flags byte] + PCM16 LE 8 kHz mono`` (whole 20 ms
frames; flags in :mod:`bridge.call.tap`). ``PUBLISH`` answers how many subscribers got the message: once no one
did, the last listener has gone (or its ``serve`` died) and the tap stops, with no message needed. Nor does a tap
outlive its requests: each signed request is good until its expiry (``listen_token.TTL_S``), and once the last
one has expired the tap stops whoever still subscribes. The console renews a request only while the listener's
session lives, so a tap ends within ``TTL_S`` of its session's end. A control message no handler can take is logged
and skipped; the subscription lives on (:func:`bridge.store.channels.follow`). When the call ends its pump
publishes the :data:`~bridge.call.tap.ENDED` flag alone.

So with nobody listening a call costs nothing here beyond the tap's flag test: no copy, no task, no message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bridge import metrics
from bridge.call.tap import ENDED, ListenTap
from bridge.store import keys
from bridge.store.channels import follow, publish
from bridge.supervisor.listen_token import TTL_S, Verifier

log = logging.getLogger("bridge.serve.listen")

PUMP_S = 0.04  # how often a listened call's audio is published (two frames a message, or a beat's worth)
KEEPALIVE_S = 1.0  # with no audio to send, an empty message this often finds out whether anyone still listens


class ListenHub:
    """One worker's taps, by call id, and the subscription that turns them on."""

    def __init__(self, client: aioredis.Redis, key: bytes | None = None) -> None:
        self.client = client
        self.verifier = Verifier(key)  # only requests signed by this node's serve start a tap
        self.taps: dict[str, ListenTap] = {}
        self.until: dict[str, float] = {}  # call id -> when its latest signed request expires (wall clock)
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="listen-control")

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._pumps.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._pumps.clear()

    def add(self, tap: ListenTap) -> None:
        self.taps[tap.call_id] = tap

    def remove(self, call_id: str) -> None:
        """The call is over: a running pump says so to the listeners and stops."""
        tap = self.taps.pop(call_id, None)
        if tap is not None:
            tap.active = False

    def request(self, call_id: str, who: str = "", until: float | None = None) -> bool:
        """A listener wants this call until ``until`` (wall clock; None: :data:`TTL_S` from now): start its tap and
        pump, if the call is here and not already listened; a request for a listened call renews it."""
        tap = self.taps.get(call_id)
        if tap is None:
            return False
        self.until[call_id] = max(self.until.get(call_id, 0.0), time.time() + TTL_S if until is None else until)
        if call_id in self._pumps:
            return False
        tap.start()
        log.info("call %s: listen-in started (%s)", call_id, who or "a supervisor")
        metrics.LISTEN_TAPS_ACTIVE.inc()
        self._pumps[call_id] = asyncio.create_task(self._pump(tap), name=f"listen-{call_id}")
        return True

    async def _listen(self) -> None:
        await follow(self.client, keys.LISTEN_CONTROL, self._on_control, "listen-in control")

    def _on_control(self, data: Any) -> None:
        try:
            signed = self.verifier.verify(data)
        except ValueError as exc:
            metrics.LISTEN_REFUSED.inc()
            log.warning("listen-in: refused a control message (%s): nothing streamed", exc)
            return
        self.request(signed.call_id, signed.who, signed.expires)

    async def _pump(self, tap: ListenTap) -> None:
        channel = keys.listen_audio(tap.call_id)
        quiet = 0.0
        try:
            while tap.active:
                await asyncio.sleep(PUMP_S)
                if not tap.active:
                    break
                if time.time() > self.until.get(tap.call_id, 0.0):
                    log.info("call %s: listen-in request not renewed", tap.call_id)
                    break
                flags, pcm = tap.take()
                quiet = 0.0 if pcm else quiet + PUMP_S
                if pcm or quiet >= KEEPALIVE_S:
                    quiet = 0.0
                    if await publish(self.client, channel, bytes([flags]) + pcm) == 0:
                        break  # nobody listens any more
            if tap.call_id not in self.taps:  # the call ended under a listener
                await publish(self.client, channel, bytes([ENDED]))
        except (RedisError, OSError) as exc:
            log.warning("call %s: listen-in stopped: Redis: %s", tap.call_id, exc)
        finally:
            tap.stop()
            self._pumps.pop(tap.call_id, None)
            self.until.pop(tap.call_id, None)
            metrics.LISTEN_TAPS_ACTIVE.dec()
            log.info("call %s: listen-in stopped", tap.call_id)
