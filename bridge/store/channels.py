"""Following a Redis pub/sub channel for as long as a worker runs: subscribed again after Redis was lost. On a Redis
Cluster, pub/sub is sharded (:class:`Subscriber`, :func:`publish`).

Anyone who can write to Redis can publish on a channel, so no message may end the subscription: a handler that
raises on one is logged (the exception's type, never the message, which could carry anything) and the next
message is read as usual; a reply the client cannot read at all is logged and the channel subscribed again at once.
Control channels are best read with a client that does not decode replies (``decode_responses=False``): then every
message reaches its handler, which refuses what is not its JSON."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bridge.store.connection import is_cluster

log = logging.getLogger("bridge.store")

RESUBSCRIBE_S = 1.0  # after Redis was lost
POLL_S = 1.0  # how long one read waits for a message


class Subscriber:
    """One channel's subscription, plain on one Redis, sharded (``SSUBSCRIBE``) on a Redis Cluster, where a plain
    message goes to every node and a sharded one stays on its channel's slot."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.sharded = is_cluster(client)
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)

    async def subscribe(self, channel: str) -> None:
        if self.sharded:
            await self.client.initialize()  # its slot map first: the channel's shard
            await self.pubsub.ssubscribe(channel)
        else:
            await self.pubsub.subscribe(channel)

    async def get_message(self, wait_s: float) -> dict[str, Any] | None:
        """The next message, or None after at most ``wait_s``."""
        if self.sharded:
            loop = asyncio.get_running_loop()
            began = loop.time()
            message: dict[str, Any] | None = await self.pubsub.get_sharded_message(  # type: ignore[attr-defined]
                ignore_subscribe_messages=True, timeout=wait_s
            )  # a ClusterPubSub's (typed as a PubSub, as the client is a Redis)
            if message is None:  # it returns at once while no shard holds the subscription (a failover)
                await asyncio.sleep(max(0.0, wait_s - (loop.time() - began)))
            return message
        plain: dict[str, Any] | None = await self.pubsub.get_message(timeout=wait_s)
        return plain

    async def aclose(self) -> None:
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated


async def publish(client: aioredis.Redis, channel: str, data: bytes | str) -> int:
    """Publish on ``channel`` (sharded on a cluster); the number of subscribers that got it."""
    if is_cluster(client):
        return int(await client.spublish(channel, data))
    return int(await client.publish(channel, data))


def _hand(on_message: Callable[[Any], object], data: Any, what: str) -> None:
    try:
        on_message(data)
    except Exception as exc:  # one bad message must not end the subscription
        log.warning("%s: a message its handler could not take was skipped (%s)", what, type(exc).__name__)


async def follow(client: aioredis.Redis, channel: str, on_message: Callable[[Any], object], what: str) -> None:
    """Hand every message's data on ``channel`` to ``on_message`` until cancelled; ``what`` names the channel in
    the debug line a lost connection logs."""
    while True:
        pubsub = Subscriber(client)
        try:
            await pubsub.subscribe(channel)
            while True:
                message = await pubsub.get_message(POLL_S)
                if message is not None:
                    _hand(on_message, message.get("data"), what)
        except (RedisError, OSError) as exc:
            log.debug("%s channel lost: %s", what, exc)
        except Exception as exc:  # a reply the client cannot read (a decoding client and a message not UTF-8)
            log.warning("%s: a message that could not be read was skipped (%s)", what, type(exc).__name__)
            continue
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        await asyncio.sleep(RESUBSCRIBE_S)
