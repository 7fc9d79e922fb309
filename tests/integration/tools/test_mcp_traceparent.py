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
from tests.integration.tools.test_mcp_call_context import recording, write_script
from tests.integration.tools.test_mcp_tools import serving

pytest.importorskip("opentelemetry.sdk.trace", reason="the OpenTelemetry SDK (the otel extra) is not installed")
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bridge.runtime.calltrace import CallTrace

pytestmark = pytest.mark.integration


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
        assert got["traceparent"] == got["meta"].get("traceparent")  # the same in the HTTP request and in MCP's _meta
        assert tracecontext.parse(got["traceparent"] or "") == (root.trace_id, span.context.span_id, True)
        attrs = dict(span.attributes or {})
        assert attrs["rpc.system"] == "jsonrpc" and attrs["mcp.method.name"] == "tools/call"
        assert attrs["server.address"] == "127.0.0.1" and attrs["callbridge.tool.outcome"] == "ok"
    text = json.dumps([json.loads(s.to_json()) for s in spans])
    for private in ("VICTIM-ORDER-77", "1980-02-29", "C-123", CALLER, CALLER[-7:]):  # arguments, answers, the caller
        assert private not in text, private
