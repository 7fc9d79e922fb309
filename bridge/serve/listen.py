"""Listen-in, the worker's side: the calls' taps (:class:`bridge.call.tap.ListenTap`) and their audio on Redis pub/sub.

A supervisor's page asks the ``serve`` process that serves it to hear a call; that process (any node's:
``bridge.supervisor.listen``) subscribes to the call's audio channel (``keys.listen_audio``), then publishes
``{"call_id", "who"}`` on :data:`~bridge.store.keys.LISTEN_CONTROL` and repeats it every
:data:`~bridge.store.keys.LISTEN_RENEW_S` while anyone listens there. Every worker hears the request (one idle
subscription per worker process); the one holding the call starts its tap and a pump task that, every
:data:`PUMP_S`, publishes what the tap took: one message of ``[flags byte] + PCM16 LE 8 kHz mono`` (whole 20 ms
frames; flags in :mod:`bridge.call.tap`). ``PUBLISH`` answers how many subscribers got the message: once no one
did, the last listener has gone (or its ``serve`` died) and the tap stops, with no message needed. When the call
ends its pump publishes the :data:`~bridge.call.tap.ENDED` flag alone.

So with nobody listening a call costs nothing here beyond the tap's flag test: no copy, no task, no message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bridge import metrics
from bridge.call.tap import ENDED, ListenTap
from bridge.store import keys

log = logging.getLogger("bridge.serve.listen")

PUMP_S = 0.04  # how often a listened call's audio is published (two frames a message, or a beat's worth)
KEEPALIVE_S = 1.0  # with no audio to send, an empty message this often finds out whether anyone still listens
RESUBSCRIBE_S = 1.0  # after Redis was lost


class ListenHub:
    """One worker's taps, by call id, and the subscription that turns them on."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.taps: dict[str, ListenTap] = {}
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

    def request(self, call_id: str, who: str = "") -> bool:
        """A listener wants this call: start its tap and pump, if the call is here and not already listened."""
        tap = self.taps.get(call_id)
        if tap is None or call_id in self._pumps:
            return False
        tap.start()
        log.info("call %s: listen-in started (%s)", call_id, who or "a supervisor")
        metrics.LISTEN_TAPS_ACTIVE.inc()
        self._pumps[call_id] = asyncio.create_task(self._pump(tap), name=f"listen-{call_id}")
        return True

    async def _listen(self) -> None:
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.LISTEN_CONTROL)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._on_control(message.get("data"))
            except (RedisError, OSError) as exc:
                log.debug("listen-in control channel lost: %s", exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            await asyncio.sleep(RESUBSCRIBE_S)

    def _on_control(self, data: Any) -> None:
        try:
            body = json.loads(data)
            call_id, who = str(body["call_id"]), str(body.get("who", ""))
        except (TypeError, ValueError, KeyError):
            log.warning('listen-in: a control message that is not {"call_id", "who"} JSON was ignored')
            return
        self.request(call_id, who)

    async def _pump(self, tap: ListenTap) -> None:
        channel = keys.listen_audio(tap.call_id)
        quiet = 0.0
        try:
            while tap.active:
                await asyncio.sleep(PUMP_S)
                if not tap.active:
                    break
                flags, pcm = tap.take()
                quiet = 0.0 if pcm else quiet + PUMP_S
                if pcm or quiet >= KEEPALIVE_S:
                    quiet = 0.0
                    if await self.client.publish(channel, bytes([flags]) + pcm) == 0:
                        break  # nobody listens any more
            if tap.call_id not in self.taps:  # the call ended under a listener
                await self.client.publish(channel, bytes([ENDED]))
        except (RedisError, OSError) as exc:
            log.warning("call %s: listen-in stopped: Redis: %s", tap.call_id, exc)
        finally:
            tap.stop()
            self._pumps.pop(tap.call_id, None)
            metrics.LISTEN_TAPS_ACTIVE.dec()
            log.info("call %s: listen-in stopped", tap.call_id)
