"""What a process costs its Redis, counted on a private ``redis-server`` (measuring, never for production).

:class:`CommandCount` runs ``MONITOR`` for a window and classifies every command by the kind of its first key
(:func:`bridge.store.keys.kind_of`), with the bytes of its arguments; :func:`read_info` (:func:`command_stats` from a
coroutine) reads ``INFO stats commandstats`` (calls per command, bytes in and out), to take the difference of two
readings. ``MONITOR`` costs the server and itself shows in ``total_net_output_bytes``, so a measurement that runs it
reports only the bytes the clients sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from bridge.store import keys

BURST_GAP_S = 0.002  # the commands of one pipeline reach the server in one read and run back to back
_NO_KEY = frozenset({"ping", "info", "multi", "exec", "client", "select", "hello", "auth", "command", "monitor"})
# commands whose first argument is not a key
_SECOND_IS_KEY = frozenset({"xread", "xreadgroup"})


# INFO stats commandstats, as RESP: one request, whose size on the wire is known exactly
INFO_REQUEST: Final = b"*3\r\n$4\r\nINFO\r\n$5\r\nstats\r\n$12\r\ncommandstats\r\n"


@dataclass
class Reading:
    """One reading of the server's counters."""

    calls: dict[str, int]  # command (lower case) -> calls so far
    net_input_bytes: int
    net_output_bytes: int = 0


def parse_info(info: str) -> Reading:
    """The reply to ``INFO stats commandstats``, read (pure; ``ValueError`` if a byte count is missing)."""
    calls = {m[1]: int(m[2]) for m in re.finditer(r"^cmdstat_([^:]+):calls=(\d+)", info, re.M)}
    return Reading(calls, _info_field(info, "total_net_input_bytes"), _info_field(info, "total_net_output_bytes"))


def _info_field(info: str, name: str) -> int:
    found = re.search(rf"^{name}:(\d+)", info, re.M)
    if found is None:
        raise ValueError(f"Redis INFO has no {name}")
    return int(found[1])


def read_info(host: str, port: int, timeout_s: float = 5.0) -> tuple[Reading, int]:
    """``INFO stats commandstats`` over a plain socket: the reading, and the bytes of the reply on the wire (so that
    a measurement can take its own INFO out of the server's byte counts)."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(INFO_REQUEST)
        data = b""
        while b"\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n")
        size = int(head[1:])
        while len(body) < size + 2:
            body += sock.recv(65536)
    return parse_info(body[:size].decode()), len(head) + 2 + size + 2


async def command_stats(url: str) -> Reading:
    """:func:`read_info` of the private server at ``url`` (``redis://host:port``: no password, no TLS), from a
    coroutine."""
    where = urlsplit(url)
    reading, _ = await asyncio.to_thread(read_info, where.hostname or "127.0.0.1", where.port or 6379)
    return reading


def difference(before: Reading, after: Reading, skip: frozenset[str] = frozenset({"info", "monitor"})) -> Reading:
    """What happened between two readings (the readings' own INFO, and MONITOR, left out)."""
    calls = {k: v - before.calls.get(k, 0) for k, v in after.calls.items() if k not in skip}
    return Reading(
        {k: v for k, v in calls.items() if v > 0},
        after.net_input_bytes - before.net_input_bytes,
        after.net_output_bytes - before.net_output_bytes,
    )


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
