"""A rollout plan added to the dialplans folder and read by SIGHUP (``callbridge reload``) is known to the node's API
at once: its flag can be set and its kill switch used from the console without a restart (real serve, Redis)."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_serve_operable import ROOT
from test_serve_stop_drain import TOKEN, stack, start, wait_for

__all__ = ["stack"]  # the fixture, shared with the drain tests
pytestmark = pytest.mark.integration

ADDED = """\
name: added
match: ['7100']
dialect: rollout
rollout:
  safe: safe
  variants:
    - {name: safe, dialect: ga, model: gpt-realtime-2.1, weight: 100}
    - {name: cand, dialect: ga, model: gpt-realtime-2.1-mini}
"""


async def _kill(node: Any, plan: str) -> int:
    async with aiohttp.ClientSession() as http, http.put(
        f"{node.http}/api/rollout/{plan}/kill", json={"kill": True, "reason": "incident on the new line"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as r:  # fmt: skip
        return r.status


async def test_a_plan_added_and_reloaded_can_be_killed_from_the_api(tmp_path: Path, stack: Any) -> None:
    folder = tmp_path / "dialplans"
    shutil.copytree(ROOT / "dialplans", folder)
    node = start(tmp_path, stack, 1, dialplans=folder)
    try:
        await node.serve.ready("127.0.0.1", node.http_port, workers=1)
        assert await _kill(node, "added") in (400, 404)  # not a plan of this node yet
        (folder / "added.yaml").write_text(ADDED)
        node.serve.proc.send_signal(signal.SIGHUP)

        async def known() -> bool:
            status, body = await node.get("/api/console/rollout")
            return status == 200 and "added" in [p["dialplan"] for p in body["dialplans"]]

        await wait_for(known, "the reloaded plan never reached the API", 20)
        assert await _kill(node, "added") == 200
        status, body = await node.get("/api/rollout")
        assert status == 200, body
        assert "dialplans: the API knows" in node.log()
    finally:
        node.serve.stop(60)
