"""A dialplan's HTTP tools in real sessions (the replay's direct path: the call session against the emulator in
every dialect, GPT-Live through its delegation backend), against a real HTTP service the test starts (aiohttp, on
the replay's own loop, so that its 5 s answer takes 5 s of the call's virtual time)."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from bridge.replay.compare import DialectRun
from bridge.replay.direct import replay_call
from bridge.replay.script import load_script
from bridge.replay.virtual import VirtualTimeLoop

pytestmark = pytest.mark.integration
SCRIPTS = Path(__file__).resolve().parents[3] / "call_scripts"
ORDER = {"order": "A-42", "status": "shipped", "eta": "Friday"}
CARD = "4111111111111111"  # the caller's card, passed on by the model: the tools get it, no record keeps it


class OrderService:
    """The business system: ``/status`` answers in 5 s, as a real service may: chunked, its JSON cut in two chunks
    100 ms apart (``/stuck`` never in time)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/status", self.status)
        app.router.add_post("/stuck", self.stuck)
        return app

    async def status(self, request: web.Request) -> web.StreamResponse:
        self.requests.append({"path": "/status", "query": dict(request.query), "auth": request.headers.get("X-Key")})
        await asyncio.sleep(4.9)
        body = json.dumps({**ORDER, "order": request.query.get("order")}).encode()
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(body[:12])
        await asyncio.sleep(0.1)
        await resp.write(body[12:])
        await resp.write_eof()
        return resp

    async def stuck(self, request: web.Request) -> web.Response:
        self.requests.append({"path": "/stuck", "body": await request.json(), "auth": request.headers.get("X-Key")})
        await asyncio.sleep(60.0)
        return web.json_response({})


def write_script(tmp_path: Path, port: int, key_file: Path, turns: list[dict[str, Any]] | None = None) -> Path:
    folder = tmp_path / "order_lookup"
    folder.mkdir()
    for wav in ("q1_order.wav", "q2_goodbye.wav"):
        shutil.copy(SCRIPTS / "tool_end_call" / wav, folder / wav)
    secret = {"X-Key": {"file": str(key_file)}}
    order = {"type": "object", "properties": {"order": {"type": "string"}, "card": {"type": "string"}},
             "required": ["order"]}  # fmt: skip
    plan = {
        "name": "orders-http", "match": ["4100"], "dialect": "ga", "greeting": "Greet the caller.",
        "profile": {"instructions": "Acme order desk.", "tools": ["end_call"]},
        "http_tools": [
            {"name": "order_status", "description": "An order's status by its number.", "method": "GET",
             "parameters": order, "url": f"http://127.0.0.1:{port}/status", "headers": secret, "timeout_s": 8},
            {"name": "cancel_order", "description": "Cancel an order.", "method": "POST", "parameters": order,
             "url": f"http://127.0.0.1:{port}/stuck", "headers": secret, "timeout_s": 2,
             "unavailable": "the order system did not answer", "sensitive": True},
        ],
    }  # fmt: skip
    script = {
        "description": "Two HTTP tools: one answers in 5 s, one never in time.",
        "dialplan": plan,
        "emulator": {"greeting": "Acme orders, how can I help?"},
        "turns": turns or [
            {"wait": "agent_done", "pause_ms": 300, "say": "q1_order.wav", "hears": "Where is my order A-42?",
             "reply": {"tool_call": {"name": "order_status", "arguments": {"order": "A-42", "card": CARD}}}},
            {"wait": "agent_done", "pause_ms": 300, "say": "q2_goodbye.wav", "hears": "Then cancel it, please.",
             "reply": {"tool_call": {"name": "cancel_order", "arguments": {"order": "A-42", "card": CARD}}}},
            {"wait": "agent_done", "pause_ms": 300, "hangup": True},
        ],
        "expect": {"agent_keywords": ["shipped", "the order system did not answer"], "max_errors": 0},
        "max_duration_s": 40,
    }  # fmt: skip
    (folder / "script.yaml").write_text(yaml.safe_dump(script, sort_keys=False))
    return folder


async def with_service(
    tmp_path: Path, dialect: str, turns: list[dict[str, Any]] | None = None
) -> tuple[DialectRun, OrderService]:
    service = OrderService()
    runner = web.AppRunner(service.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    key = tmp_path / "key"
    key.write_text("s3cret-order-key\n")
    try:
        run = await replay_call(load_script(write_script(tmp_path, port, key, turns)), dialect)
    finally:
        await runner.cleanup()
    return run, service


@pytest.mark.parametrize("dialect", ["beta", "ga", "live"])
def test_http_tools_answer_the_model_and_a_timeout_is_spoken(tmp_path: Path, dialect: str) -> None:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        run, service = runner.run(with_service(tmp_path, dialect))
    report = run.report
    assert run.ok, ([c for c in run.checks if not c.ok], report["agent_transcript"])
    # the service got the arguments (query for GET, JSON for POST) and the secret header from its file
    assert service.requests == [
        {"path": "/status", "query": {"order": "A-42", "card": CARD}, "auth": "s3cret-order-key"},
        {"path": "/stuck", "body": {"order": "A-42", "card": CARD}, "auth": "s3cret-order-key"},
    ]
    status, cancel = report["tool_calls"]
    # stored masked as keys are (the plan's dtmf_visible_digits: 1), a sensitive tool's arguments not at all
    assert status["arguments"] == {"order": "A-4*", "card": "4" + "*" * 15}
    assert (status["name"], status["outcome"], status["output"]) == ("order_status", "ok", {**ORDER, "order": "A-4*"})
    assert cancel["arguments"] == "[sensitive: not stored]"
    stored = json.dumps(report)
    assert not any(CARD[i : i + 6] in stored for i in range(len(CARD) - 5))  # no six digits of the card in a row
    assert status["latency_ms"] == pytest.approx(5000, abs=100)  # the service's 5 s (virtual time)
    assert (cancel["name"], cancel["outcome"]) == ("cancel_order", "timeout")
    assert cancel["output"] == {"ok": False, "error": {"type": "timeout", "message": "the order system did not answer"}}
    assert cancel["latency_ms"] == pytest.approx(2000, abs=100)
    # each start and result is a typed event in the timeline, in order; the agent read the result out
    kinds = [(k, s.split("(")[0].split(":")[0]) for _, k, s in report["timeline"] if k.startswith("tool_")]
    assert kinds == [("tool_started", "order_status"), ("tool_result", "order_status"),
                     ("tool_started", "cancel_order"), ("tool_result", "cancel_order")]  # fmt: skip
    said = " ".join(report["agent_transcript"])
    assert "shipped" in said and said.index("shipped") < said.index("the order system did not answer")
    assert "s3cret" not in json.dumps(report)  # the secret is in no record


def silences(spans: list[tuple[float, float]], start: float, end: float) -> list[float]:
    """The stretches of [start, end] the caller heard no agent audio in, in ms."""
    gaps, at = [], start
    for a, b in sorted(spans):
        if b <= at or a >= end:
            continue
        gaps.append(a - at)
        at = max(at, b)
    return [*gaps, end - at] if at < end else gaps


@pytest.mark.parametrize("dialect", ["beta", "ga"])
def test_no_dead_air_while_a_tool_works(tmp_path: Path, dialect: str) -> None:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        run, _ = runner.run(with_service(tmp_path, dialect))
    timeline = run.report["timeline"]
    started = next(t for t, k, s in timeline if k == "tool_started" and s.startswith("order_status"))
    finished = next(t for t, k, s in timeline if k == "tool_result" and s.startswith("order_status"))
    fillers = [(t, s) for t, k, s in timeline if k == "filler"]
    first = fillers[0]
    assert started + 1000 <= first[0] <= started + 1500 and first[1].startswith("filler after 10")
    heard = [(a, b) for a, b in run.agent_spans if b > started]
    assert heard[0][0] - started <= 1500, heard  # the filler is heard within 1.5 s of the tool call
    assert max(silences(run.agent_spans, started, finished)) <= 1500, (started, finished, run.agent_spans)
    # the bridge's own measure of the longest silence during the wait agrees with what the caller heard
    measured = run.report["tool_calls"][0]["longest_silence_ms"]
    heard_gap = max(silences(run.agent_spans, started, finished))
    assert 0 < measured <= 1500 and abs(measured - heard_gap) <= 300, (measured, heard_gap)
    waits = [*run.report["latency_ms"]["caller_turn"], *(t["longest_silence_ms"] for t in run.report["tool_calls"])]
    assert run.report["longest_silence_ms"] == max(waits)  # the call's record: its longest wait in silence
    holds = [(t, s) for t, k, s in timeline if k == "wait_hold"]
    assert [s for t, s in holds if started <= t <= finished] == ["soft hold on", "soft hold off"]
    lines = [s.split(": ", 1)[1] for _, s in fillers]
    assert all(a != b for a, b in itertools.pairwise(lines))  # never the same line twice in a row


def test_the_caller_can_barge_in_while_a_tool_works_and_still_gets_the_result(tmp_path: Path) -> None:
    turns = [
        {"wait": "agent_done", "pause_ms": 300, "say": "q1_order.wav", "hears": "Where is my order A-42?",
         "reply": {"tool_call": {"name": "order_status", "arguments": {"order": "A-42"}}}},
        # a second into the filler line the agent says while the tool works: the caller speaks over it
        {"barge_in_after_ms": 1000, "say": "q2_goodbye.wav", "hears": "Are you still there?"},
        {"wait": "agent_done", "timeout_ms": 20000, "pause_ms": 300, "hangup": True},
    ]  # fmt: skip
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        run, _ = runner.run(with_service(tmp_path, "ga", turns))
    timeline = run.report["timeline"]
    started = next(t for t, k, _ in timeline if k == "tool_started")
    finished = next(t for t, k, _ in timeline if k == "tool_result")
    barge = next(t for t, k, _ in timeline if k == "barge_in")
    assert started < barge < finished  # the caller spoke over the filler while the tool worked
    stopped = next(t for t, k, _ in timeline if k == "speech_stopped" and t > barge)
    held = [t for t, k, s in timeline if k == "wait_hold" and s == "soft hold on"]
    assert all(not barge <= t < stopped for t in held), (held, barge, stopped)  # nothing started over the caller
    assert any("shipped" in x for x in run.report["agent_transcript"])  # the result still reached the caller
    assert run.report["errors"] == []
