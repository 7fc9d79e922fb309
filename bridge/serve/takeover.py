"""Take-over, the worker's side: the calls' take-over legs (:class:`bridge.call.takeover.TakeOverLeg`) and the
supervisor's audio on Redis pub/sub.

A take-over reaches the worker as a supervisor action signed with the node's listen key (``bridge.serve.actions``;
an unsigned or forged one is refused and logged, and nothing changes). Then :meth:`TakeOverHub.begin` switches the
call's leg to the supervisor's voice and subscribes to the call's take-over channel
(:func:`~bridge.store.keys.takeover_audio`), where the console's socket (``bridge.supervisor.takeover``) publishes
the supervisor's microphone as PCM16 LE 8 kHz mono, each message sealed with the same key for this call and this
supervisor (:func:`bridge.supervisor.listen_token.seal`). A message sealed for them, newer than the last, is fed to
the leg; any other (written straight into Redis, replayed, another supervisor's) is dropped, counted and logged
once per take-over.

A hand-back action ends it (:meth:`TakeOverHub.end`). So does silence on the channel: with no message for
:data:`IDLE_S` (the page or its ``serve`` went away without handing back) the hub hands the call back to the model
itself, through the call's inbox like any hand-back, so no caller is left with a muted agent and nobody speaking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bridge import events as ev
from bridge import metrics
from bridge.call.takeover import TakeOverLeg
from bridge.store import keys
from bridge.store.channels import Subscriber
from bridge.supervisor.listen_token import AudioOpener

log = logging.getLogger("bridge.serve.takeover")

IDLE_S: Final = 10.0  # no supervisor audio this long: the call goes back to the model
POLL_S: Final = 0.5
NOBODY: Final = "(no supervisor audio)"  # who handed back, when the hub did

Deliver = Callable[[ev.Event], None]


class TakeOverHub:
    """One worker's take-over legs, by call id, and the audio subscription of each call taken over."""

    def __init__(self, client: aioredis.Redis, key: bytes | None = None) -> None:
        self.client = client  # one that does not decode replies (the audio is binary); no connection until used
        self.key = key  # the node's listen key: only audio sealed with it is played
        self.legs: dict[str, TakeOverLeg] = {}
        self._feeds: dict[str, asyncio.Task[None]] = {}

    def add(self, leg: TakeOverLeg) -> None:
        self.legs[leg.call_id] = leg

    def remove(self, call_id: str) -> None:
        self.end(call_id)
        self.legs.pop(call_id, None)

    def begin(self, call_id: str, who: str, deliver: Deliver) -> bool:
        """The call is taken over by ``who``: its leg plays their audio from now on; False if it is not here."""
        leg = self.legs.get(call_id)
        if leg is None:
            return False
        self.end(call_id)
        leg.begin(who)
        opener = AudioOpener(self.key, call_id, who)
        self._feeds[call_id] = asyncio.create_task(self._feed(leg, opener, deliver), name=f"takeover-{call_id}")
        log.info("call %s: taken over by %s", call_id, who)
        return True

    def end(self, call_id: str) -> None:
        leg = self.legs.get(call_id)
        if leg is not None and leg.active:
            leg.end()
            log.info("call %s: handed back (%d frames of the supervisor played, %d dropped)", call_id,
                     leg.frames_played, leg.frames_dropped)  # fmt: skip
        task = self._feeds.pop(call_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._feeds.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._feeds.clear()
        with contextlib.suppress(Exception):
            await self.client.aclose()

    async def _feed(self, leg: TakeOverLeg, opener: AudioOpener, deliver: Deliver) -> None:
        """The supervisor's audio into the leg until hand-back; :data:`IDLE_S` of nothing hands back here."""
        pubsub = Subscriber(self.client)
        loop = asyncio.get_running_loop()
        try:
            await pubsub.subscribe(keys.takeover_audio(leg.call_id))
            heard, refused = loop.time(), 0
            while leg.active and loop.time() - heard < IDLE_S:
                message = await pubsub.get_message(POLL_S)
                data = message.get("data") if message is not None else None
                if not isinstance(data, bytes):
                    continue
                try:
                    pcm = opener.open(data)
                except ValueError as exc:
                    metrics.TAKEOVER_REFUSED.inc()
                    refused += 1
                    if refused == 1:
                        log.warning("call %s: take-over audio refused (%s): not played", leg.call_id, exc)
                    continue
                heard = loop.time()
                leg.feed(pcm)
        except (RedisError, OSError) as exc:
            log.warning("call %s: take-over audio lost: Redis: %s", leg.call_id, exc)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        if leg.active:  # nobody handed back: the model takes the call again
            log.warning("call %s: no supervisor audio for %.0f s: handed back to the agent", leg.call_id, IDLE_S)
            self._feeds.pop(leg.call_id, None)
            self.end(leg.call_id)
            deliver(ev.SupervisorAction(ev.SupervisorKind.HANDBACK, NOBODY))
