"""The replay report: ``report.json`` for tools and ``report.html`` for people.

The HTML page is one self-contained file (inline CSS and SVG, no script, no external asset), so it can be mailed,
archived with a CI run, or opened straight from disk. Per script it shows the verdict with its reasons, then each
run side by side (beta and GA, or with ``replay --variants`` each rollout variant, the safe one first): a timeline
plot (caller speech and keys, the agent audio the caller heard, the call phases, and markers for the session's
notable events), the phase sequence, both transcripts, tool calls, barge-ins and truncates, latency per segment as
bars, errors, and every expectation with its result. The runs of a script share one time axis and one latency
scale, so the eye compares like with like.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from bridge import events as ev
from bridge.replay.compare import DialectRun, ScriptResult, label, summarize

JSON_FILE: Final = "report.json"
HTML_FILE: Final = "report.html"

PHASE_COLORS: Final = {
    "IDLE": "#d0d4da",
    "LISTENING": "#cfe3f7",
    "THINKING": "#f6e3a8",
    "SPEAKING": "#bfe8c4",
    "CANCELLING": "#f5b7a8",
    "RECOVERING": "#e0b7f0",
    "ENDED": "#9aa1aa",
}
MARKERS: Final = {  # report kind -> (color, row label)
    ev.CallerSpeechStarted.kind: ("#2f6fb3", "speech start"),
    ev.CallerSpeechStopped.kind: ("#7aa7d6", "speech stop"),
    ev.ResponseBegan.kind: ("#b08a00", "response"),
    ev.ResponseEnded.kind: ("#6b5600", "response done"),
    ev.ToolCalled.kind: ("#7b3fb5", "tool call"),
    ev.ToolStarted.kind: ("#7b3fb5", "tool started"),
    ev.ToolFinished.kind: ("#5b2d8a", "tool result"),
    ev.FillerSaid.kind: ("#16a085", "filler"),
    ev.TransferStarted.kind: ("#7b3fb5", "transfer"),
    ev.TruncateSent.kind: ("#c0392b", "truncate"),
    ev.BargeIn.kind: ("#c0392b", "barge-in"),
    ev.KeyPressed.kind: ("#d35400", "DTMF"),
    ev.ServiceError.kind: ("#e74c3c", "error"),
    ev.SessionLost.kind: ("#8e44ad", "socket lost"),
    ev.Recovered.kind: ("#27ae60", "recovered"),
    ev.UnknownServerEvent.kind: ("#e67e22", "unknown event"),
    ev.AgentHungUp.kind: ("#444", "hangup"),
}
VERDICT_COLORS: Final = {"same": "#1e8449", "differs": "#b9770e", "failed": "#c0392b"}

CSS: Final = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2329;background:#f4f6f8}
header{background:#1d2329;color:#fff;padding:16px 24px}header h1{margin:0;font-size:20px}
header .meta{color:#c5ccd3;font-size:13px;margin-top:4px}
main{padding:16px 24px;max-width:1500px}
table{border-collapse:collapse}td,th{padding:3px 8px;text-align:left;vertical-align:top}
table.summary td,table.summary th{border-bottom:1px solid #dde2e7}
.badge{display:inline-block;border-radius:10px;padding:1px 9px;color:#fff;font-size:12px;font-weight:600}
.badge.same{background:#1e8449}.badge.differs{background:#b9770e}.badge.failed{background:#c0392b}
.badge.ok{background:#1e8449}.badge.bad{background:#c0392b}.badge.na{background:#7f8c8d}
section.script{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);margin:18px 0;padding:14px 18px}
section.script h2{margin:0 0 4px;font-size:17px}section.script .desc{color:#56606b;margin:0 0 8px}
ul.reasons{margin:6px 0 10px;padding-left:20px}
ul.reasons li.failure{color:#a93226}ul.reasons li.difference{color:#7e5109}
.dialects{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:16px}
.dialect{border:1px solid #e1e5ea;border-radius:6px;padding:10px 12px;min-width:0}
.dialect h3{margin:0 0 6px;font-size:15px}
.dialect h4{margin:10px 0 3px;font-size:13px;color:#3d4650;text-transform:uppercase;letter-spacing:.03em}
.phases span{display:inline-block;border-radius:4px;padding:0 5px;margin:1px;font-size:12px}
ol.transcript{margin:0;padding-left:20px}ol.transcript li{margin:1px 0}
.small{font-size:12px;color:#56606b}.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
table.checks td{border-bottom:1px solid #eef1f4;font-size:13px}
svg text{font:11px system-ui,sans-serif;fill:#3d4650}svg{max-width:100%;height:auto}
.legend span{display:inline-block;margin-right:10px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:3px;vertical-align:-1px}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


# --------------------------------------------------------------------------------------------------------------
# JSON


def report_json(results: Sequence[ScriptResult], meta: Mapping[str, Any]) -> dict[str, Any]:
    return {"meta": {**meta, "summary": summarize(results)}, "scripts": [r.to_json() for r in results]}


def write_report(results: Sequence[ScriptResult], directory: str | Path, meta: Mapping[str, Any]) -> Path:
    """``report.json`` and ``report.html`` in ``directory`` (created); returns the HTML path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    data = report_json(results, meta)
    (out / JSON_FILE).write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    page = out / HTML_FILE
    page.write_text(render_html(results, data["meta"]), encoding="utf-8")
    return page


# --------------------------------------------------------------------------------------------------------------
# SVG pieces


def _phase_spans(run: DialectRun, end_ms: float) -> list[tuple[float, float, str]]:
    spans: list[tuple[float, float, str]] = []
    current, since = "IDLE", 0.0
    for t, kind, summary in run.timeline:
        if kind != ev.PhaseChanged.kind or "->" not in summary:
            continue
        new = summary.split("->", 1)[1].split(":", 1)[0].strip()
        if t > since:
            spans.append((since, t, current))
        current, since = new, t
    spans.append((since, max(end_ms, since), current))
    return spans


def _ticks(span_ms: float) -> list[float]:
    step = 1000.0
    for candidate in (500, 1000, 2000, 5000, 10000, 20000, 30000, 60000):
        step = float(candidate)
        if span_ms / step <= 12:
            break
    return [i * step for i in range(int(span_ms // step) + 1)]


def timeline_svg(run: DialectRun, span_ms: float, width: int = 640) -> str:
    """Lanes: caller (speech, keys, hangup), agent audio heard, phases, then one row of event markers."""
    left, right = 84, 10
    inner = width - left - right
    span_ms = max(span_ms, 1.0)

    def x(t: float) -> float:
        return left + inner * min(max(t, 0.0), span_ms) / span_ms

    rows: list[str] = []
    lane_h, gap, top = 16, 6, 6
    lanes = ["caller", "agent heard", "phase", "events"]
    height = top + len(lanes) * (lane_h + gap) + 22
    for i, name in enumerate(lanes):
        y = top + i * (lane_h + gap)
        rows.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{name}</text>')
        rows.append(f'<rect x="{left}" y="{y}" width="{inner}" height="{lane_h}" fill="#f3f5f7"/>')
    y_caller, y_agent, y_phase, y_ev = (top + i * (lane_h + gap) for i in range(4))
    for start, end, what in run.caller_spans:
        if what.startswith("DTMF") or what == "hangup":
            color = "#d35400" if what.startswith("DTMF") else "#444"
            rows.append(
                f'<rect x="{x(start) - 1:.1f}" y="{y_caller}" width="3" height="{lane_h}" fill="{color}">'
                f"<title>{esc(what)} at {start / 1000:.2f} s</title></rect>"
            )
        else:
            rows.append(
                f'<rect x="{x(start):.1f}" y="{y_caller + 2}" width="{max(1.0, x(end) - x(start)):.1f}" '
                f'height="{lane_h - 4}" rx="2" fill="#2f6fb3"><title>{esc(what)} '
                f"({start / 1000:.2f}-{end / 1000:.2f} s)</title></rect>"
            )
    for start, end in run.agent_spans:
        rows.append(
            f'<rect x="{x(start):.1f}" y="{y_agent + 2}" width="{max(1.0, x(end) - x(start)):.1f}" '
            f'height="{lane_h - 4}" rx="2" fill="#27ae60"><title>agent audio {start / 1000:.2f}-{end / 1000:.2f} s'
            "</title></rect>"
        )
    for start, end, phase in _phase_spans(run, run.duration_ms or span_ms):
        color = PHASE_COLORS.get(phase, "#ccc")
        rows.append(
            f'<rect x="{x(start):.1f}" y="{y_phase}" width="{max(0.5, x(end) - x(start)):.1f}" height="{lane_h}" '
            f'fill="{color}"><title>{esc(phase)} {start / 1000:.2f}-{end / 1000:.2f} s</title></rect>'
        )
    for t, kind, summary in run.timeline:
        marker = MARKERS.get(kind)
        if marker is None:
            continue
        color, what = marker
        rows.append(
            f'<rect x="{x(t) - 1:.1f}" y="{y_ev}" width="2.5" height="{lane_h}" fill="{color}">'
            f"<title>{t / 1000:.3f} s {esc(what)}: {esc(summary)}</title></rect>"
        )
    axis_y = top + len(lanes) * (lane_h + gap)
    rows.append(f'<line x1="{left}" y1="{axis_y}" x2="{left + inner}" y2="{axis_y}" stroke="#9aa1aa"/>')
    for t in _ticks(span_ms):
        rows.append(f'<line x1="{x(t):.1f}" y1="{axis_y}" x2="{x(t):.1f}" y2="{axis_y + 4}" stroke="#9aa1aa"/>')
        rows.append(f'<text x="{x(t):.1f}" y="{axis_y + 15}" text-anchor="middle">{t / 1000:g} s</text>')
    return (
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline {esc(run.dialect)}">{"".join(rows)}</svg>'
    )


def nice_ceiling(value: float) -> float:
    """The next of 1, 2, 5 x 10^k at or above ``value`` (a scale people can read)."""
    exp = 10.0 ** math.floor(math.log10(max(value, 1e-9)))
    return next(m * exp for m in (1, 2, 5, 10) if m * exp >= value)


def latency_rows(run: DialectRun) -> list[tuple[str, float, float, int]]:
    """(segment, mean, max, samples) of the session's segments and the caller-side reply gap."""
    segments: dict[str, list[float]] = {k: list(v) for k, v in run.report.get("latency_ms", {}).items() if v}
    if run.reply_gaps_ms:
        segments["reply_gap (caller)"] = list(run.reply_gaps_ms)
    return [(k, sum(v) / len(v), max(v), len(v)) for k, v in sorted(segments.items())]


def latency_svg(rows: Sequence[tuple[str, float, float, int]], scale_ms: float, width: int = 640) -> str:
    if not rows:
        return '<p class="small">no latency samples</p>'
    left, right, bar_h, gap = 150, 90, 12, 5
    inner = width - left - right
    scale_ms = max(scale_ms, 1.0)
    height = len(rows) * (bar_h + gap) + 4
    out: list[str] = []
    for i, (name, mean, peak, n) in enumerate(rows):
        y = 2 + i * (bar_h + gap)
        w_peak = inner * min(peak, scale_ms) / scale_ms
        w_mean = inner * min(mean, scale_ms) / scale_ms
        out.append(f'<text x="{left - 6}" y="{y + 10}" text-anchor="end">{esc(name)}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{max(w_peak, 0.5):.1f}" height="{bar_h}" fill="#d6e4f2"/>')
        out.append(
            f'<rect x="{left}" y="{y + 3}" width="{max(w_mean, 0.5):.1f}" height="{bar_h - 6}" fill="#2f6fb3">'
            f"<title>{esc(name)}: mean {mean:.1f} ms, max {peak:.1f} ms, {n} sample(s)</title></rect>"
        )
        out.append(f'<text x="{left + inner + 4}" y="{y + 10}">{mean:.0f} / {peak:.0f} ms</text>')
    return (
        f'<svg class="latency" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="latency">{"".join(out)}</svg>'
    )


# --------------------------------------------------------------------------------------------------------------
# HTML


def _phases_html(phases: Iterable[str]) -> str:
    return " → ".join(f'<span style="background:{PHASE_COLORS.get(p, "#ddd")}">{esc(p)}</span>' for p in phases)


def _list(items: Sequence[str], empty: str = "none") -> str:
    if not items:
        return f'<p class="small">{esc(empty)}</p>'
    return '<ol class="transcript">' + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ol>"


def _dialect_html(run: DialectRun | None, dialect: str, span_ms: float, latency_scale: float) -> str:
    if run is None:
        return f'<div class="dialect" data-dialect="{esc(dialect)}"><h3>{esc(label(dialect))}</h3><p>not run</p></div>'
    r = run.report
    ok = run.ok
    variant = f'data-variant="{esc(run.variant)}" ' if run.variant else ""
    model = f' <span class="small">({esc(label(run.dialect))}, {esc(run.model)})</span>' if run.variant else ""
    parts = [
        f'<div class="dialect" {variant}data-dialect="{esc(run.dialect)}">',
        f'<h3>{esc(label(run.name))}{model} <span class="badge {"ok" if ok else "bad"}">'
        f"{'expectations pass' if ok else 'expectation failed'}</span> "
        f'<span class="small">{run.duration_ms / 1000:.2f} s call, {run.wall_s:.3f} s to replay via {esc(run.via)}, '
        f"ended by {esc(run.ended_by or '?')}: {esc(r.get('end_reason', ''))}</span></h3>",
        timeline_svg(run, span_ms),
        "<h4>Phases</h4>",
        f'<div class="phases">{_phases_html(r.get("phases", []))}</div>',
        "<h4>Caller transcript</h4>",
        _list(r.get("caller_transcript", [])),
        "<h4>Agent transcript</h4>",
        _list(r.get("agent_transcript", [])),
        "<h4>Tool calls</h4>",
    ]
    calls = r.get("tool_calls", [])
    if calls:
        parts.append('<table class="checks">')
        for c in calls:
            parts.append(
                f'<tr><td class="mono">{esc(c.get("name"))}</td><td class="mono">{esc(c.get("arguments"))}</td>'
                f'<td class="mono">→ {esc(json.dumps(c.get("output"), default=str))}</td>'
                + (f'<td class="small">{esc(c["outcome"])} in {c["latency_ms"]:.0f} ms; longest silence '
                   f'{c.get("longest_silence_ms", 0):.0f} ms</td>' if "latency_ms" in c else "")
                + "</tr>"
            )  # fmt: skip
        parts.append("</table>")
    else:
        parts.append('<p class="small">none</p>')
    targets = run.transfer_targets
    if targets:
        parts.append(f'<p class="small">transferred to <span class="mono">{esc(", ".join(targets))}</span></p>')
    truncates = r.get("truncates", [])
    parts.append(f"<h4>Barge-ins and truncates</h4><p>{r.get('barge_ins', 0)} barge-in(s); ")
    parts.append(", ".join(f"truncate at <b>{esc(t.get('audio_end_ms'))} ms</b>" for t in truncates) or "no truncate")
    dtmf = r.get("dtmf", [])
    parts.append(f"; DTMF {esc(''.join(dtmf)) or 'none'}; {r.get('reconnects', 0)} reconnect(s)</p>")
    parts.append("<h4>Latency per segment (mean / max)</h4>")
    parts.append(latency_svg(latency_rows(run), latency_scale))
    first = r.get("first_audio_ms")
    parts.append(f'<p class="small">first audio after answer: {esc(first)} ms</p>')
    parts.append("<h4>Errors</h4>")
    errors = [f"{e.get('class')}/{e.get('code')}: {e.get('message')}" for e in r.get("errors", [])]
    parts.append(_list(errors + run.runner_failures))
    parts.append('<h4>Expectations</h4><table class="checks">')
    for c in run.checks:
        badge = '<span class="badge ok">pass</span>' if c.ok else '<span class="badge bad">FAIL</span>'
        parts.append(f"<tr><td>{badge}</td><td>{esc(c.name)}</td><td>{esc(c.detail)}</td></tr>")
    parts.append("</table>")
    unknown = [s for _, k, s in run.timeline if k == ev.UnknownServerEvent.kind]
    if unknown:
        parts.append(f'<p class="small">unknown events: <span class="mono">{esc(", ".join(unknown))}</span></p>')
    parts.append("</div>")
    return "".join(parts)


def _script_html(result: ScriptResult, dialects: Sequence[str]) -> str:
    runs = result.runs
    span = max([r.duration_ms for r in runs.values()] + [1000.0])
    lat = [row[2] for r in runs.values() for row in latency_rows(r)]
    scale = nice_ceiling(max([*lat, 10.0]))
    expected = ""
    if result.verdict == "differs" and result.expected_comparison == "differs":
        expected = f' <span class="small">(expected: {esc(result.because or "a known difference")})</span>'
    parts = [
        f'<section class="script verdict-{esc(result.verdict)}" id="script-{esc(result.script)}" '
        f'data-script="{esc(result.script)}" data-verdict="{esc(result.verdict)}">',
        f'<h2>{esc(result.script)} <span class="badge {esc(result.verdict)}">{esc(result.verdict)}</span>{expected}'
        "</h2>",
        f'<p class="desc">{esc(result.description)} <span class="small mono">{esc(result.source)} '
        f"#{esc(result.digest)}</span></p>",
    ]
    if result.reasons:
        parts.append('<ul class="reasons">')
        parts += [f'<li class="failure">{esc(x)}</li>' for x in result.failures]
        parts += [f'<li class="difference">{esc(x)}</li>' for x in result.differences]
        parts.append("</ul>")
    parts.append('<div class="dialects">')
    parts += [_dialect_html(runs.get(d), d, span, scale) for d in dialects]
    parts.append("</div></section>")
    return "".join(parts)


def render_html(results: Sequence[ScriptResult], meta: Mapping[str, Any]) -> str:
    # a column per dialect, or per rollout variant (``replay --variants``: the safe one first)
    columns = meta.get("variants") or meta.get("dialects")
    dialects: list[str] = list(columns or sorted({d for r in results for d in r.runs}))
    counts = summarize(results)
    created = meta.get("created") or time.strftime("%Y-%m-%d %H:%M:%S")
    speed = meta.get("speed_x")
    what = "variants" if meta.get("variants") else "dialects"
    if meta.get("safe"):
        what = f"rollout {', '.join(f'{k} (safe: {v})' for k, v in meta['safe'].items())}: variants"
    head = (
        f"{len(results)} script(s), {esc(what)} {esc(', '.join(label(d) for d in dialects))}, "
        f"via {esc(meta.get('via', '?'))} "
        f"against {esc(meta.get('target', '?'))}; {counts['same']} same, {counts['differs']} differ, "
        f"{counts['failed']} failed" + (f"; {float(speed):.0f}x real time" if speed else "") + f"; {esc(created)}"
    )
    rows = []
    for r in results:
        cells = []
        for d in dialects:
            run = r.runs.get(d)
            if run is None:
                cells.append('<td><span class="badge na">-</span></td>')
            else:
                cls, text = ("ok", "pass") if run.ok else ("bad", "fail")
                cells.append(f'<td><span class="badge {cls}">{text}</span></td>')
        reason = esc(r.reasons[0]) if r.reasons else ""
        rows.append(
            f'<tr><td><a href="#script-{esc(r.script)}">{esc(r.script)}</a></td>'
            f'<td><span class="badge {esc(r.verdict)}">{esc(r.verdict)}</span></td>{"".join(cells)}'
            f'<td class="small">{reason}</td></tr>'
        )
    legend = "".join(f'<span><i style="background:{c}"></i>{esc(p)}</span>' for p, c in PHASE_COLORS.items())
    legend += '<span><i style="background:#2f6fb3"></i>caller speech</span>'
    legend += '<span><i style="background:#27ae60"></i>agent audio heard</span>'
    return "".join(
        [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width,initial-scale=1">',
            f"<title>callbridge replay: {counts['failed']} failed, {counts['differs']} differ</title>",
            f"<style>{CSS}</style></head><body>",
            f'<header><h1>callbridge replay report</h1><div class="meta">{head}</div></header><main>',
            '<table class="summary"><tr><th>script</th><th>verdict</th>',
            "".join(f"<th>{esc(label(d))}</th>" for d in dialects),
            "<th>first reason</th></tr>",
            "".join(rows),
            "</table>",
            f'<p class="legend">{legend}</p>',
            "".join(_script_html(r, dialects) for r in results),
            "</main></body></html>",
        ]
    )
