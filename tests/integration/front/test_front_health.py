"""``/healthz`` follows the front: 503 naming it from the moment its Kamailio is killed until the restarted one
answers OPTIONS again, then 200."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
from _front import NODE_A, Node, port_block, requirements, wait_for

from bridge.emulator import EmulatorServer

pytestmark = requirements


async def _healthz(node: Node) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://{node.host}:{node.http_port}/healthz") as answer:
        return answer.status, dict(await answer.json())


async def test_healthz_is_503_while_the_front_is_down(tmp_path: Path) -> None:
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        node = Node(
            tmp_path, "a", host=NODE_A, sip_port=port_block(2), workers=1, realtime_url=emulator.base_url, front=True
        )
        try:
            health = await node.up()
            status, body = await _healthz(node)
            assert status == 200 and body["ready"], body
            pid = int(health["front"]["pid"])
            os.kill(pid, signal.SIGKILL)

            async def down() -> dict[str, Any] | None:
                status, body = await _healthz(node)
                return body if status == 503 else None

            body = await wait_for(down, "/healthz 503 with Kamailio killed", within_s=30.0, every_s=0.05)
            assert "the front (Kamailio) is down" in body["problems"], body
            assert body["front"]["alive"] is False

            async def back() -> dict[str, Any] | None:
                status, body = await _healthz(node)
                return body if status == 200 and body["front"]["pid"] != pid else None

            body = await wait_for(back, "/healthz 200 with Kamailio restarted", within_s=60.0)
            assert body["front"]["restarts"] == 1 and body["front"]["alive"]
        finally:
            rc = node.stop()
        assert rc == 0, node.stderr_tail()
