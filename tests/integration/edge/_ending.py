"""Shared helpers for the tests of how calls end (``test_peer_reason.py``, ``test_session_too_small.py``): one SIPp
call against a ``serve`` node (``_edge.serve_node``) with a Call-ID the test chooses, ``serve``'s environment for a
webhook endpoint (``tests/_webhooks.py``), and readers of what the node kept: a call's hash once ended, every hash of
one SIP Call-ID, the rollout's outcome records, /metrics."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from _edge import Node
from _webhooks import Receiver

from bridge.devkit.ports import free_port
from bridge.store import keys

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).resolve().parents[1] / "sip" / "scenarios"
LOCALHOST = "127.0.0.1"
PROFILE = {
    "instructions": "Answer briefly.",
    "audio_format": "pcm16",
    "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
}
PLAN = {"name": "reasons", "match": ["1000"], "dialect": "ga", "greeting": "Greet the caller.", "profile": PROFILE}


async def sipp_call(tmp: Path, node: Node, scenario: str, call_ids: str, *more: str) -> tuple[int, str]:
    """One call of ``scenarios/<scenario>`` whose Call-ID ``-cid_str call_ids`` makes (``%u``: 1); ``more``: SIPp's
    further options (``-key NAME VALUE``). Its exit status and the end of its output."""
    assert SIPP is not None
    work = tmp / "sipp"
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(SCENARIOS / scenario, work / scenario)
    proc = await asyncio.create_subprocess_exec(
        SIPP, "-sf", str(work / scenario), "-m", "1", "-i", LOCALHOST, "-mi", LOCALHOST,
        "-p", str(free_port()), "-mp", str(free_port()), "-s", "1000", "-cid_str", call_ids, *more,
        "-timeout", "30", "-timeout_error", "-nostdin", f"{LOCALHOST}:{node.sip_port}",
        cwd=work, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(errors="replace")[-3000:]


def webhook_env(tmp: Path, hook: Receiver) -> dict[str, str]:
    """``serve``'s environment for a webhook endpoint: ``hook``, with its secret in a file."""
    (tmp / "whsec").write_text(hook.secret + "\n")
    return {"CALLBRIDGE_WEBHOOK_URL": hook.url, "CALLBRIDGE_WEBHOOK_SECRET_FILE": str(tmp / "whsec")}


def ended_hooks(hook: Receiver, sip_call_id: str) -> list[dict[str, Any]]:
    """The data of every ``call.ended`` the endpoint got for this SIP Call-ID."""
    return [r.body["data"] for r in hook.of_type("call.ended") if r.body["data"]["sip_call_id"] == sip_call_id]


async def ended_hash(node: Node, call_id: str, within_s: float = 5.0) -> dict[str, str]:
    """The call's hash in Redis once its end is written."""
    client = aioredis.from_url(node.redis.url, decode_responses=True)
    try:
        deadline = time.monotonic() + within_s
        state: dict[str, str] = await client.hgetall(keys.call(call_id))
        while state.get("phase") != "ENDED" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            state = await client.hgetall(keys.call(call_id))
        return state
    finally:
        await client.aclose()


async def hashes_of(node: Node, sip_call_id: str) -> list[dict[str, str]]:
    """Every call hash in Redis that names this SIP Call-ID."""
    client = aioredis.from_url(node.redis.url, decode_responses=True)
    try:
        found = []
        async for key in client.scan_iter(keys.call("*")):
            if (await client.type(key)) == "hash" and await client.hget(key, "sip_call_id") == sip_call_id:
                found.append(await client.hgetall(key))
        return found
    finally:
        await client.aclose()


async def outcome_records(node: Node, dialplan: str) -> list[dict[str, Any]]:
    """The plan's rollout outcome records (``bridge.rollout.outcomes``), in order."""
    client = aioredis.from_url(node.redis.url, decode_responses=True)
    try:
        return [json.loads(fields["r"]) for _id, fields in await client.xrange(keys.rollout_records(dialplan))]
    finally:
        await client.aclose()


async def metrics_text(node: Node) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{node.http}/metrics") as r:
        return await r.text()


def sample(text: str, name: str, **labels: str) -> float:
    """The summed value of the samples of ``name`` whose labels include ``labels`` (0 with none)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
