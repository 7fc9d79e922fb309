"""The slow-tool scenario of ``callbridge bench replay``: a call whose business tool (an HTTP tool of the plan, served
by a local aiohttp service on the replay's own loop) answers in ``TOOL_S`` seconds, replayed direct in each dialect.
It reports how long the call waited, when the filler began and the longest silence the caller heard meanwhile
(``bridge/call/waiting.py`` keeps it short)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from bridge import events as ev
from bridge.devkit.ports import listen_port
from bridge.replay.direct import replay_call
from bridge.replay.script import load_script
from bridge.replay.virtual import VirtualTimeLoop

TOOL_S = 5.0
WAV = Path(__file__).resolve().parent.parent / "call_scripts" / "tool_end_call" / "q1_order.wav"


def _script(folder: Path, port: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(WAV, folder / WAV.name)
    tool = {"name": "order_status", "method": "GET", "url": f"http://127.0.0.1:{port}/status", "timeout_s": 10,
            "parameters": {"type": "object", "properties": {"order": {"type": "string"}}}}  # fmt: skip
    script = {
        "description": f"A business tool answering in {TOOL_S:g} s.",
        "dialplan": {"name": "bench-slow-tool", "match": ["4300"], "dialect": "ga", "greeting": "Greet the caller.",
                     "profile": {"instructions": "Order desk."}, "http_tools": [tool]},
        "emulator": {"greeting": "Orders, how can I help?"},
        "turns": [
            {"wait": "agent_done", "pause_ms": 300, "say": WAV.name, "hears": "Where is my order?",
             "reply": {"tool_call": {"name": "order_status", "arguments": {"order": "A-1"}}}},
            {"wait": "agent_done", "pause_ms": 300, "hangup": True},
        ],
    }  # fmt: skip
    (folder / "script.yaml").write_text(yaml.safe_dump(script, sort_keys=False))
    return folder


async def _one(folder: Path, dialect: str) -> dict[str, Any]:
    async def status(request: web.Request) -> web.Response:
        await asyncio.sleep(TOOL_S)
        return web.json_response({"status": "shipped"})

    app = web.Application()
    app.router.add_get("/status", status)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", listen_port()).start()
    try:
        run = await replay_call(load_script(_script(folder, runner.addresses[0][1])), dialect)
    finally:
        await runner.cleanup()
    timeline = run.report["timeline"]
    started = next((t for t, k, _ in timeline if k == ev.ToolStarted.kind), None)
    filler = next((t for t, k, _ in timeline if k == ev.FillerSaid.kind), None)
    [call] = run.report["tool_calls"] or [{}]
    return {
        "ok": run.ok and call.get("outcome") == ev.ToolCallOutcome.OK,
        "tool_latency_ms": call.get("latency_ms"),
        "filler_after_ms": None if started is None or filler is None else round(filler - started, 1),
        "longest_silence_ms": call.get("longest_silence_ms"),
    }


def measure(dialects: list[str]) -> dict[str, dict[str, Any]]:
    """Each dialect's slow-tool call, in a fresh virtual-time loop."""
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-slow-tool-") as tmp:
        for dialect in dialects:
            with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
                out[dialect] = runner.run(_one(Path(tmp) / dialect, dialect))
    return out
