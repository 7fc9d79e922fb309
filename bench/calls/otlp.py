"""The otel path's collector: a local OTLP/HTTP receiver in the bench's process (so its CPU is the bench's, not the
workers'). It takes every export (``POST /v1/traces``) and answers it as a collector does (200, an empty
``ExportTraceServiceResponse``), counting the requests, their bytes and, with ``opentelemetry-proto`` installed, the
spans in them: the workers' spans did reach it."""

from __future__ import annotations

from aiohttp import web

PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"


def span_count(body: bytes) -> int | None:
    """The spans of one ``ExportTraceServiceRequest``; None without ``opentelemetry-proto`` (or an unreadable body)."""
    try:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    except ImportError:
        return None
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception:
        return None
    return sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)


class OtlpSink:
    """See the module doc; :meth:`taken` says what came since the last call."""

    def __init__(self) -> None:
        self.requests = self.bytes = self.spans = 0
        self.counted = True  # every body's spans were counted (opentelemetry-proto is there)
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._seen = (0, 0, 0)

    async def _export(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests += 1
        self.bytes += len(body)
        found = span_count(body)
        self.counted = self.counted and found is not None
        self.spans += found or 0
        return web.Response(body=b"", content_type=PROTOBUF)

    async def start(self) -> OtlpSink:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(PATH, self._export)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def endpoint(self) -> str:
        """``OTEL_EXPORTER_OTLP_ENDPOINT`` for the workers (the SDK adds ``/v1/traces``)."""
        return f"http://127.0.0.1:{self._port}"

    def taken(self) -> tuple[int, int, int | None]:
        """Requests, bytes and spans (None: not counted) since the last call."""
        now = (self.requests, self.bytes, self.spans)
        got = tuple(b - a for a, b in zip(self._seen, now, strict=True))
        self._seen = now
        return got[0], got[1], got[2] if self.counted else None
