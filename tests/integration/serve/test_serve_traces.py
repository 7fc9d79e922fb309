"""A call's trace from a real ``callbridge serve`` (``tracing: otlp``; one worker, Redis, the emulator as the model,
the pjsua2 softphone as the caller) to an OTLP/HTTP receiver that decodes every ``ExportTraceServiceRequest`` with
the official protobufs: one trace with the call's root span and its model session, caller turn, agent answer and
tool spans under it, the post-call work's span after the phone leg, the webhook's delivery attempt from serve's
deliverer in the same trace; the real HTTP tool server and the webhook endpoint get a ``traceparent`` of that trace,
the ``call.ended`` body its id; no caller number, transcript or tool argument in any span; the call's detail in the
console links its trace; the exporter's headers (an API key) in no log and no process's environment. And with the
collector down the call is the same, the dropped spans are counted on /metrics and said in one log line. A listed
trunk's traceparent and tracestate (SIPp) continue its trace, through serve's front (Kamailio) and straight to the
worker alike; anyone else's start a trace of their own."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from aiohttp import ClientSession, web
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from bridge.audio.wav import write_wav
from bridge.devkit.ports import can_bind, free_port, free_port_block
from bridge.devkit.redis_server import redis_server_binary
from bridge.runtime import tracecontext
from bridge.serve.front import kamailio_binary
from bridge.store.reportfile import read_reports
from bridge.webhooks.signing import new_secret
from tests.integration.edge._edge import Node, api, serve_node, softphone_call, wait_report

pytest.importorskip("opentelemetry.sdk.trace", reason="the OpenTelemetry SDK (the otel extra) is not installed")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="the OTLP/HTTP exporter is not installed")
pytest.importorskip("opentelemetry.proto", reason="opentelemetry-proto (the test extra) is not installed")
from _otlp import OtlpReceiver
from _webhooks import Receiver

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary")
NUMBER, RATE = "7400", 8000
SAID = "My number is +15551234567, where is order A-42?"  # the caller's words: in no span
SECRET = new_secret()
UI = "https://tempo.example.com/trace/{trace_id}"  # the console links a call's trace there


class ToolServer:
    """The contact center's order service: ``/status`` answers at once and keeps each request's traceparent."""

    def __init__(self) -> None:
        self.traceparents: list[str] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def status(self, request: web.Request) -> web.Response:
        self.traceparents.append(request.headers.get("traceparent", ""))
        return web.json_response({"order": request.query.get("order"), "status": "shipped"})

    async def start(self) -> ToolServer:
        app = web.Application()
        app.router.add_get("/status", self.status)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]
        return self


def plan(tools: int, hook: str, after: bool = False) -> dict[str, Any]:
    """The traced plan; ``after``: with post-call work (the model's summary and disposition, a check)."""
    work = {"post_call": {"summary": True, "dispositions": ["resolved", "escalated"]}, "checks": {"max_dead_air_s": 60}}
    return {
        "name": "traced",
        "match": [NUMBER],
        "dialect": "ga",
        "greeting": "Greet the caller.",
        "profile": {
            "instructions": "Answer briefly.",
            "audio_format": "pcm16",
            "input_transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
            "tools": ["end_call"],
        },
        "http_tools": [
            {
                "name": "order_status",
                "description": "An order's status by its number.",
                "method": "GET",
                "parameters": {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]},
                "url": f"http://127.0.0.1:{tools}/status",
                "timeout_s": 5,
            },
        ],
        "webhooks": [
            {"url": hook, "secret": {"env": "TRACED_WEBHOOK_SECRET"}, "events": ["call.ended"], "name": "crm"}
        ],
    } | (work if after else {})


def _speech(path: Path) -> Path:
    """4 s of quiet (the greeting), 1.5 s of tone (the caller's turn), then quiet."""
    t = np.arange(int(1.5 * RATE)) / RATE
    samples = np.concatenate([np.zeros(4 * RATE), np.sin(2 * np.pi * 300 * t) * 0.2, np.zeros(RATE)])
    write_wav(path, (samples * 32767).astype("<i2").tobytes())
    return path


@pytest_asyncio.fixture
async def parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[ToolServer, Receiver, OtlpReceiver]]:
    tools, hook, collector = await ToolServer().start(), await Receiver(SECRET).start(), await OtlpReceiver().start()
    monkeypatch.setenv("TRACED_WEBHOOK_SECRET", SECRET)
    try:
        yield tools, hook, collector
    finally:
        await hook.stop()
        await collector.stop()
        assert tools.runner is not None
        await tools.runner.cleanup()


def tracing_env(endpoint: str) -> dict[str, str]:
    return {
        "CALLBRIDGE_TRACING": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=otlp-s3cret-key",  # sent, never logged nor in a worker's environment
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        "CALLBRIDGE_LOG_FORMAT": "json",
        "CALLBRIDGE_TRACING_UI_URL": UI,
    }


async def a_call(edge: Node, tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    edge.emulator.queue_next(
        settings={"speed": 4.0},
        annotations={"turns": [{"hears": SAID, "reply": {"tool_call": {"name": "order_status",
                                                                        "arguments": {"order": "A-42"}}}}]},
    )  # fmt: skip
    phone = await softphone_call(
        edge.sip_port, NUMBER, "--play", str(_speech(tmp_path / "turn.wav")), "--hangup-after", "10"
    )
    assert phone["answered"], phone
    return phone, await wait_report(edge, phone["call_id"], within_s=30)


@pytest.mark.timeout(150)
async def test_a_call_is_one_trace_that_its_tool_server_and_webhook_endpoint_join(
    parts: tuple[ToolServer, Receiver, OtlpReceiver], tmp_path: Path
) -> None:
    tools, hook, collector = parts
    async with serve_node(tmp_path, [plan(tools.port, hook.url, after=True)], tracing_env(collector.endpoint)) as edge:
        _, report = await a_call(edge, tmp_path)
        (ended,) = await hook.wait_for(lambda r: len(r) >= 1, 30)
        trace_id = ended.body["data"]["trace_id"]
        spans = await collector.wait_for(
            lambda s: {"call", "webhook call.ended"} <= {x.name for x in s if x.trace_id == trace_id}, 30
        )
        detail = await api(edge, f"/api/calls/{report['call_id']}")
        health = await api(edge, "/healthz")
        environments = [Path(f"/proc/{p}/environ").read_bytes() for p in (edge.proc.pid, health["workers"][0]["pid"])]
        log = edge.log.read_text()
        exemplars, plain = await scrape(edge, OPENMETRICS), await scrape(edge, "")
    mine = [s for s in spans if s.trace_id == trace_id]
    names = sorted({s.name for s in mine})
    expected = {
        "call",
        "opening",
        "caller turn",
        "agent answer",
        "tool order_status",
        "post call",
        "webhook call.ended",
    }
    assert expected <= set(names), names
    assert any(n.startswith("realtime ") for n in names), names
    (root,) = [s for s in mine if s.name == "call"]
    assert root.parent_id == "" and ended.body["data"]["span_id"] == root.span_id
    for span in mine:
        if span is not root:
            assert span.parent_id == root.span_id, (span.name, span.parent_id)  # every span right under the call
        if span.resource.get("callbridge.worker") == "0":  # the worker's: inside the call's time
            assert root.start_ns <= span.start_ns <= span.end_ns <= root.end_ns, span.name
    attrs = root.attributes
    assert attrs["callbridge.call_id"] == report["call_id"] and attrs["callbridge.sip_call_id"] == report["sip_call_id"]
    assert (attrs["callbridge.dialplan"], attrs["callbridge.dialect"]) == ("traced", "ga")
    assert attrs["callbridge.variant"] and attrs["gen_ai.request.model"] == report["model"]
    assert attrs["callbridge.end_reason"] == report["end_reason"] and attrs["callbridge.outcome"] == report["outcome"]
    assert root.resource["service.name"] == "callbridge" and root.resource["callbridge.node"]
    assert root.resource["service.version"] and root.resource["deployment.environment"] == "test"
    (session,) = [s for s in mine if s.name.startswith("realtime ")]
    assert session.attributes["gen_ai.system"] == "openai"
    assert session.attributes["gen_ai.request.model"] == report["model"]
    (tool,) = [s for s in mine if s.name == "tool order_status"]
    assert tool.attributes["http.request.method"] == "GET" and tool.attributes["server.port"] == tools.port
    assert tool.attributes["callbridge.tool.outcome"] == "ok"
    (post,) = [s for s in mine if s.name == "post call"]  # after the phone leg: the summary, then the checks
    assert report["post_call"]["status"] == "ok" and post.attributes["callbridge.post_call.status"] == "ok"
    assert post.attributes["callbridge.post_call.asked"] is True and post.attributes["callbridge.checks.total"] == 1
    assert all(post.start_ns >= s.end_ns for s in mine if s.name in ("caller turn", "tool order_status"))
    (delivery,) = [s for s in mine if s.name == "webhook call.ended"]
    assert delivery.resource["callbridge.worker"] == "serve" and delivery.attributes["http.response.status_code"] == 204
    # the tool server and the webhook endpoint joined the call's trace: each names its client span as parent
    assert [tracecontext.parse(t) for t in tools.traceparents] == [(int(trace_id, 16), int(tool.span_id, 16), True)]
    assert tracecontext.parse(ended.traceparent) == (int(trace_id, 16), int(delivery.span_id, 16), True)
    # nothing private in any span: the caller (the softphone's user), its words, the tool's argument and answer
    exported = "\n".join(collector.raw)
    for private in ("softphone", "15551234567", "5551234567", "order A-42", "A-42", "shipped", "where is"):
        assert private not in exported, private
    assert collector.headers and all(h.get("x-api-key") == "otlp-s3cret-key" for h in collector.headers)
    assert "otlp-s3cret-key" not in log and "traces: exported to" in log
    assert not [env for env in environments if b"otlp-s3cret-key" in env]  # serve's blanked, the worker's never had it
    assert detail["call"]["trace_id"] == trace_id and detail["call"]["trace_url"] == UI.replace("{trace_id}", trace_id)
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    calls = [line for line in lines if line.get("call_id") == report["call_id"]]
    assert any("trace_id" in line for line in calls), calls[:5]  # the call's lines open its trace
    assert {(line["trace_id"], line["span_id"]) for line in lines if "trace_id" in line} == {(trace_id, root.span_id)}
    # the latency histograms' buckets name the call's trace and the span each measure was taken in (OpenMetrics)
    ids = {span.span_id: span.name for span in mine}
    turn = exemplars["callbridge_latency_seconds"]["turn"]
    assert turn["trace_id"] == trace_id and ids[turn["span_id"]] == "agent answer", (turn, ids)
    waited = exemplars["callbridge_tool_latency_seconds"]["order_status"]
    assert (waited["trace_id"], waited["span_id"]) == (trace_id, tool.span_id)
    assert not plain  # Prometheus' text format has no exemplars


OPENMETRICS = "application/openmetrics-text; version=1.0.0"


async def scrape(edge: Node, accept: str) -> dict[str, dict[str, dict[str, str]]]:
    """/metrics as ``accept`` asks, parsed: each histogram's exemplars by its segment (or tool), the latest bucket's
    (an exposition that does not parse fails the test)."""
    async with ClientSession() as http, http.get(edge.http + "/metrics", headers={"Accept": accept}) as r:
        text = await r.text()
        assert r.status == 200 and r.headers["Content-Type"].startswith(accept or "text/plain"), r.headers
    parse = openmetrics_families if accept else text_string_to_metric_families
    found: dict[str, dict[str, dict[str, str]]] = {}
    for family in parse(text):
        for sample in family.samples:
            if sample.exemplar is not None:
                key = sample.labels.get("segment") or sample.labels.get("tool", "")
                found.setdefault(family.name, {})[key] = sample.exemplar.labels
    return found


async def dropped(edge: Node) -> float:
    async with ClientSession() as http, http.get(edge.http + "/metrics") as r:
        text = await r.text()
    found = re.search(r'^callbridge_trace_spans_dropped_total\{reason="export_failed"\} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.mark.timeout(180)
async def test_with_the_collector_down_the_call_is_unaffected_its_spans_counted_and_then_back_traced_again(
    parts: tuple[ToolServer, Receiver, OtlpReceiver], tmp_path: Path
) -> None:
    tools, hook, _ = parts
    port = free_port()  # nothing listens there, until the collector comes back
    back = OtlpReceiver()
    async with serve_node(tmp_path, [plan(tools.port, hook.url)], tracing_env(f"http://127.0.0.1:{port}")) as edge:
        _, report = await a_call(edge, tmp_path)
        (ended,) = await hook.wait_for(lambda r: len(r) >= 1, 30)
        deadline = time.monotonic() + 30
        while await dropped(edge) < 5:  # root, session, turn, answers, tool: the worker's, then serve's delivery
            assert time.monotonic() < deadline, edge.log.read_text()[-3000:]
            await asyncio.sleep(0.2)
        back.port = port
        await back.start()
        try:
            _, again = await a_call(edge, tmp_path)
            await back.wait_for(
                lambda s: any(x.attributes.get("callbridge.call_id") == again["call_id"] for x in s), 30
            )
        finally:
            await back.stop()
        log = edge.log.read_text()
    assert report["outcome"] == "completed" and report["answered"]
    assert [c["outcome"] for c in report["tool_calls"]] == ["ok"] and tools.traceparents[0]
    assert ended.traceparent and ended.body["data"]["trace_id"]  # the context still goes out
    assert not [s for s in back.spans if s.attributes.get("callbridge.call_id") == report["call_id"]]  # dropped
    lines = [line for line in log.splitlines() if "span(s) dropped" in line]
    assert 1 <= len(lines) <= 2, lines  # one line a minute per process (the worker, serve), not one per span or batch
    assert "works again" in log
    assert "Traceback" not in log and "otlp-s3cret-key" not in log


SCENARIO = Path(__file__).parent / "scenarios" / "uac_traceparent.xml"
CALLER_TRACE, CALLER_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"  # as uac_traceparent.xml sends
CALLER_STATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
NODE, TRUNK, STRANGER = "127.0.0.2", "127.0.0.1", "127.0.0.3"  # serve and its front; a listed trunk; anyone else


async def trunk_call(target: str, source: str, work: Path) -> None:
    """One SIPp call of ``uac_traceparent.xml`` from ``source`` to 1000 at ``target`` ("host:port"), hung up after
    3 s."""
    sipp = shutil.which("sipp")
    assert sipp is not None
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(SCENARIO, work / SCENARIO.name)
    proc = await asyncio.create_subprocess_exec(
        sipp, "-sf", str(work / SCENARIO.name), "-m", "1", "-i", source, "-p", str(free_port()),
        "-mp", str(free_port_block(4)), "-timeout", "30", "-timeout_error", "-nostdin", "-s", "1000", target,
        cwd=work, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]


ANYONE = {"CALLBRIDGE_SIP_ALLOW_ANY_SOURCE": "true"}
LISTS = {
    "allowed-sources": {"CALLBRIDGE_SIP_ALLOWED_SOURCES": f"{TRUNK}/32"},  # the trunk, and no one else, may call
    "trunk-sources": {**ANYONE, "CALLBRIDGE_SIP_TRUNK_SOURCES": f"{TRUNK}/32"},  # anyone may; the trunk is listed
    "unlisted-source": ANYONE,  # anyone may call, none is listed
}


@pytest.mark.skipif(shutil.which("sipp") is None, reason="no sipp binary")
@pytest.mark.skipif(kamailio_binary() is None, reason="kamailio is not installed (apt-get install kamailio)")
@pytest.mark.skipif(not can_bind(STRANGER), reason="127.0.0.2/127.0.0.3 are not usable here")
@pytest.mark.parametrize("listed", list(LISTS))
@pytest.mark.timeout(120)
async def test_a_listed_trunks_traceparent_continues_the_callers_trace_through_the_front_anyone_elses_does_not(
    tmp_path: Path, listed: str
) -> None:
    """Two calls at once with the same traceparent and tracestate: one through serve's front (Kamailio), one straight
    to its worker. From a listed trunk (``sip_allowed_sources`` or ``sip_trunk_sources``) both continue the caller's
    trace; from a source not listed both are traces of their own, the front's trust in its own X-Callbridge-Source
    lending the stranger none."""
    collector = await OtlpReceiver().start()
    trusted = listed != "unlisted-source"
    env = tracing_env(collector.endpoint) | LISTS[listed]
    simple = {"name": "trunk", "match": ["1000"], "dialect": "ga", "profile": {"instructions": "Answer briefly."}}
    source = TRUNK if trusted else STRANGER
    try:
        async with serve_node(tmp_path, [simple], env, front=NODE) as edge:
            await asyncio.gather(
                trunk_call(f"{NODE}:{edge.sip_port}", source, tmp_path / "front"),  # the front
                trunk_call(f"{NODE}:{edge.sip_port + 1}", source, tmp_path / "worker"),  # its worker
            )
            spans = await collector.wait_for(lambda s: len([x for x in s if x.name == "call"]) >= 2, 30)
            deadline = time.monotonic() + 15
            while len(reports := read_reports(edge.reports)) < 2:  # each written once its call has ended
                assert time.monotonic() < deadline, edge.log.read_text()[-3000:]
                await asyncio.sleep(0.1)
    finally:
        await collector.stop()
    roots = [s for s in spans if s.name == "call"]
    assert sorted(r.attributes["callbridge.sip_call_id"] for r in roots) == sorted(r["sip_call_id"] for r in reports)
    for root in roots:
        if trusted:  # the caller's trace, the caller's span its parent, the caller's vendors' state kept
            assert (root.trace_id, root.parent_id, root.trace_state) == (CALLER_TRACE, CALLER_SPAN, CALLER_STATE)
        else:  # a traceparent anyone could have written: a trace of the call's own
            assert root.trace_id != CALLER_TRACE and root.parent_id == "" and root.trace_state == ""
    assert len({r.trace_id for r in roots}) == (1 if trusted else 2)
    for s in spans:
        assert s.trace_id in {r.trace_id for r in roots}, s.name  # every span of the worker in one of the calls'
