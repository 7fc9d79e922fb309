"""Following a Redis pub/sub channel for as long as a worker runs: subscribed again after Redis was lost.

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

log = logging.getLogger("bridge.store")

RESUBSCRIBE_S = 1.0  # after Redis was lost
POLL_S = 1.0  # how long one read waits for a message


def _hand(on_message: Callable[[Any], object], data: Any, what: str) -> None:
    try:
        on_message(data)
    except Exception as exc:  # one bad message must not end the subscription
        log.warning("%s: a message its handler could not take was skipped (%s)", what, type(exc).__name__)


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
                    _hand(on_message, message.get("data"), what)
        except (RedisError, OSError) as exc:
            log.debug("%s channel lost: %s", what, exc)
        except Exception as exc:  # a reply the client cannot read (a decoding client and a message not UTF-8)
            log.warning("%s: a message that could not be read was skipped (%s)", what, type(exc).__name__)
            continue
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        await asyncio.sleep(RESUBSCRIBE_S)
