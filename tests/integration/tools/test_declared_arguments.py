"""Tools send only what they declare: the model (the emulator's scripted function calls) sends arguments the tool
does not declare, or one its URL already fixes, and the tool's server (a real HTTP server, a real MCP server, both
started by the test) logs exactly what it received: the call is refused with a ``bad_arguments`` error the model
reads, nothing of it is sent, and a call with only the declared arguments goes through as declared."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from bridge.dialplan import Dialplan, check_file
from bridge.replay.compare import DialectRun
from bridge.replay.direct import replay_call
from bridge.replay.script import load_script
from bridge.replay.virtual import VirtualTimeLoop
from bridge.tools.runner import CallTools
from tests.integration.tools.test_mcp_tools import SCRIPTS, order_server, recording, serving

pytestmark = pytest.mark.integration
STEERED = {"order": "A-42", "account": "victim-corp", "admin": True}  # what the talked-into model sends


class LoggingService:
    """The tool's server: logs each request's method, path, raw query string and raw body, answers JSON."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        self.received.append((request.method, request.path, request.query_string, body))
        return web.json_response({"order": request.query.get("order", "A-42"), "status": "shipped"})


def turn(name: str, arguments: dict[str, Any], wav: str = "q1_order.wav") -> dict[str, Any]:
    return {"wait": "agent_done", "pause_ms": 300, "say": wav, "hears": "Where is my order A-42?",
            "reply": {"tool_call": {"name": name, "arguments": arguments}}}  # fmt: skip


def write_script(tmp_path: Path, plan: dict[str, Any], turns: list[dict[str, Any]]) -> Path:
    folder = tmp_path / plan["name"]
    folder.mkdir()
    shutil.copy(SCRIPTS / "tool_end_call" / "q1_order.wav", folder / "q1_order.wav")
    script = {
        "description": "The model sends arguments the tools do not declare.",
        "dialplan": plan,
        "emulator": {"greeting": "Acme orders, how can I help?"},
        "turns": [*turns, {"wait": "agent_done", "pause_ms": 300, "hangup": True}],
        "expect": {"max_errors": 0},
        "max_duration_s": 60,
    }
    (folder / "script.yaml").write_text(yaml.safe_dump(script, sort_keys=False))
    return folder


def http_plan(port: int) -> dict[str, Any]:
    order = {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]}
    base = f"http://127.0.0.1:{port}"
    return {
        "name": "orders-declared", "match": ["4300"], "dialect": "ga", "greeting": "Greet the caller.",
        "profile": {"instructions": "Acme order desk.", "tools": ["end_call"]},
        "http_tools": [
            {"name": "order_status", "method": "GET", "parameters": order, "url": f"{base}/status?account=acme"},
            {"name": "order_note", "method": "POST", "parameters": order, "url": f"{base}/note?account=acme"},
            {"name": "order_open", "method": "POST", "parameters": order, "url": f"{base}/open?account=acme",
             "extra_arguments": True},
        ],
    }  # fmt: skip


async def with_service(tmp_path: Path, dialect: str) -> tuple[DialectRun, LoggingService]:
    service = LoggingService()
    app = web.Application()
    app.router.add_route("*", "/{path}", service.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    turns = [
        turn("order_status", STEERED),
        turn("order_note", STEERED),
        turn("order_open", {"order": "A-42", "account": "victim-corp"}),  # open to extras, never to the URL's own
        turn("order_open", {"order": "A-42", "note": "gift"}),
        turn("order_status", {"order": "A-42"}),
        turn("order_note", {"order": "A-42"}),
    ]
    try:
        run = await replay_call(load_script(write_script(tmp_path, http_plan(port), turns)), dialect)
    finally:
        await runner.cleanup()
    return run, service


@pytest.mark.parametrize("dialect", ["ga", "live"])
def test_an_http_tool_sends_only_its_declared_arguments_and_never_overrides_its_url(
    tmp_path: Path, dialect: str
) -> None:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        run, service = runner.run(with_service(tmp_path, dialect))
    # exactly what the server received: the steered calls never came; the declared ones came as declared
    assert service.received == [
        ("POST", "/open", "account=acme", '{"order": "A-42", "note": "gift"}'),
        ("GET", "/status", "account=acme&order=A-42", ""),
        ("POST", "/note", "account=acme", '{"order": "A-42"}'),
    ]
    calls = run.report["tool_calls"]
    assert [(c["name"], c["outcome"]) for c in calls] == [
        ("order_status", "bad_arguments"), ("order_note", "bad_arguments"), ("order_open", "bad_arguments"),
        ("order_open", "ok"), ("order_status", "ok"), ("order_note", "ok"),
    ]  # fmt: skip
    refused = [c["output"]["error"]["message"] for c in calls[:3]]
    assert refused == [
        "order_status: undeclared arguments refused, nothing sent: account, admin (it takes: order)",
        "order_note: undeclared arguments refused, nothing sent: account, admin (it takes: order)",
        "order_open: account: fixed by the tool's URL, nothing sent",
    ]


def test_the_schema_the_model_sees_is_closed_unless_the_plan_opens_it() -> None:
    plan = Dialplan.model_validate(http_plan(8080))
    seen = {t.name: t.parameters for t in plan.profile.tools}
    assert seen["order_status"]["additionalProperties"] is False
    assert seen["order_note"]["additionalProperties"] is False
    assert "additionalProperties" not in seen["order_open"]  # extra_arguments: true
    assert "additionalProperties" not in plan.http_tools[0].parameters  # the plan's own schema is left as written


@pytest.mark.parametrize(
    ("tool", "field", "says"),
    [
        ({"url": "http://127.0.0.1:1/s?account=acme&x=1",
          "parameters": {"type": "object", "properties": {"order": {}, "account": {}}}},
         "http_tools[0].url", "its query fixes account, which parameters.properties also declares"),
        ({"url": "http://127.0.0.1:1/s", "parameters": {"type": "object", "additionalProperties": True}},
         "http_tools[0].parameters", "additionalProperties is true: the model could send arguments the tool does"),
    ],
)  # fmt: skip
def test_a_plan_whose_tool_could_override_its_url_or_take_anything_is_refused_at_load(
    tmp_path: Path, tool: dict[str, Any], field: str, says: str
) -> None:
    path = tmp_path / "orders.yaml"
    plan = {"name": "orders", "match": ["4300"], "dialect": "ga", "greeting": "Hello.",
            "http_tools": [{"name": "lookup", "method": "GET", **tool}]}  # fmt: skip
    path.write_text(yaml.safe_dump(plan))
    [error] = check_file(path)
    assert (error.source, error.field) == (str(path), field)
    assert says in error.message


def mcp_recording(received: list[dict[str, Any]]) -> Any:
    """The order server behind a log of each ``tools/call``'s arguments as they arrive, before the SDK reads them."""
    return lambda calls: recording([], received)(order_server(calls).streamable_http_app())


def mcp_plan(port: int) -> dict[str, Any]:
    return {
        "name": "orders-mcp-declared", "match": ["4400"], "dialect": "ga", "greeting": "Greet the caller.",
        "profile": {"instructions": "Acme order desk.", "tools": ["end_call"]}, "answer_timeout_s": 10,
        "mcp_servers": [{"name": "orders", "url": f"http://127.0.0.1:{port}/mcp", "tools": ["order_lookup"],
                         "list_timeout_s": 10, "timeout_s": 30}],
    }  # fmt: skip


def test_an_mcp_tool_gets_only_its_declared_arguments(tmp_path: Path) -> None:
    received: list[dict[str, Any]] = []
    calls: list[str] = []

    async def body(port: int) -> tuple[DialectRun, dict[str, Any]]:
        tools = CallTools(Dialplan.model_validate(mcp_plan(port)))
        try:
            await tools.mcp.list_tools(set())
            offered = next(t.parameters for t in tools.mcp.offered if t.name == "order_lookup")
        finally:
            await tools.close()
        turns = [turn("order_lookup", STEERED), turn("order_lookup", {"order": "A-42"})]
        run = await replay_call(load_script(write_script(tmp_path, mcp_plan(port), turns)), "ga")
        return run, offered

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        run, offered = runner.run(serving(calls, body, make=mcp_recording(received)))
    assert offered["additionalProperties"] is False and set(offered["properties"]) == {"order"}
    assert received == [{"order": "A-42"}]  # the steered call never reached the server
    assert calls == ["A-42"]
    outcomes = [(c["name"], c["outcome"]) for c in run.report["tool_calls"]]
    assert outcomes == [("order_lookup", "bad_arguments"), ("order_lookup", "ok")]
    message = run.report["tool_calls"][0]["output"]["error"]["message"]
    assert message == "order_lookup: undeclared arguments refused, nothing sent: account, admin (it takes: order)"
