"""The replay report: ``report.json`` for tools and ``report.html`` for people.

The HTML page is one file (inline CSS and SVG, no script, no external asset): it can be mailed, archived with a CI
run, or opened straight from disk. Its only links are relative: the heard audio of each run (``audio/``, direct
runs) and the baseline run's report (``--baseline``). The top says what ran, a banner says when the model was the
emulator (the run tests the bridge's wiring and the protocols, not a model), and the price table's date is beside
the cost of each run and of each column (dialect or variant).

The overview has a row per script with its status (``same``, ``by design``, ``expected``, ``unexpected``,
``failed``, ``error``: each its own colour) and filters (CSS only: all, problems, unexpected only, ...). Per script:
the reasons, grouped by kind; what changed since the baseline; the caller-felt timing of every run side by side,
figures beyond the tolerance marked; both transcripts aligned by turn with the words that differ from the reference
run marked; then the runs in columns, as many as there are (beta and GA, with Live, or each rollout variant, the
safe one first): a timeline plot with the event list behind its ticks, the audio, the phases, tool calls,
barge-ins and truncates, latency per segment as bars, errors and every expectation with its result. The runs of a
script share one time axis and one latency scale, so the eye compares like with like.
"""

from __future__ import annotations

import difflib
import html
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from bridge import events as ev
from bridge.replay.compare import STATUSES, DialectRun, ScriptResult, check_rows, label, summarize
from bridge.replay.timing import median

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
STATUS_COLORS: Final = {
    "same": "#1e8449",
    "by_design": "#2471a3",
    "expected": "#7d3c98",
    "unexpected": "#d35400",
    "failed": "#c0392b",
    "error": "#641e16",
}
STATUS_TEXT: Final[dict[str, str]] = {s: s.replace("_", " ") for s in STATUSES}
AUDIO_DIR: Final = "audio"  # the report's audio/<script>-<run>/audio.wav (direct runs recorded with --report)

CSS: Final = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2329;background:#f4f6f8}
header{background:#1d2329;color:#fff;padding:16px 24px}header h1{margin:0;font-size:20px}
header .meta{color:#c5ccd3;font-size:13px;margin-top:4px}
main{padding:16px 24px;max-width:1500px}
table{border-collapse:collapse}td,th{padding:3px 8px;text-align:left;vertical-align:top}
table.summary td,table.summary th{border-bottom:1px solid #dde2e7}
.badge{display:inline-block;white-space:nowrap;border-radius:10px;padding:1px 9px;color:#fff;font-size:12px;
font-weight:600}
.badge.same{background:#1e8449}.badge.by_design{background:#2471a3}.badge.expected{background:#7d3c98}
.badge.unexpected{background:#d35400}.badge.failed{background:#c0392b}.badge.error{background:#641e16}
.badge.ok{background:#1e8449}.badge.bad{background:#c0392b}.badge.na{background:#7f8c8d}
section.script{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);margin:18px 0;padding:14px 18px}
section.script h2{margin:0 0 4px;font-size:17px}section.script .desc{color:#56606b;margin:0 0 8px}
ul.reasons{margin:6px 0 10px;padding-left:20px}
ul.reasons li.failure{color:#a93226}ul.reasons li.difference{color:#7e5109}
.dialects{display:grid;gap:16px;overflow-x:auto}
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
.banner{background:#fdebd0;border-left:5px solid #d35400;padding:8px 14px;margin:12px 0}
ul.reasons li.unexpected{color:#a04000;font-weight:600}ul.reasons li.expected{color:#6c3483}
ul.reasons li.by_design{color:#1f618d}ul.reasons li.error{color:#641e16;font-weight:600}
table.aligned{width:100%;margin:4px 0 10px}table.aligned td,table.aligned th{border-bottom:1px solid #eef1f4;
font-size:13px}mark{background:#fad7a0;padding:0 1px}td.far{background:#fad7a0;font-weight:600}
.filters{margin:8px 0}.filters input{position:absolute;opacity:0}.filters label{display:inline-block;
border:1px solid #aab3bc;border-radius:12px;padding:2px 10px;margin:2px;cursor:pointer;font-size:13px;background:#fff}
.filters input:checked+label{background:#1d2329;color:#fff}
#f-problems:checked~.report [data-status=same],#f-problems:checked~.report [data-status=by_design],
#f-problems:checked~.report [data-status=expected]{display:none}
#f-unexpected:checked~.report [data-status]:not([data-status=unexpected]){display:none}
#f-expected:checked~.report [data-status]:not([data-status=expected]){display:none}
#f-by_design:checked~.report [data-status]:not([data-status=by_design]){display:none}
#f-same:checked~.report [data-status]:not([data-status=same]){display:none}
#f-changed:checked~.report [data-status]:not([data-changed]){display:none}
td.since.changed{color:#a04000;font-weight:600}
details.events{margin:2px 0 6px}details.events table td{font-size:12px;padding:0 6px}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


# --------------------------------------------------------------------------------------------------------------
# JSON


def _relative(path: str, out: Path) -> str:
    """``path`` as the report names it: relative to the working directory if under it, else to the report."""
    if not path or not os.path.isabs(path):
        return path
    here = Path.cwd()
    target = Path(path)
    return str(target.relative_to(here)) if target.is_relative_to(here) else os.path.relpath(target, out)


def _assumed(prices: Mapping[str, Any]) -> str:
    """The warning beside the cost when a rate is assumed or missing (HTML)."""
    parts = []
    if prices.get("assumed"):
        parts.append(f"assumed rates for {', '.join(prices['assumed'])}: set price_table")
    if prices.get("unpriced"):
        parts.append(f"no price for {', '.join(prices['unpriced'])}")
    return "".join(f' <strong class="warn">{esc(p)}</strong>' for p in parts)


def _cost(run: DialectRun, prices: Any) -> float | None:
    usage = run.report.get("usage") or {}
    cost = prices.cost(run.model, int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0)))
    return None if cost is None else round(float(cost), 6)


def report_json(results: Sequence[ScriptResult], meta: Mapping[str, Any], out: Path | None = None) -> dict[str, Any]:
    """The report as data: the meta with the summary, the price table's date and the cost per column; every script
    with its runs (each with its cost). ``out``: paths are written relative (see :func:`_relative`)."""
    from bridge.rollout.catalog import load_prices

    prices = load_prices()
    scripts = []
    columns: dict[str, float] = {}
    for result in results:
        data = result.to_json()
        if out is not None:
            data["source"] = _relative(result.source, out)
            data["errors"] = [e.replace(result.source, data["source"]) for e in result.errors]
            data["reasons"] = [e.replace(result.source, data["source"]) for e in data["reasons"]]
        for name, run in result.runs.items():
            cost = _cost(run, prices)
            data["runs"][name]["cost_usd"] = cost
            if cost is not None:
                columns[name] = round(columns.get(name, 0.0) + cost, 6)
        scripts.append(data)
    models = sorted({run.model for result in results for run in result.runs.values() if run.model})
    price_table = {
        "as_of": prices.as_of,
        "source": prices.source,
        # the models of this run whose rate was not published when the table was dated, and those it has no price for
        "assumed": [m for m in models if (p := prices.price(m)) is not None and p.assumed],
        "unpriced": [m for m in models if prices.price(m) is None],
    }
    return {"meta": {**meta, "summary": summarize(results), "prices": price_table, "cost_usd": columns},
            "scripts": scripts}  # fmt: skip


def write_report(
    results: Sequence[ScriptResult], directory: str | Path, meta: Mapping[str, Any], data: dict[str, Any] | None = None
) -> Path:
    """``report.json`` and ``report.html`` in ``directory`` (created); returns the HTML path. ``data``: the report's
    :func:`report_json` if it was made already (with what changed since a baseline, ``bridge/replay/history.py``)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    data = data if data is not None else report_json(results, meta, out)
    (out / JSON_FILE).write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    page = out / HTML_FILE
    page.write_text(render_html(results, data, out), encoding="utf-8")
    return page


def audio_link(out: Path | None, script: str, run: str) -> str | None:
    """The report-relative path of a run's recorded audio, if it was recorded."""
    rel = f"{AUDIO_DIR}/{script}-{run}/audio.wav"
    return rel if out is not None and (out / rel).is_file() else None


# --------------------------------------------------------------------------------------------------------------
# SVG pieces


def _phase_spans(run: DialectRun, end_ms: float) -> list[tuple[float, float, str]]:
    spans: list[tuple[float, float, str]] = []
    current, since = "IDLE", 0.0
    for t, change in run.noted(ev.PhaseChanged):
        if t > since:
            spans.append((since, t, current))
        current, since = change.new, t
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


def _badge(status: str) -> str:
    return f'<span class="badge {esc(status)}">{esc(STATUS_TEXT.get(status, status))}</span>'


def _usd(value: float | None) -> str:
    return "no price" if value is None else f"${value:.4f}"


def marked_words(line: str, reference: str) -> str:
    """``line`` escaped, its words that are not in ``reference`` (where the two part) in ``<mark>``."""
    words, ref = line.split(), reference.split()
    out: list[str] = []
    for op, _, _, j1, j2 in difflib.SequenceMatcher(a=ref, b=words, autojunk=False).get_opcodes():
        chunk = esc(" ".join(words[j1:j2]))
        if chunk:
            out.append(chunk if op == "equal" else f"<mark>{chunk}</mark>")
    return " ".join(out)


def _aligned(title: str, key: str, runs: Sequence[DialectRun]) -> str:
    """A transcript of every run, line by line in rows (line n of each run side by side), words differing from the
    reference run (the first) marked."""
    lines = [list(r.report.get(key, [])) for r in runs]
    rows = max((len(x) for x in lines), default=0)
    if not rows:
        return f'<h4>{esc(title)}</h4><p class="small">none</p>'
    head = "".join(f"<th>{esc(label(r.name))}</th>" for r in runs)
    body = []
    for i in range(rows):
        ref = lines[0][i] if i < len(lines[0]) else ""
        cells = []
        for k, run_lines in enumerate(lines):
            text = run_lines[i] if i < len(run_lines) else ""
            cells.append(f"<td>{esc(text) if k == 0 else marked_words(text, ref)}</td>")
        body.append(f"<tr><td class=small>{i + 1}</td>{''.join(cells)}</tr>")
    return (f'<h4>{esc(title)}</h4><table class="aligned" data-transcript="{esc(key)}"><tr><th>#</th>{head}</tr>'
            f"{''.join(body)}</table>")  # fmt: skip


def _timing_table(result: ScriptResult) -> str:
    """The caller-felt figures of every run side by side; a figure beyond the tolerance from the reference marked."""
    runs = list(result.runs.values())
    if not runs:
        return ""
    timings = [r.timing for r in runs]
    rows: list[tuple[str, list[float | None]]] = [
        ("greeting", [t.greeting_ms for t in timings]),
        ("first reply", [t.first_reply_ms for t in timings]),
    ]
    turns = sorted({x.turn for t in timings for x in t.turns})
    for turn in turns:
        per = [{x.turn: x for x in t.turns}.get(turn) for t in timings]
        rows.append((f"reply gap after turns[{turn}]", [p.reply_gap_ms if p else None for p in per]))
        if any(p is not None and p.barge_in_cut_ms is not None for p in per):
            rows.append((f"barge-in cut at turns[{turn}]", [p.barge_in_cut_ms if p else None for p in per]))
    rows.append(("longest silence", [t.longest_silence_ms for t in timings]))
    head = "".join(f"<th>{esc(label(r.name))}</th>" for r in runs)
    body = []
    for name, values in rows:
        ref = values[0]
        cells = []
        for value in values:
            far = value is not None and ref is not None and abs(value - ref) > result.tolerance_ms
            text = "-" if value is None else f"{value:.0f} ms"
            cells.append(f'<td class="far">{text}</td>' if far else f"<td>{text}</td>")
        body.append(f"<tr><td>{esc(name)}</td>{''.join(cells)}</tr>")
    return (f'<h4>Timing as the caller felt it (tolerance {result.tolerance_ms:g} ms)</h4>'
            f'<table class="aligned timing"><tr><th></th>{head}</tr>{"".join(body)}</table>')  # fmt: skip


def _events_html(run: DialectRun) -> str:
    rows = "".join(
        f'<tr><td class="mono">{t / 1000:.3f} s</td><td>{esc(k)}</td><td>{esc(s)}</td></tr>' for t, k, s in run.timeline
    )
    return (f'<details class="events"><summary>the {len(run.timeline)} events behind the ticks</summary>'
            f"<table>{rows}</table></details>")  # fmt: skip


def _tools_html(r: Mapping[str, Any]) -> list[str]:
    calls = r.get("tool_calls", [])
    if not calls:
        return ['<p class="small">none</p>']
    parts = ['<table class="checks">']
    for c in calls:
        parts.append(
            f'<tr><td class="mono">{esc(c.get("name"))}</td><td class="mono">{esc(c.get("arguments"))}</td>'
            f'<td class="mono">→ {esc(json.dumps(c.get("output"), default=str))}</td>'
            + (f'<td class="small">{esc(c["outcome"])} in {c["latency_ms"]:.0f} ms; longest silence '
               f'{c.get("longest_silence_ms", 0):.0f} ms</td>' if "latency_ms" in c else "")
            + "</tr>"
        )  # fmt: skip
    parts.append("</table>")
    return parts


def _run_head(run: DialectRun, cost: float | None, audio: str | None) -> list[str]:
    r = run.report
    variant = f'data-variant="{esc(run.variant)}" ' if run.variant else ""
    model = f"{esc(label(run.dialect))}, " if run.variant else ""
    player = (f'<audio controls preload="none" src="{esc(audio)}"></audio> <a href="{esc(audio)}">WAV</a> '
              '<span class="small">(left the caller, right the agent)</span>') if audio else ""  # fmt: skip
    return [
        f'<div class="dialect" {variant}data-dialect="{esc(run.dialect)}">',
        f'<h3>{esc(label(run.name))} <span class="small">({model}{esc(run.model)}, {_usd(cost)})</span> '
        f'<span class="badge {"ok" if run.ok else "bad"}">{"expectations pass" if run.ok else "expectation failed"}'
        f'</span> <span class="small">{run.duration_ms / 1000:.2f} s call, {run.wall_s:.3f} s to replay via '
        f"{esc(run.via)}, ended by {esc(run.ended_by or '?')}: {esc(r.get('end_reason', ''))}</span></h3>",
        player,
    ]


def _figures(r: Mapping[str, Any]) -> str:
    """The call's figures as the console shows them (docs/operating.md, *what each figure means*)."""
    shown = [("greeting", "greeting_ms"), ("first reply", "first_reply_ms"), ("longest wait", "longest_wait_ms")]
    ms = [(name, r.get(key)) for name, key in shown]
    return "; ".join(f"{name}: {'-' if v is None else f'{float(v):.0f} ms'}" for name, v in ms)


def _dialect_html(
    run: DialectRun | None, dialect: str, span_ms: float, latency_scale: float, cost: float | None, audio: str | None
) -> str:
    if run is None:
        return f'<div class="dialect" data-dialect="{esc(dialect)}"><h3>{esc(label(dialect))}</h3><p>not run</p></div>'
    r = run.report
    parts = [*_run_head(run, cost, audio), timeline_svg(run, span_ms), _events_html(run)]
    parts += ["<h4>Phases</h4>", f'<div class="phases">{_phases_html(r.get("phases", []))}</div>']
    parts.append("<h4>Tool calls</h4>")
    parts += _tools_html(r)
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
    parts.append(f'<p class="small">{_figures(r)}</p>')
    parts.append("<h4>Errors</h4>")
    errors = [f"{e.get('class')}/{e.get('code')}: {e.get('message')}" for e in r.get("errors", [])]
    parts.append(_list(errors + run.runner_failures))
    parts.append('<h4>Expectations</h4><table class="checks">')
    for c in run.checks:
        badge = '<span class="badge ok">pass</span>' if c.ok else '<span class="badge bad">FAIL</span>'
        parts.append(f"<tr><td>{badge}</td><td>{esc(c.name)}</td><td>{esc(c.detail)}</td></tr>")
    parts.append("</table>")
    unknown = [r.type for _, r in run.noted(ev.UnknownServerEvent)]
    if unknown:
        parts.append(f'<p class="small">unknown events: <span class="mono">{esc(", ".join(unknown))}</span></p>')
    parts.append("</div>")
    return "".join(parts)


def _compliance_html(result: ScriptResult) -> str:
    """The plan's compliance checks, a row per check per run (the report's ``compliance``)."""
    rows = check_rows(result.runs)
    if not rows:
        return ""
    body = []
    for row in rows:
        badge = '<span class="badge ok">pass</span>' if row["passed"] else '<span class="badge bad">FAIL</span>'
        body.append(
            f'<tr data-check="{esc(row["check"])}" data-run="{esc(row["run"])}" data-passed="{int(row["passed"])}">'
            f"<td>{esc(row['check'])}</td><td>{esc(label(row['run']))}</td><td>{badge}</td>"
            f"<td>{esc(row['detail'])}</td></tr>"
        )
    return (
        '<h4>Compliance checks</h4><table class="checks compliance"><tr><th>check</th><th>run</th><th></th>'
        f"<th>detail</th></tr>{''.join(body)}</table>"
    )


def _reasons_html(result: ScriptResult, data: Mapping[str, Any]) -> str:
    groups = [
        ("error", data.get("errors", result.errors), "error"),
        ("failure", result.failures, "failed"),
        ("unexpected", result.unexpected, "unexpected"),
        ("expected", result.expected, "expected"),
        ("by_design", result.by_design, "by design"),
    ]
    items = [f'<li class="{cls}"><b>{esc(what)}:</b> {esc(x)}</li>' for cls, xs, what in groups for x in xs]
    return f'<ul class="reasons">{"".join(items)}</ul>' if items else ""


def _script_html(result: ScriptResult, data: Mapping[str, Any], dialects: Sequence[str], out: Path | None) -> str:
    runs = result.runs
    span = max([r.duration_ms for r in runs.values()] + [1000.0])
    lat = [row[2] for r in runs.values() for row in latency_rows(r)]
    scale = nice_ceiling(max([*lat, 10.0]))
    status = result.status
    expected = f' <span class="small">(expected: {esc(result.because or "declared")})</span>' if result.expected else ""
    parts = [
        f'<section class="script status-{esc(status)}" id="script-{esc(result.script)}" '
        f'data-script="{esc(result.script)}" data-verdict="{esc(result.verdict)}" data-status="{esc(status)}"'
        + (' data-changed="1">' if data.get("since_baseline") else ">"),
        f"<h2>{esc(result.script)} {_badge(status)}{expected}</h2>",
        f'<p class="desc">{esc(result.description)} <span class="small mono">{esc(data.get("source", ""))} '
        f"#{esc(result.digest)}</span></p>",
        _reasons_html(result, data),
    ]
    since = data.get("since_baseline") or []
    if since:
        parts.append('<h4>Since the baseline</h4><ul class="reasons">')
        parts += [f"<li>{esc(x)}</li>" for x in since]
        parts.append("</ul>")
    if runs:
        ordered = [runs[d] for d in dialects if d in runs]
        parts.append(_timing_table(result))
        parts.append(_compliance_html(result))
        parts.append(_aligned("Caller transcript, aligned", "caller_transcript", ordered))
        parts.append(_aligned("Agent transcript, aligned (words not in the first run marked)", "agent_transcript",
                              ordered))  # fmt: skip
        costs = {name: run.get("cost_usd") for name, run in data.get("runs", {}).items()}
        parts.append(f'<div class="dialects" style="grid-template-columns:repeat({len(dialects)},minmax(440px,1fr))">')
        parts += [
            _dialect_html(runs.get(d), d, span, scale, costs.get(d), audio_link(out, result.script, d))
            for d in dialects
        ]
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _since_cell(changes: Sequence[str] | None) -> str:
    if not changes:
        return '<td class="since small">unchanged</td>'
    return f'<td class="since changed" title="{esc("; ".join(changes))}">{len(changes)} change(s)</td>'


def _overview(
    results: Sequence[ScriptResult],
    dialects: Sequence[str],
    meta: Mapping[str, Any],
    since_baseline: Mapping[str, Sequence[str]],
) -> str:
    baseline = meta.get("baseline")
    rows = []
    for r in results:
        cells = []
        for d in dialects:
            run = r.runs.get(d)
            if run is None:
                cells.append('<td><span class="badge na">-</span></td>')
                continue
            cls, text = ("ok", "pass") if run.ok else ("bad", "fail")
            gap = median(run.timing.reply_gaps)
            extra = f' <span class="small">{gap:.0f} ms</span>' if gap is not None else ""
            cells.append(f'<td><span class="badge {cls}">{text}</span>{extra}</td>')
        first = (r.errors or r.failures or r.unexpected or r.expected or r.by_design or [""])[0]
        since = _since_cell(since_baseline.get(r.script)) if baseline else ""
        changed = ' data-changed="1"' if since_baseline.get(r.script) else ""
        rows.append(
            f'<tr data-status="{esc(r.status)}"{changed}><td><a href="#script-{esc(r.script)}">{esc(r.script)}</a></td>'
            f'<td>{_badge(r.status)}</td>{"".join(cells)}{since}<td class="small">{esc(first)}</td></tr>'
        )
    costs = meta.get("cost_usd", {})
    prices = meta.get("prices", {})
    foot = "".join(f"<td>{_usd(costs.get(d))}</td>" for d in dialects) + ("<td></td>" if baseline else "")
    return "".join([
        '<table class="summary"><tr><th>script</th><th>status</th>',
        "".join(f"<th>{esc(label(d))}</th>" for d in dialects),
        "<th>since the baseline</th>" if baseline else "",
        "<th>first reason</th></tr>",
        "".join(rows),
        f'<tr class="cost"><td>cost</td><td></td>{foot}<td class="small">prices as of '
        f"{esc(prices.get('as_of', '?'))} ({esc(prices.get('source', ''))}){_assumed(prices)}</td></tr>",
        "</table>",
        '<p class="small">per run: expectations, then the median reply gap the caller felt</p>',
    ])  # fmt: skip


def _filters(results: Sequence[ScriptResult], changed: int | None) -> str:
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    problems = counts["error"] + counts["failed"] + counts["unexpected"]
    options = [
        ("all", f"all {len(results)}"),
        ("problems", f"problems {problems}"),
        ("unexpected", f"unexpected only {counts['unexpected']}"),
        ("expected", f"expected {counts['expected']}"),
        ("by_design", f"by design {counts['by_design']}"),
        ("same", f"same {counts['same']}"),
        *([("changed", f"changed since the baseline {changed}")] if changed is not None else []),
    ]
    return "".join(
        f'<input type="radio" name="filter" id="f-{key}"{" checked" if key == "all" else ""}>'
        f'<label for="f-{key}">{esc(text)}</label>'
        for key, text in options
    )


def _header(results: Sequence[ScriptResult], meta: Mapping[str, Any], dialects: Sequence[str]) -> str:
    counts = summarize(results)
    created = meta.get("created") or time.strftime("%Y-%m-%d %H:%M:%S")
    speed = meta.get("speed_x")
    what = "variants" if meta.get("variants") else "dialects"
    if meta.get("safe"):
        what = f"rollout {', '.join(f'{k} (safe: {v})' for k, v in meta['safe'].items())}: variants"
    statuses = ", ".join(f"{counts[f'status_{s}']} {STATUS_TEXT[s]}" for s in STATUSES if counts[f"status_{s}"])
    line = (
        f"{len(results)} script(s), {esc(what)} {esc(', '.join(label(d) for d in dialects))}, "
        f"via {esc(meta.get('via', '?'))} against {esc(meta.get('target', '?'))}: {esc(statuses)}"
        + (f"; {float(speed):.0f}x real time" if speed else "")
        + f"; {esc(created)}"
    )
    parts = [f'<header><h1>callbridge replay report</h1><div class="meta">{line}</div></header><main>']
    if meta.get("target") == "emulator":
        parts.append(
            '<div class="banner" id="emulator-banner"><b>The model was the emulator.</b> This run tests the bridge: '
            "its wiring, the protocols of each dialect and the timing the bridge adds. It says nothing of how a "
            "real model answers, how fast, or how well; replay with <span class=mono>--target openai</span> for "
            "that.</div>"
        )
    gate = meta.get("gate") or {}
    if gate.get("red"):
        items = "".join(f"<li>{esc(line)}</li>" for line in gate["red"])
        parts.append(f'<div class="banner gate" id="gate"><b>Red at the gate</b><ul>{items}</ul></div>')
    if gate.get("accepts"):
        items = "".join(
            f"<li>{esc(a.get('kind'))}: {esc(a.get('name'))} by {esc(a.get('by'))}"
            + (f": {esc(a['reason'])}" if a.get("reason") else "")
            + "</li>"
            for a in gate["accepts"]
        )
        parts.append(f'<div class="accepts" id="accepts"><b>Accepted</b><ul>{items}</ul></div>')
    parts.append(_grader_html(meta.get("grader") or {}))
    baseline = meta.get("baseline")
    if baseline:
        missing = baseline.get("missing") or []
        gone = f" In the baseline, not run now: {esc(', '.join(missing))}." if missing else ""
        parts.append(f'<p class="baseline">Compared with the baseline run <a id="baseline" '
                     f'href="{esc(baseline["href"])}">{esc(baseline.get("created") or baseline["href"])}</a> '
                     f'<span class="small mono">({esc(baseline.get("dir", ""))})</span>: '
                     f"{esc(baseline.get('changed', 0))} script(s) changed since.{gone}</p>")  # fmt: skip
    return "".join(parts)


def _grader_html(grader: Mapping[str, Any]) -> str:
    """What judged the scripts' ``means``, ``must_not_mean`` and ``rubric``: the model, its prompt and its cost."""
    from bridge.replay.grader import grader_lines

    lines = grader_lines(grader)
    if not lines or not grader.get("on"):
        return "".join(f'<p class="grader" id="grader">{esc(line)}</p>' for line in lines)
    prompt = f"<details><summary>the grader's prompt</summary><p class=mono>{esc(grader.get('prompt'))}</p></details>"
    return f'<div class="grader" id="grader"><p>{esc(lines[0])}</p>{prompt}</div>'


def render_html(results: Sequence[ScriptResult], data: Mapping[str, Any], out: Path | None = None) -> str:
    """The page, from the results and their :func:`report_json` (``data``); ``out``: the report's directory."""
    meta = data.get("meta", data)
    by_name = {s["script"]: s for s in data.get("scripts", [])}
    # a column per dialect, or per rollout variant (``replay --variants``: the safe one first)
    columns = meta.get("variants") or meta.get("dialects")
    dialects: list[str] = list(columns or sorted({d for r in results for d in r.runs}))
    counts = summarize(results)
    since = {name: list(s.get("since_baseline") or []) for name, s in by_name.items()}
    changed = (meta.get("baseline") or {}).get("changed") if meta.get("baseline") else None
    legend = "".join(f'<span><i style="background:{c}"></i>{esc(p)}</span>' for p, c in PHASE_COLORS.items())
    legend += '<span><i style="background:#2f6fb3"></i>caller speech</span>'
    legend += '<span><i style="background:#27ae60"></i>agent audio heard</span>'
    return "".join(
        [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width,initial-scale=1">',
            f"<title>callbridge replay: {counts['status_unexpected']} unexpected, {counts['status_failed']} failed"
            "</title>",
            f"<style>{CSS}</style></head><body>",
            _header(results, meta, dialects),
            f'<div class="filters">{_filters(results, changed)}',
            '<div class="report">',
            _overview(results, dialects, meta, since),
            f'<p class="legend">{legend}</p>',
            "".join(_script_html(r, by_name.get(r.script, {}), dialects, out) for r in results),
            "</div></div></main></body></html>",
        ]
    )
