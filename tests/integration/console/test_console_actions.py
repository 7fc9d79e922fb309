"""A supervisor's actions on a real SIP call through the API: a viewer is refused (403); a whisper "say 'pineapple'"
makes the agent's next reply say it (and nothing reads the whisper out); a hang-up makes the agent say a goodbye
the caller hears, then the bridge sends the BYE; every action is audited under the signed-in credential. A second
call is transferred to its plan's target (a third phone answers and hears the caller; any other target is refused).
Then, on the same node, readiness: ``/healthz`` is 503 with Redis down and with a worker killed, 200 again after each;
``/livez`` stays 200."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from _console_helpers import OPERATOR_TOKEN, READONLY_TOKEN, Stack, caller_wav, console_stack, needs_browser_stack

from bridge.audio.frames import SAMPLE_RATE
from bridge.audio.wav import read_wav
from bridge.devkit.ports import free_port
from bridge.store import keys
from bridge.supervisor.action_audit import fold

pytestmark = needs_browser_stack


async def post(stack: Stack, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(stack.url.rstrip("/") + path, headers=headers, json=body) as r,
    ):
        return r.status, await r.json()


async def agent_lines(stack: Stack, call_id: str) -> list[tuple[float, str]]:
    entries = await stack.client.xrange(keys.call_events(call_id))
    return [(float(f["t"]), f.get("summary", "")) for _, f in entries if f.get("kind") == "agent_transcript"]


async def wait_for(probe: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = await probe()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise TimeoutError(what)


async def test_whisper_hang_up_and_transfer_live_calls_then_readiness(tmp_path: Path) -> None:
    play = caller_wav(tmp_path / "caller.wav", lead_in_s=2.0)  # the caller speaks, then leaves room for the answer
    heard = tmp_path / "heard.wav"
    agent_port = free_port()
    # the transfer target, a third phone: up long before the transfer (the stack starts after it)
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "phone", "listen", "--port", str(agent_port), "--duration", "90",
        "--calls", "1", "--json", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    async with console_stack(tmp_path, transfer_target=f"sip:agent@127.0.0.1:{agent_port}") as stack:
        phone = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "call", f"sip:4000@127.0.0.1:{stack.sip_port}", "--play", str(play),
            "--loop", "--record", str(heard), "--hangup-after", "60", "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

        async def live_call() -> str | None:
            _, body = await stack.get("/api/calls", token=READONLY_TOKEN)
            calls = body.get("calls", []) if isinstance(body, dict) else []
            return str(calls[0]["call_id"]) if calls else None

        call_id = await wait_for(live_call, 30, "no live call")
        await wait_for(lambda: agent_lines(stack, call_id), 20, "the agent never answered")

        # -- a viewer may not act: 403 naming the role, nothing reaches the call, nothing audited
        for action, body in (("hangup", None), ("whisper", {"text": "say 'nope'"}), ("transfer", {})):
            status, answer = await post(stack, f"/api/calls/{call_id}/{action}", READONLY_TOKEN, body)
            assert status == 403 and "needs the supervisor role" in answer["error"], (action, answer)
        assert await stack.client.xlen(keys.CALL_ACTIONS_AUDIT) == 0
        # bad requests name the field
        status, answer = await post(stack, f"/api/calls/{call_id}/whisper", OPERATOR_TOKEN, {"text": ""})
        assert (status, answer["field"]) == (400, "text")
        status, answer = await post(stack, f"/api/calls/{call_id}/transfer", OPERATOR_TOKEN, {"target": "sip:x@y"})
        assert (status, answer["field"]) == (400, "target")  # the test plan has no transfer target at all

        # -- a whisper: the agent's next reply says it; the instruction itself is never said
        whispered_at = time.monotonic()
        status, answer = await post(stack, f"/api/calls/{call_id}/whisper", OPERATOR_TOKEN, {"text": "say 'pineapple'"})
        assert status == 202 and answer["action"] == "whisper", answer

        async def pineapple() -> bool:
            return any("pineapple" in line.lower() for _, line in await agent_lines(stack, call_id))

        await wait_for(pineapple, 20, "the agent never said the whispered word")
        assert time.monotonic() - whispered_at < 20
        assert not any("supervisor" in line.lower() for _, line in await agent_lines(stack, call_id))

        # -- hang up: one goodbye, then the bridge's BYE
        status, answer = await post(stack, f"/api/calls/{call_id}/hangup", OPERATOR_TOKEN)
        assert status == 202 and answer["action"] == "hangup", answer
        out, _ = await asyncio.wait_for(phone.communicate(), 40)
        summary = json.loads(out.decode().strip().splitlines()[-1])
        assert summary["hangup_by"] == "remote", summary
        report = await stack.report(call_id)
        assert report["end_reason"].startswith("ended by a supervisor ("), report["end_reason"]
        entries = [f for _, f in await stack.client.xrange(keys.call_events(call_id))]
        kinds = [f.get("kind") for f in entries]
        acted = max(i for i, f in enumerate(entries) if f.get("kind") == "supervisor" and "hangup" in f["summary"])
        assert "agent_transcript" in kinds[acted:], kinds[acted:]  # the goodbye was said after the hang-up ...
        # ... and the caller heard it: the last seconds before the BYE carry the agent's voice
        pcm = np.frombuffer(read_wav(heard), dtype=np.int16).astype(np.float64)
        tail = pcm[-3 * SAMPLE_RATE :]
        assert np.sqrt(np.mean(tail**2)) > 300, "silence before the BYE: no goodbye was heard"

        # -- the audit names the credential, not anything the body said
        audit = fold([f for _, f in await stack.client.xrange(keys.CALL_ACTIONS_AUDIT)])  # each with its outcome
        actions = [(f["action"], f["who"], f["call_id"]) for f in audit]
        who = "demo token (admin)"
        assert actions == [("whisper", who, call_id), ("hangup", who, call_id)], actions
        assert all(f["worker"] for f in audit)
        # an ended call takes no more actions
        status, _ = await post(stack, f"/api/calls/{call_id}/hangup", OPERATOR_TOKEN)
        assert status in (404, 409)

        # -- transfer a second call (the "line" plan has a transfer target): the caller ends up with the agent's phone
        phone = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "call", f"sip:6000@127.0.0.1:{stack.sip_port}", "--play", str(play),
            "--loop", "--hangup-after", "9", "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        second = await wait_for(lambda: live_call(), 20, "no second live call")
        await wait_for(lambda: agent_lines(stack, second), 10, "the agent never greeted")
        status, answer = await post(stack, f"/api/calls/{second}/transfer", OPERATOR_TOKEN, {"target": "sip:x@y"})
        assert (status, answer["field"]) == (400, "target") and f"sip:agent@127.0.0.1:{agent_port}" in answer["error"]
        status, answer = await post(stack, f"/api/calls/{second}/transfer", OPERATOR_TOKEN, {})
        assert status == 202 and answer["action"] == "transfer", answer
        out, _ = await asyncio.wait_for(phone.communicate(), 40)
        moved = json.loads(out.decode().strip().splitlines()[-1])["transfer"]
        assert moved is not None and moved["answered"], moved
        assert (await stack.report(second))["end_reason"] == "transferred"
        out, _ = await asyncio.wait_for(agent.communicate(), 20)
        (took,) = json.loads(out.decode().strip().splitlines()[-1])["calls"]
        assert took["answered"] and took["received"]["active_ms"] > 500, took  # the agent heard the caller

        # -- readiness: 503 with a worker killed, and with Redis down; 200 once both are back
        assert await stack.get("/livez") == (200, {"alive": True})
        status, health = await stack.get("/healthz")
        assert status == 200 and health["ready"] is True, health
        stack.redis.stop()
        status, health = await wait_for(lambda: unready(stack), 10, "/healthz stayed 200 with Redis down")
        assert health["problems"] == ["Redis unreachable: ConnectionError"], health
        stack.redis.restart()
        await wait_for(lambda: ready(stack), 10, "/healthz never came back after Redis")
        os.kill(await stack.worker_pid(), signal.SIGKILL)
        status, health = await wait_for(lambda: unready(stack), 10, "/healthz stayed 200 with a worker killed")
        assert health["problems"][0].startswith("worker 0 is not ready"), health
        assert (await stack.get("/livez"))[0] == 200  # alive all the same: nothing to restart
        await wait_for(lambda: ready(stack), 30, "/healthz never came back after the worker's restart")
        _, exposition = await stack.get("/metrics")
        assert 'callbridge_worker_restarts_total{worker="0"} 1.0' in exposition
        assert re.search(r'^callbridge_build_info\{python="[0-9.]+",version="[^"]+"\} 1\.0$', exposition, re.M)


async def unready(stack: Stack) -> tuple[int, Any] | None:
    status, health = await stack.get("/healthz")
    return (status, health) if status == 503 and health["ready"] is False else None


async def ready(stack: Stack) -> bool:
    return (await stack.get("/healthz"))[0] == 200
