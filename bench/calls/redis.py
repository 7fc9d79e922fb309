"""``bench calls --redis``: what the bridge path's calls cost their Redis, per call-second and by key kind.

The step's workers write to a private ``redis-server`` the bench starts (nothing else uses it). Over the step's
measured window only (it opens ``SETUP_S`` after every call was placed and closes before the callers hang up, so
no call's set-up or tear-down is in it: a call's steady state), the bench reads ``INFO stats
commandstats`` at both ends and runs ``MONITOR`` between them (:mod:`bridge.devkit.redis_count`). Commands and the bytes
the clients sent (``total_net_input_bytes``) per call-second = the difference / (calls x window seconds); the split
by key kind is MONITOR's (the bytes of each command's arguments).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bridge.devkit.redis_count import CommandCount, command_stats, difference


async def measure(url: str, calls: int, start_at: float, end_at: float) -> dict[str, Any]:
    """Between ``start_at`` and ``end_at`` (CLOCK_MONOTONIC): the step's ``redis`` figures."""
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    async with CommandCount(url) as count:
        before, began = await command_stats(url), time.monotonic()
        await asyncio.sleep(max(0.0, end_at - time.monotonic()))
        after, ended = await command_stats(url), time.monotonic()
    moved = difference(before, after)
    return figures(moved.calls, moved.net_input_bytes, count, calls * (ended - began))


def figures(by_command: dict[str, int], bytes_in: int, count: CommandCount, call_seconds: float) -> dict[str, Any]:
    """Per call-second: commands (INFO), bytes in (INFO), and by kind (MONITOR) (pure)."""
    per = 1.0 / call_seconds if call_seconds > 0 else 0.0
    return {
        "call_seconds": round(call_seconds, 1),
        "commands_per_call_s": round(sum(by_command.values()) * per, 2),
        "bytes_in_per_call_s": round(bytes_in * per),
        "by_command": {k: round(v * per, 2) for k, v in sorted(by_command.items(), key=lambda kv: -kv[1])},
        "by_kind": {
            kind: {"commands": round(n * per, 2), "bytes": round(count.bytes_by_kind[kind] * per)}
            for kind, n in count.by_kind.most_common()
        },
    }


def line(redis: dict[str, Any]) -> str:
    """The step's figures under its row in the table."""
    kinds = ", ".join(f"{k} {v['commands']:g}" for k, v in redis["by_kind"].items())
    return (
        f"    redis: {redis['commands_per_call_s']:g} commands and {redis['bytes_in_per_call_s']} bytes in per "
        f"call-second ({kinds})"
    )
