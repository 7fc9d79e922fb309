"""A store's Redis client (``bridge.store.connection.given_or_connect``): the one it is given stays the caller's, one
it makes from a URL is its own to close, and neither is refused by name."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from bridge.rollout.store import RolloutStore
from bridge.store.calls import CallStore
from bridge.store.connection import given_or_connect


def test_a_given_client_is_the_callers_and_a_url_makes_one_the_store_owns() -> None:
    given = aioredis.Redis()
    assert given_or_connect("Store", "redis://127.0.0.1:1/0", given) == (given, False)
    made, owned = given_or_connect("Store", "redis://127.0.0.1:1/0", None, timeout_s=0.5)
    assert owned and made is not given
    assert made.connection_pool.connection_kwargs["socket_timeout"] == 0.5


@pytest.mark.parametrize("store", [CallStore, RolloutStore])
def test_a_store_with_neither_url_nor_client_is_refused_by_name(store: type[CallStore] | type[RolloutStore]) -> None:
    with pytest.raises(ValueError, match=f"{store.__name__} needs a Redis URL or a client"):
        store()
