"""A dialplan's MCP server in real sessions: a real MCP server (the ``mcp`` package's, streamable HTTP, served by
uvicorn on the replay's own loop) started by the test; its tools listed when the call is set up, offered to the
model, and one of them called by the bridge in every dialect, its result read out by the agent. Arguments that fail a
tool's ``inputSchema`` never reach the server (it records every ``tools/call`` it receives), and an answer over the
server's ``max_response_bytes`` or past its ``timeout_s`` is refused by name, whether it comes as an event stream or
as JSON.

In virtual time the client's real I/O (its address lookup runs in a thread) lets the loop's clock jump to its next
timer meanwhile, so the plan gives the listing and the answer a generous budget; the first test lists on a normal
loop."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml
from mcp.server.mcpserver import MCPServer

from bridge.dialplan import Dialplan
from bridge.replay.compare import DialectRun
from bridge.replay.direct import replay_call
from bridge.replay.script import load_script
from bridge.replay.virtual import VirtualTimeLoop
from bridge.tools.mcp import McpTools
from bridge.tools.runner import CallTools
from bridge.tools.spec import McpServer

pytestmark = pytest.mark.integration
SCRIPTS = Path(__file__).resolve().parents[3] / "call_scripts"


def order_server(calls: list[str]) -> MCPServer:
    server = MCPServer("orders")

    @server.tool()
    async def order_lookup(order: str) -> dict[str, str]:
        """Look up an order by its number."""
        calls.append(order)
        return {"order": order, "status": "shipped", "eta": "Friday"}

    @server.tool()
    async def refund(order: str) -> str:
        """Refund an order (not offered: the plan lists only order_lookup)."""
        return "refunded"

    return server


def plan(port: int) -> dict[str, Any]:
    return {
        "name": "orders-mcp", "match": ["4200"], "dialect": "ga", "greeting": "Greet the caller.",
        "profile": {"instructions": "Acme order desk.", "tools": ["end_call"]},
        "answer_timeout_s": 10,
        "mcp_servers": [{"name": "orders", "url": f"http://127.0.0.1:{port}/mcp", "tools": ["order_lookup"],
                         "list_timeout_s": 10, "timeout_s": 30}],
    }  # fmt: skip


def write_script(tmp_path: Path, port: int) -> Path:
    folder = tmp_path / "mcp_lookup"
    folder.mkdir()
    shutil.copy(SCRIPTS / "tool_end_call" / "q1_order.wav", folder / "q1_order.wav")
    script = {
        "description": "An MCP server's tool, listed at the start and called.",
        "dialplan": plan(port),
        "emulator": {"greeting": "Acme orders, how can I help?"},
        "turns": [
            {"wait": "agent_done", "pause_ms": 300, "say": "q1_order.wav", "hears": "Where is my order A-42?",
             "reply": {"tool_call": {"name": "order_lookup", "arguments": {"order": "A-42"}}}},
            {"wait": "agent_done", "pause_ms": 300, "hangup": True},
        ],
        "expect": {"agent_keywords": ["shipped"], "max_errors": 0},
        "max_duration_s": 30,
    }  # fmt: skip
    (folder / "script.yaml").write_text(yaml.safe_dump(script, sort_keys=False))
    return folder


async def serving(
    calls: list[str],
    body: Any,
    wrap: Callable[[Any], Any] = lambda app: app,
    make: Callable[[list[str]], Any] | None = None,
) -> Any:
    """``body(port)`` while uvicorn serves ``make(calls)`` (an ASGI app; the order server's by default)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = make(calls) if make is not None else order_server(calls).streamable_http_app()
    config = uvicorn.Config(wrap(app), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110  # uvicorn.Server says so by a flag only, it has no event
        await asyncio.sleep(0.01)
    try:
        return await body(sock.getsockname()[1])
    finally:
        server.should_exit = True
        await task


def test_the_servers_tools_are_listed_and_offered_to_the_model(tmp_path: Path) -> None:
    async def body(port: int) -> list[tuple[str, dict[str, Any]]]:
        tools = CallTools(Dialplan.model_validate(plan(port)))
        opened: list[str] = []

        async def connect() -> str:
            opened.append("session")
            return "client"

        connect_first, profile = tools.wrap(connect, lambda: Dialplan.model_validate(plan(port)).profile)
        assert await connect_first() == "client" and opened == ["session"]  # listed, then connected
        try:
            return [(t.name, t.parameters) for t in profile().tools]
        finally:
            await tools.close()

    offered = asyncio.run(serving([], body))
    assert [name for name, _ in offered] == ["end_call", "order_lookup"]  # refund is not in the plan's list
    assert offered[1][1]["properties"]["order"]["type"] == "string" and offered[1][1]["required"] == ["order"]


@pytest.mark.parametrize("dialect", ["beta", "ga", "live"])
def test_an_mcp_tool_is_called_in_a_real_session_and_its_result_reaches_the_model(tmp_path: Path, dialect: str) -> None:
    calls: list[str] = []

    async def body(port: int) -> DialectRun:
        return await replay_call(load_script(write_script(tmp_path, port)), dialect)

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        run = runner.run(serving(calls, body))
    assert run.ok, ([c for c in run.checks if not c.ok], run.report["agent_transcript"])
    assert calls == ["A-42"]  # the server ran the tool with the model's arguments
    [call] = run.report["tool_calls"]
    assert (call["name"], call["outcome"]) == ("order_lookup", "ok")
    assert call["output"]["ok"] is True and "shipped" in call["output"]["content"][0]
    said = " ".join(run.report["agent_transcript"])
    assert "shipped" in said and "Friday" in said  # the result reached the model, which read it out


SECRET = "mcp-bearer-5d1e9a"


def guarded(seen: list[str]) -> Callable[[Any], Any]:
    """The server behind a check of its ``Authorization`` header (401 without the secret); ``seen`` gets each
    request's header."""

    def wrap(app: Any) -> Any:
        async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                got = dict(scope["headers"]).get(b"authorization", b"").decode()
                seen.append(got)
                if got != f"Bearer {SECRET}":
                    await send({"type": "http.response.start", "status": 401, "headers": []})
                    await send({"type": "http.response.body", "body": b"unauthorized"})
                    return
            await app(scope, receive, send)

        return asgi

    return wrap


def test_an_mcp_servers_secret_header_goes_with_each_request_and_never_into_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ORDERS_MCP_TOKEN", SECRET)
    monkeypatch.delenv("UNSET_MCP_TOKEN", raising=False)
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token-0c4b\n")
    seen: list[str] = []

    async def offered(port: int, header: dict[str, str], call: bool = False) -> tuple[list[str], str]:
        server = McpServer(
            name="orders",
            url=f"http://127.0.0.1:{port}/mcp",
            list_timeout_s=5,
            headers={"Authorization": {**header, "prefix": "Bearer "}},
        )  # type: ignore[dict-item]  # validated from plan data
        tools = McpTools((server,))
        try:
            await tools.list_tools(set())
            output = (await tools.run("order_lookup", '{"order": "A-42"}')).output if call else ""
            return [t.name for t in tools.offered], output
        finally:
            await tools.close()

    async def body(port: int) -> list[tuple[list[str], str]]:
        return [
            await offered(port, {"env": "ORDERS_MCP_TOKEN"}, call=True),
            await offered(port, {"file": str(wrong)}),
            await offered(port, {"env": "UNSET_MCP_TOKEN"}),
        ]

    calls: list[str] = []
    with caplog.at_level("INFO", logger="bridge.tools"):
        (with_secret, output), (with_wrong, _), (unset, _) = asyncio.run(serving(calls, body, guarded(seen)))
    assert with_secret == ["order_lookup", "refund"] and calls == ["A-42"] and "shipped" in output
    assert with_wrong == [] and unset == []  # refused by the server; not even asked
    assert seen and set(seen) == {f"Bearer {SECRET}", "Bearer not-the-token-0c4b"}
    assert "the secret of header Authorization is not set" in caplog.text
    assert SECRET not in caplog.text and "not-the-token-0c4b" not in caplog.text


def shop_server(calls: list[str], release: asyncio.Event, json_response: bool) -> Any:
    """Tools with a schema to break, an answer of any size, and one that answers when ``release`` is set; ``calls``
    gets each JSON-RPC ``tools/call`` as the server receives it, before the SDK's own checks."""
    server = MCPServer("shop")

    @server.tool()
    async def place_order(order: str, quantity: int) -> str:
        """Order ``quantity`` of ``order``."""
        return f"{quantity} of {order} ordered"

    @server.tool()
    async def report(size: int) -> str:
        """A report of ``size`` characters."""
        return "x" * size

    @server.tool()
    async def slow() -> str:
        """Answers late."""
        await release.wait()
        return "late"

    return recording(calls)(server.streamable_http_app(json_response=json_response))


def recording(calls: list[str], arguments: list[dict[str, Any]] | None = None) -> Callable[[Any], Any]:
    """The app behind a record of each ``tools/call`` request it receives (the tool's name, and its arguments into
    ``arguments``), as it arrives."""

    def wrap(app: Any) -> Any:
        async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["method"] != "POST":
                return await app(scope, receive, send)
            parts, more = [], True
            while more:
                message = await receive()
                parts.append(message.get("body", b""))
                more = message.get("more_body", False)
            body = b"".join(parts)
            rpc = json.loads(body)
            if rpc.get("method") == "tools/call":
                calls.append(rpc["params"]["name"])
                if arguments is not None:
                    arguments.append(rpc["params"].get("arguments"))
            replay = [{"type": "http.request", "body": body, "more_body": False}]

            async def again() -> Any:
                return replay.pop() if replay else await receive()

            return await app(scope, again, send)

        return asgi

    return wrap


def shop(port: int) -> McpTools:
    return McpTools((McpServer(name="shop", url=f"http://127.0.0.1:{port}/mcp", list_timeout_s=10, timeout_s=3,
                               max_response_bytes=2000),))  # fmt: skip


def test_arguments_that_fail_the_tools_schema_never_reach_the_server() -> None:
    calls: list[str] = []

    async def body(port: int) -> list[tuple[str | None, str]]:
        tools = shop(port)
        try:
            await tools.list_tools(set())
            bad = ['{"order": "A-42", "quantity": "two"}', '{"order": "A-42"}', "[1]", "{"]
            out = [await tools.run("place_order", a) for a in bad]
            assert calls == []  # not one of them was sent
            out.append(await tools.run("place_order", '{"order": "A-42", "quantity": 2}'))
            return [(o.error, json.loads(o.output)["error"]["message"] if o.error else o.output) for o in out]
        finally:
            await tools.close()

    got = asyncio.run(serving(calls, body, make=lambda c: shop_server(c, asyncio.Event(), False)))
    assert got[:4] == [
        ("bad_arguments", "place_order: quantity: 'two' is not of type 'integer'"),
        ("bad_arguments", "place_order: 'quantity' is a required property"),
        ("bad_arguments", "place_order: the arguments must be a JSON object"),
        ("bad_arguments", "place_order: the arguments are not valid JSON"),
    ]
    assert got[4][0] is None and "2 of A-42 ordered" in got[4][1] and calls == ["place_order"]


@pytest.mark.parametrize("json_response", [False, True], ids=["event_stream", "json"])
def test_an_mcp_answer_over_the_cap_or_past_the_time_is_refused_by_name(
    json_response: bool, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    release = asyncio.Event()

    async def body(port: int) -> list[tuple[str | None, str]]:
        tools = shop(port)
        try:
            await tools.list_tools(set())
            out = [await tools.run("report", '{"size": 5000}'), await tools.run("slow", "{}")]
            release.set()
            out.append(await tools.run("report", '{"size": 500}'))  # the same server, within the cap
            return [(o.error, o.output) for o in out]
        finally:
            release.set()
            await tools.close()

    with caplog.at_level("WARNING", logger="bridge.tools"):
        big, late, fits = asyncio.run(serving(calls, body, make=lambda c: shop_server(c, release, json_response)))
    assert calls == ["report", "slow", "report"]  # each was asked; the first answered too much
    error = {"ok": False, "error": {"type": "too_large", "message": "the shop service did not answer"}}
    assert big == ("too_large", json.dumps(error, separators=(",", ":")))
    assert "MCP tool report of shop: http://127.0.0.1:" in caplog.text
    assert "/mcp answered more than max_response_bytes (2000)" in caplog.text
    assert late[0] == "timeout" and "MCP tool slow of shop: no answer within 3 s" in caplog.text
    assert fits[0] is None and json.loads(fits[1])["content"] == ["x" * 500]
