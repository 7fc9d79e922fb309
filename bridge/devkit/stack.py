"""The whole bridge on embedded defaults, in one context: a private Redis, the emulator and a worker pool.

The demo, the soak benchmark and SIP replays all need the same stack; this is the one place that starts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.config import Settings
from bridge.devkit.ports import free_port_block, listen_port, pool_rtp
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.emulator import EmulatorServer
from bridge.serve.pool import Pool

ROOT = Path(__file__).resolve().parent.parent.parent


def shipped_dialplans() -> Path:
    """The example dialplans: the checkout's ``dialplans/``, or where the wheel installs them
    (``<prefix>/share/callbridge/dialplans``, pyproject.toml's data-files)."""
    checkout = ROOT / "dialplans"
    return checkout if checkout.is_dir() else Path(sys.prefix) / "share" / "callbridge" / "dialplans"


@dataclass
class LocalStack:
    emulator: EmulatorServer
    pool: Pool
    redis: EmbeddedRedis | None
    reports: Path  # one JSON line per finished call

    @property
    def sip_ports(self) -> list[int]:
        return [slot.sip_port for slot in self.pool.slots]


@contextlib.asynccontextmanager
async def local_stack(
    *,
    workers: int = 1,
    realtime_query: str = "",
    emulator_settings: Mapping[str, Any] | None = None,
    dialplans: Path | None = None,
    with_redis: bool = True,
    ready_within_s: float = 60.0,
) -> AsyncIterator[LocalStack]:
    """Start Redis (if a binary is there and ``with_redis``), the emulator and ``workers`` worker processes, each
    on ports of ``CALLBRIDGE_PORT_RANGE`` when it is set (``bridge.devkit.ports``)."""
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(EmbeddedRedis()) if with_redis and redis_server_binary() else None
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="callbridge-stack-")))
        async with EmulatorServer("127.0.0.1", listen_port(), **dict(emulator_settings or {})) as emulator:
            query = f"?{realtime_query}" if realtime_query else ""
            settings = Settings(
                sip_port=free_port_block(workers),  # worker i listens on sip_port + i
                workers=workers,
                **pool_rtp(workers),  # any without CALLBRIDGE_PORT_RANGE, from it with it (as every port here)
                realtime_url=f"{emulator.base_url}{query}",
                redis_url=redis.url if redis is not None else None,
                dialplans=dialplans or shipped_dialplans(),
                report_file=tmp / "calls.jsonl",
            )
            pool = Pool(settings)
            await pool.start()
            try:
                await asyncio.wait_for(pool.wait_ready(), ready_within_s)
                yield LocalStack(emulator, pool, redis, tmp / "calls.jsonl")
            finally:
                await pool.stop()
