"""An MCP tool's ``tools/call`` joins the call's trace: a real MCP server (the ``mcp`` package's, streamable HTTP,
served by uvicorn) records each call's ``traceparent`` header and ``params._meta``; the call (the replay's direct
path against the emulator) is traced by the official SDK into memory. Both name the call's trace and the tool's own
span, and that span carries the RPC attributes, never the call's arguments."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from bridge.replay.direct import DirectOptions, replay_call
from bridge.replay.script import load_script
from bridge.replay.virtual import VirtualTimeLoop
from bridge.runtime import tracecontext
from tests.integration.tools.test_call_context import CALLER, SECRET
from tests.integration.tools.test_mcp_call_context import crm_server, write_script
from tests.integration.tools.test_mcp_tools import serving

pytest.importorskip("opentelemetry.sdk.trace", reason="the OpenTelemetry SDK (the otel extra) is not installed")
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bridge.runtime.calltrace import CallTrace

pytestmark = pytest.mark.integration


def recording(received: list[dict[str, Any]]) -> Any:
    """The CRM server behind a record of each ``tools/call``: its name, arguments, ``_meta.traceparent`` and
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
                meta = params.get("_meta") or {}
                received.append({"name": params["name"], "header": headers.get("traceparent"),
                                 "meta": meta.get("traceparent")})  # fmt: skip
            replay = [{"type": "http.request", "body": body, "more_body": False}]

            async def again() -> Any:
                return replay.pop() if replay else await receive()

            return await app(scope, again, send)

        return asgi

    return make


def test_an_mcp_tools_call_carries_the_traceparent_of_its_tool_span(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_CONTEXT_SECRET", SECRET)
    received: list[dict[str, Any]] = []
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    identity = {"call_id": "c-mcp", "dialplan": "crm-mcp", "dialect": "ga", "model": "gpt-realtime"}
    trace = CallTrace(provider.get_tracer("test"), identity, lambda: "gpt-realtime")

    async def body(port: int) -> Any:
        tracecontext.CURRENT.set(trace)  # as the worker does in the call's task
        options = DirectOptions(listeners=[trace.listen])
        return await replay_call(load_script(write_script(tmp_path, port)), "ga", options)

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        run = runner.run(serving([], body, make=recording(received)))
    assert run.ok, [c for c in run.checks if not c.ok]
    trace.end()
    spans = exporter.get_finished_spans()
    root = trace.root.get_span_context()
    tools = [s for s in spans if s.name.startswith("tool ")]
    called = [s for s in tools if (s.attributes or {}).get("rpc.method") == "tools/call"]
    assert [s.name for s in called] == ["tool verify_customer", "tool order_lookup"]  # the guarded one never left
    assert [r["name"] for r in received] == ["verify_customer", "order_lookup"]
    for span, got in zip(called, received, strict=True):
        assert span.context is not None and span.parent is not None and span.parent.span_id == root.span_id
        assert got["header"] == got["meta"]  # the same in the HTTP request and in MCP's _meta
        assert tracecontext.parse(got["header"] or "") == (root.trace_id, span.context.span_id, True)
        attrs = dict(span.attributes or {})
        assert attrs["rpc.system"] == "jsonrpc" and attrs["mcp.method.name"] == "tools/call"
        assert attrs["server.address"] == "127.0.0.1" and attrs["callbridge.tool.outcome"] == "ok"
    text = json.dumps([json.loads(s.to_json()) for s in spans])
    for private in ("VICTIM-ORDER-77", "1980-02-29", "C-123", CALLER, CALLER[-7:]):  # arguments, answers, the caller
        assert private not in text, private
