"""A rollout flag changed outside the product is not obeyed, end to end: a real ``callbridge serve`` (one worker, its
own redis-server, the emulator) with ``rollout_key`` set; the weights set with ``callbridge rollout set`` (signed,
audited with the OS user beside the claimed ``--who``); then someone with the Redis password moves the weights with
one raw ``HSET``. The next calls still go to the signed variant (their report lines say so), the worker logs one
ERROR for the change (not one per call), and ``/metrics`` counts it.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import time
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from _edge import TOKEN, Node, serve_node, wait_report

from bridge.serve import rollout_cli
from bridge.store import keys
from tests.integration.sip._helpers import RawSip, RtpPeer, in_dialog, open_dialog, sdp_offer

NUMBER = "7300"
SAFE, NEW = "gpt-realtime-2.1", "gpt-realtime-2.1-mini"
PLAN = {
    "name": "edge-rollout",
    "match": [NUMBER],
    "dialect": "rollout",
    "profile": {"instructions": "Answer briefly.", "audio_format": "pcm16"},
    "rollout": {
        "safe": "safe",
        "variants": [
            {"name": "safe", "dialect": "ga", "model": SAFE, "weight": 50},
            {"name": "new", "dialect": "ga", "model": NEW, "weight": 50},
        ],
    },
}
KEY = "rollout-key-for-the-edge-test-5b1c"

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def one_call(node: Node) -> dict[str, object]:
    """A short call to the plan: its report line."""
    with RtpPeer() as caller, RawSip(node.sip_port) as raw:
        final, dialog = open_dialog(raw, sdp_offer(caller.port, {0: "PCMU/8000"}), user=NUMBER)
        assert final.status == 200, final.raw
        await asyncio.sleep(0.5)
        assert in_dialog(raw, dialog, "BYE").status == 200
    return await wait_report(node, dialog.call_id)


async def refused_count(node: Node) -> float:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{node.http}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r,
    ):
        text = await r.text()
    found = re.search(r'^callbridge_rollout_flag_refused_total\{dialplan="edge-rollout"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def wait_log(node: Node, needle: str, within_s: float = 5.0) -> list[str]:
    deadline = time.monotonic() + within_s
    while True:
        lines = [line for line in node.log.read_text().splitlines() if needle in line]
        if lines or time.monotonic() > deadline:
            return lines
        await asyncio.sleep(0.1)


async def test_a_raw_hset_of_the_flag_is_ignored_logged_once_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "rollout_key"
    key_file.write_text(KEY + "\n")
    monkeypatch.setenv("CALLBRIDGE_ROLLOUT_KEY_FILE", str(key_file))  # serve, its worker and the CLI below
    monkeypatch.delenv("CALLBRIDGE_ROLLOUT_KEY", raising=False)
    async with serve_node(tmp_path / "node", [PLAN]) as node:
        argv = ["set", "edge-rollout", "--weights", "safe=100,new=0", "--reason", "GA only", "--who", "mallory",
                "--dialplans", str(tmp_path / "node" / "dialplans"), "--redis-url", node.redis.url]  # fmt: skip
        assert await asyncio.to_thread(rollout_cli.main, argv) == 0
        show = ["show", "edge-rollout", *argv[-4:]]
        assert await asyncio.to_thread(rollout_cli.main, show) == 0
        user = pwd.getpwuid(os.getuid()).pw_name
        assert f"mallory (os user {user})" in capsys.readouterr().out  # the claimed name, and who ran it
        client = aioredis.from_url(node.redis.url, decode_responses=True)
        try:
            [(_, entry)] = await client.xrange(keys.ROLLOUT_AUDIT)
            assert entry["who"] == "mallory" and entry["os_user"] == user
            assert len(entry["sig"]) == 64 and KEY not in json.dumps(entry)
            assert (await one_call(node))["variant"] == "safe"

            # someone with the Redis password sends every call to the other model
            await client.hset(keys.rollout_flag("edge-rollout"), "weights", json.dumps({"safe": 0, "new": 100}))
            reports = [await one_call(node), await one_call(node)]
            stored = await client.hget(keys.rollout_flag("edge-rollout"), "weights")
            audit = await client.xrange(keys.ROLLOUT_AUDIT)
        finally:
            await client.aclose()
        assert json.loads(stored or "{}") == {"safe": 0, "new": 100}  # the raw write is there ...
        assert [r["variant"] for r in reports] == ["safe", "safe"]  # ... and calls did not follow it
        assert len(audit) == 1  # it wrote no audit entry, and none was made up for it
        errors = await wait_log(node, "rollout edge-rollout: the stored flag is not obeyed")
        assert len(errors) == 1, errors  # once for the change, not once per call
        assert " ERROR " in errors[0] and "differs from its audit entry" in errors[0], errors[0]
        assert "calls follow the last valid flag" in errors[0]
        assert await refused_count(node) == 1.0
