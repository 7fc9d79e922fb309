"""The call context, pins and verification first for an MCP server's tools (issue 62, item 17): a real MCP server
(the ``mcp`` package's, streamable HTTP, served by uvicorn) with a verifying tool and an order lookup that takes the
customer's id. The server records each ``tools/call`` as it arrives: its arguments, its ``params._meta`` and its HTTP
headers. The lookup is not called before the caller is verified; its ``customer_id`` is pinned (out of the schema the
model sees, the verified id sent whatever the model says); the signed context rides in ``_meta`` and as headers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp.server.mcpserver import MCPServer

from bridge.dialplan import Dialplan
from bridge.replay.compare import DialectRun
from bridge.replay.direct import replay_call
from bridge.replay.script import load_script
from bridge.replay.virtual import VirtualTimeLoop
from bridge.tools.runner import CallTools
from tests.integration.tools.test_call_context import CALLER, CONTEXT_HEADERS, OTHER, SECRET, by_hand, turn
from tests.integration.tools.test_call_context import with_standard_webhooks as verifies
from tests.integration.tools.test_mcp_tools import SCRIPTS, serving

pytestmark = pytest.mark.integration
META_KEYS = {h: "callbridge/" + h.removeprefix("callbridge-") for h in CONTEXT_HEADERS}


def crm_server(calls: list[str]) -> MCPServer:
    server = MCPServer("crm")

    @server.tool()
    async def verify_customer(dob: str) -> dict[str, Any]:
        """Verify the caller by their date of birth."""
        return {"verified": True, "customer_id": "C-123"} if dob == "1980-02-29" else {"verified": False}

    @server.tool()
    async def order_lookup(order: str, customer_id: str) -> dict[str, str]:
        """Look up one of the customer's orders."""
        return {"order": order, "customer_id": customer_id, "status": "no such order for this customer"}

    return server


def recording(received: list[dict[str, Any]]) -> Any:
    """The server behind a record of each ``tools/call``: name, arguments, ``_meta``, the context headers and the
    ``traceparent`` header."""

    def make(calls: list[str]) -> Any:
        app = crm_server(calls).streamable_http_app()

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
                headers = {k.decode(): v.decode() for k, v in scope["headers"]}
                params = rpc["params"]
                received.append({"name": params["name"], "arguments": params.get("arguments"),
                                 "meta": params.get("_meta") or {}, "traceparent": headers.get("traceparent"),
                                 "headers": {h: headers.get(h) for h in CONTEXT_HEADERS}})  # fmt: skip
            replay = [{"type": "http.request", "body": body, "more_body": False}]

            async def again() -> Any:
                return replay.pop() if replay else await receive()

            return await app(scope, again, send)

        return asgi

    return make


def plan(port: int) -> dict[str, Any]:
    return {
        "name": "crm-mcp", "match": ["4600"], "dialect": "ga", "greeting": "Greet the caller.",
        "profile": {"instructions": "Acme order desk.", "tools": ["end_call"]}, "answer_timeout_s": 10,
        "tool_context": {"secret": {"env": "CRM_CONTEXT_SECRET"}},
        "verifiers": {"verify_customer": ["customer_id"]},
        "mcp_servers": [{"name": "crm", "url": f"http://127.0.0.1:{port}/mcp", "list_timeout_s": 10, "timeout_s": 30,
                         "pin": {"customer_id": "verified.customer_id"}, "verify_before": "verify_customer"}],
    }  # fmt: skip


def write_script(tmp_path: Path, port: int) -> Path:
    folder = tmp_path / "crm_mcp"
    folder.mkdir()
    shutil.copy(SCRIPTS / "tool_end_call" / "q1_order.wav", folder / "q1_order.wav")
    script = {
        "description": "An MCP server's order lookup waits for its verifying tool; the customer's id is pinned.",
        "dialplan": plan(port),
        "caller": CALLER,
        "emulator": {"greeting": "Acme orders, how can I help?"},
        "turns": [
            turn("order_lookup", {"order": "VICTIM-ORDER-77"}),
            turn("verify_customer", {"dob": "1980-02-29"}),
            turn("order_lookup", {"order": "VICTIM-ORDER-77", "customer_id": "C-999"}),
            {"wait": "agent_done", "pause_ms": 300, "hangup": True},
        ],
        "expect": {"max_errors": 0},
        "max_duration_s": 60,
    }
    (folder / "script.yaml").write_text(yaml.safe_dump(script, sort_keys=False))
    return folder


def test_an_mcp_tool_gets_the_signed_context_its_pinned_argument_and_waits_for_verification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_CONTEXT_SECRET", SECRET)
    received: list[dict[str, Any]] = []
    port: list[int] = []

    async def body(at: int) -> tuple[DialectRun, dict[str, Any]]:
        port.append(at)
        tools = CallTools(Dialplan.model_validate(plan(at)))
        try:
            await tools.mcp.list_tools(set())
            offered = {t.name: t.parameters for t in tools.mcp.offered}
        finally:
            await tools.close()
        return await replay_call(load_script(write_script(tmp_path, at)), "ga"), offered

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        run, offered = runner.run(serving([], body, make=recording(received)))
    assert run.ok, ([c for c in run.checks if not c.ok], run.report["agent_transcript"])
    assert set(offered["order_lookup"]["properties"]) == {"order"}  # the model never sees customer_id
    assert set(offered["verify_customer"]["properties"]) == {"dob"}
    # the lookup reached the server once, after the verification, with the verified id
    assert [(r["name"], r["arguments"]) for r in received] == [
        ("verify_customer", {"dob": "1980-02-29"}),
        ("order_lookup", {"order": "VICTIM-ORDER-77", "customer_id": "C-123"}),
    ]
    for r in received:  # the same signed context in _meta and in the request's headers
        assert r["headers"] == {h: r["meta"].get(key) for h, key in META_KEYS.items()}
        assert by_hand(SECRET, r["headers"]) and verifies(SECRET, r["headers"])
        assert not verifies(OTHER, r["headers"])
    verify, lookup = (json.loads(r["headers"]["callbridge-context"]) for r in received)
    assert (verify["tool"], verify["verified"], verify["caller"]) == ("verify_customer", None, CALLER)
    assert lookup["verified"] == {"tool": "verify_customer", "customer_id": "C-123"}
    assert lookup["call_id"] == run.report["call_id"] and lookup["dialplan"] == "crm-mcp"
    for r, document in zip(received, (verify, lookup), strict=True):  # signed for its own call: URL and arguments
        canonical = json.dumps(r["arguments"], sort_keys=True, separators=(",", ":")).encode()
        assert document["request"] == {"method": "tools/call", "url": f"http://127.0.0.1:{port[0]}/mcp",
                                       "sha256": hashlib.sha256(canonical).hexdigest()}  # fmt: skip
    outcomes = [(c["name"], c["outcome"]) for c in run.report["tool_calls"]]
    assert outcomes == [("order_lookup", "unverified"), ("verify_customer", "ok"), ("order_lookup", "ok")]
    guards = [s for _, k, s in run.report["timeline"] if k == "tool_guarded"]
    assert guards == ["order_lookup: not called, the caller is not verified (verify_customer)",
                      "order_lookup: the model's customer_id discarded (pinned by the plan)"]  # fmt: skip
