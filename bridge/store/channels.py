"""Following a Redis pub/sub channel for as long as a worker runs: subscribed again after Redis was lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("bridge.store")

RESUBSCRIBE_S = 1.0  # after Redis was lost
POLL_S = 1.0  # how long one read waits for a message


async def follow(client: aioredis.Redis, channel: str, on_message: Callable[[Any], object], what: str) -> None:
    """Hand every message's data on ``channel`` to ``on_message`` until cancelled; ``what`` names the channel in
    the debug line a lost connection logs."""
    while True:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            while True:
                message = await pubsub.get_message(timeout=POLL_S)
                if message is not None:
                    on_message(message.get("data"))
        except (RedisError, OSError) as exc:
            log.debug("%s channel lost: %s", what, exc)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        await asyncio.sleep(RESUBSCRIBE_S)
