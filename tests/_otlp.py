"""An OTLP/HTTP trace receiver for tests (a collector's ``/v1/traces``): aiohttp on a private port, each
``ExportTraceServiceRequest`` decoded with the official protobufs (``opentelemetry-proto``) into plain spans."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def value_of(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return None if kind is None else getattr(v, kind)


@dataclass
class Span:
    name: str
    trace_id: str  # hex
    span_id: str
    parent_id: str  # "" for a root
    start_ns: int
    end_ns: int
    kind: int
    status: int  # 0 unset, 1 ok, 2 error
    attributes: dict[str, Any]
    resource: dict[str, Any]
    events: list[str] = field(default_factory=list)
    trace_state: str = ""  # W3C tracestate, as the span carries it


class OtlpReceiver:
    """POST /v1/traces: every span kept (:attr:`spans`) and every request's JSON form (:attr:`raw`: what a grep for
    private data reads). ``status`` answers each request (200: accepted)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.spans: list[Span] = []
        self.raw: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.headers.append(dict(request.headers))
        if self.status != 200:
            return web.Response(status=self.status)
        message = ExportTraceServiceRequest.FromString(body)
        self.raw.append(MessageToJson(message))
        for rs in message.resource_spans:
            resource = {a.key: value_of(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(Span(
                        s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.start_time_unix_nano,
                        s.end_time_unix_nano, s.kind, s.status.code,
                        {a.key: value_of(a.value) for a in s.attributes}, resource, [e.name for e in s.events],
                        s.trace_state,
                    ))  # fmt: skip
        answer = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type="application/x-protobuf")

    async def start(self) -> OtlpReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, done: Callable[[list[Span]], bool], within_s: float) -> list[Span]:
        deadline = time.monotonic() + within_s
        while not done(self.spans):
            if time.monotonic() > deadline:
                raise TimeoutError(f"spans so far: {[(s.name, s.trace_id[:8]) for s in self.spans]}")
            await asyncio.sleep(0.05)
        return self.spans
