"""What a process costs its Redis, counted on a private ``redis-server`` (measuring, never for production).

:class:`CommandCount` runs ``MONITOR`` for a window and classifies every command by the kind of its first key
(:func:`bridge.store.keys.kind_of`), with the bytes of its arguments; :func:`command_stats` reads ``INFO
commandstats`` and ``INFO stats`` (calls per command, bytes in), to take the difference of two readings. ``MONITOR``
costs the server and itself shows in ``total_net_output_bytes``, so only the bytes the clients sent are reported.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from bridge.store import keys

BURST_GAP_S = 0.002  # the commands of one pipeline reach the server in one read and run back to back
_NO_KEY = frozenset({"ping", "info", "multi", "exec", "client", "select", "hello", "auth", "command", "monitor"})
# commands whose first argument is not a key
_SECOND_IS_KEY = frozenset({"xread", "xreadgroup"})


@dataclass
class Reading:
    """One reading of the server's counters."""

    calls: dict[str, int]  # command (lower case) -> calls so far
    net_input_bytes: int


async def command_stats(client: aioredis.Redis) -> Reading:
    stats: dict[str, Any] = await client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items() if isinstance(v, dict)}
    net: dict[str, Any] = await client.info("stats")
    return Reading(calls, int(net.get("total_net_input_bytes", 0)))


def difference(before: Reading, after: Reading, skip: frozenset[str] = frozenset({"info", "monitor"})) -> Reading:
    """What happened between two readings (the readings' own INFO, and MONITOR, left out)."""
    calls = {k: v - before.calls.get(k, 0) for k, v in after.calls.items() if k not in skip}
    return Reading({k: v for k, v in calls.items() if v > 0}, after.net_input_bytes - before.net_input_bytes)


def key_of(args: list[str]) -> str | None:
    """The first key a command names (pure; None for a command without one)."""
    if not args:
        return None
    name = args[0].lower()
    if name in _NO_KEY:
        return None
    if name in _SECOND_IS_KEY:
        with contextlib.suppress(ValueError):
            return args[args.index(next(a for a in args if a.lower() == "streams")) + 1]
        return None
    return args[1] if len(args) > 1 else None


@dataclass
class CommandCount:
    """``async with CommandCount(url) as count:`` ... then ``count.by_kind``: {kind: commands}, ``count.bytes_by_kind``
    ({kind: bytes of arguments}), ``count.by_command`` ({(kind, command): commands}). Counting starts once ``MONITOR``
    is on (the context's entry waits for it) and stops at the exit."""

    url: str
    by_kind: Counter[str] = field(default_factory=Counter)
    bytes_by_kind: Counter[str] = field(default_factory=Counter)
    by_command: Counter[tuple[str, str]] = field(default_factory=Counter)
    bursts: int = 0  # runs of commands from one client with no gap over BURST_GAP_S: one round trip each
    _last: tuple[str, float] = ("", float("-inf"))
    _client: aioredis.Redis | None = None
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CommandCount:
        self._client = aioredis.from_url(self.url, decode_responses=True)
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._listen(ready))
        await asyncio.wait_for(ready.wait(), 5.0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    async def _listen(self, ready: asyncio.Event) -> None:
        assert self._client is not None
        async with self._client.monitor() as monitor:
            ready.set()
            async for record in monitor.listen():
                client = f"{record.get('client_address')}:{record.get('client_port')}"
                self.count(str(record.get("command", "")).split(" "), client, float(record.get("time", 0.0)))

    def count(self, args: list[str], client: str = "", at: float = 0.0) -> None:
        if not args or not args[0]:
            return
        name = args[0].lower()
        if name in ("monitor", "info"):
            return
        last_client, last_at = self._last
        if client != last_client or at - last_at > BURST_GAP_S:
            self.bursts += 1
        self._last = (client, at)
        key = key_of(args)
        kind = "no key" if key is None else keys.kind_of(key)
        self.by_kind[kind] += 1
        self.bytes_by_kind[kind] += sum(len(a) for a in args)
        self.by_command[(kind, name)] += 1
