"""Realtime sockets dropped again and again under concurrent real SIP calls: every call survives, with context."""

from __future__ import annotations

import asyncio
import json
import sys
import wave
from pathlib import Path
from typing import Any

import pytest

from bridge.devkit.stack import ROOT, local_stack
from bridge.store.reportfile import read_reports

CALLS = 4
CALL_S = 14.0


def looping_caller(path: Path) -> Path:
    """Speech, 2.5 s of silence, speech again...: a caller who keeps asking while the sessions keep dropping."""
    with wave.open(str(ROOT / "bridge" / "assets" / "caller_hours.wav"), "rb") as src:
        speech = src.readframes(src.getnframes())
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes((speech + bytes(2 * 8000 * 5 // 2)) * 4)
    return path


async def call(uri: str, play: Path) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "call", uri, "--play", str(play), "--hangup-after", str(CALL_S), "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


@pytest.mark.xdist_group("cpu")  # concurrent softphones and workers: one CPU-heavy test at a time
async def test_twenty_drops_across_concurrent_sip_calls(tmp_path: Path) -> None:
    play = looping_caller(tmp_path / "caller.wav")
    # every Realtime connection is aborted 2.5 s after it opens: mid-response, mid-turn, wherever it happens to be
    async with local_stack(workers=1, realtime_query="drop_after_s=2.5", emulator_settings={"speed": 4}) as stack:
        (port,) = stack.sip_ports
        phones = await asyncio.gather(*(call(f"sip:1000@127.0.0.1:{port}", play) for _ in range(CALLS)))
        for _ in range(100):
            if len(read_reports(stack.reports)) >= CALLS:
                break
            await asyncio.sleep(0.1)
        reports = read_reports(stack.reports)
        sessions = stack.emulator.sessions
    for phone in phones:  # no caller noticed: every call lasted until the caller hung up
        assert phone["answered"] and phone["hangup_by"] == "local" and phone["duration_s"] >= CALL_S - 0.5, phone
        assert phone["received"]["active_ms"] > 500, phone["received"]  # and heard the agent
    assert len(reports) == CALLS
    gaps = [g for r in reports for g in r["latency_ms"].get("recovery_gap", [])]
    assert sum(r["reconnects"] for r in reports) >= 20 and len(gaps) >= 20
    assert max(gaps) <= 1000, gaps
    for report in reports:
        assert report["end_reason"].startswith("caller hung up"), report["end_reason"]
        assert "RECOVERING" in report["phases"] and len(report["caller_transcript"]) >= 1
    # the conversation went on with context: later sessions were given the summary of the call so far
    summaries = [
        c["text"]
        for s in sessions
        for e in s.received
        if e["type"] == "conversation.item.create"
        for c in e["item"].get("content", [])
        if "reconnected" in c.get("text", "")
    ]
    assert any("Caller:" in text for text in summaries), summaries[:3]
