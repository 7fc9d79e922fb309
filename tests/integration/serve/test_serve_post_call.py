"""After the call, through a real `serve` (a worker, Redis, the emulator, the pjsua2 softphone): the call's own model
session is asked out of band for a summary, a disposition and the plan's fields, and the report line and the call's
record in Redis carry the answer and the compliance checks; where the model cannot answer (its session dropped as
it is asked, a dialect without text out of band) the record says why and invents nothing."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from bridge import events as ev
from bridge.audio.wav import write_wav
from bridge.call.report import noted
from bridge.devkit.redis_server import redis_server_binary
from bridge.store import keys
from tests.integration.edge._edge import Node, call_events, serve_node, softphone_call, wait_report

pytestmark = [
    pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary"),
    pytest.mark.asyncio(loop_scope="module"),
]
GA_NUMBER, LIVE_NUMBER, BYE_NUMBER = "7100", "7101", "7102"
RATE = 8000
GREETING = "Welcome to Acme. This call may be recorded for quality."
HEARS = "Where is my order 4417? I would like a refund please."
ANSWER = "Your refund for order 4417 is on its way."
POST_CALL = {
    "summary": True,
    "dispositions": ["order_status", "refund", "other"],
    "fields": {
        "type": "object",
        "properties": {"order_number": {"type": "string", "pattern": "[0-9]{4}"}},
        "required": ["order_number"],
    },
}
CHECKS = {
    "disclosure": {"text": "this call may be recorded", "within_s": 20},
    "never_say": ["guaranteed", "on its way"],
    "max_dead_air_s": 30,
}
GA_PLAN = {
    "name": "orders",
    "match": [GA_NUMBER],
    "dialect": "ga",
    "greeting": "Greet the caller.",
    "profile": {
        "instructions": "Answer briefly.",
        "audio_format": "pcm16",
        "input_transcription": {"model": "whisper-1"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
    },
    "post_call": POST_CALL,
    "checks": CHECKS,
}
LIVE_PLAN = {
    "name": "orders-live",
    "match": [LIVE_NUMBER],
    "dialect": "live",
    "greeting": "Greet the caller.",
    "profile": {"instructions": "Answer briefly.", "audio_format": "pcm16"},
    "post_call": POST_CALL,
}


BYE_PLAN = {
    **GA_PLAN,
    "name": "orders-bye",
    "match": [BYE_NUMBER],
    "profile": {**GA_PLAN["profile"], "tools": ["end_call"]},
}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def node(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Node, Path]]:
    work = tmp_path_factory.mktemp("postcall")
    async with serve_node(work, [GA_PLAN, LIVE_PLAN, BYE_PLAN]) as edge:
        yield edge, work


def _speech(path: Path) -> Path:
    """4 s of quiet (the greeting plays), 1.5 s of a 300 Hz tone (the caller's turn), then quiet."""
    t = np.arange(int(1.5 * RATE)) / RATE
    samples = np.concatenate([np.zeros(4 * RATE), np.sin(2 * np.pi * 300 * t) * 0.2, np.zeros(RATE)])
    write_wav(path, (samples * 32767).astype("<i2").tobytes())
    return path


async def _phone(node: Node, number: str, *args: str) -> dict[str, Any]:
    return await softphone_call(node.sip_port, number, *args)


async def _hash(node: Node, call_id: str) -> dict[str, str]:
    client = aioredis.from_url(node.redis.url, decode_responses=True)
    try:
        return {str(k): str(v) for k, v in (await client.hgetall(keys.call(call_id))).items()}
    finally:
        await client.aclose()


async def _calls_json(node: Node, call_id: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "calls", call_id, "--json", "--redis-url", node.redis.url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return dict(json.loads(out))


async def _ordered_call(node: Node, work: Path, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """A call to the GA plan: the greeting, the caller's turn (``HEARS``), the agent's answer, the caller hangs up."""
    node.emulator.queue_next(
        settings={"speed": 4.0, **(settings or {})},
        annotations={"greeting": {"text": GREETING}, "turns": [{"hears": HEARS, "reply": {"text": ANSWER}}]},
    )
    phone = await _phone(node, GA_NUMBER, "--play", str(_speech(work / "turn.wav")), "--hangup-after", "10")
    assert phone["answered"], phone
    return await wait_report(node, phone["call_id"], within_s=30)


async def test_the_report_line_and_redis_carry_the_models_summary_disposition_fields_and_checks(
    node: tuple[Node, Path],
) -> None:
    edge, work = node
    report = await _ordered_call(edge, work)
    assert report["ended_by"] == "caller"
    post = report["post_call"]
    assert post["status"] == "ok", post
    # the emulator answers from the call's own transcript: the caller's words and the agent's
    assert HEARS in post["summary"] and ANSWER in post["summary"]
    assert post["disposition"] == "refund"  # "order_status" is not said; "refund" is
    assert post["fields"] == {"order_number": "4417"}
    # the question's tokens count in the call's cost: its response ended just before the answer was read
    ended = noted(report, ev.ResponseEnded)
    asked_at = noted(report, ev.PostCallDone)[0][0]
    asked = [r for t, r in ended if t <= asked_at][-1]
    assert asked.usage is not None and asked.usage.output_tokens > 0
    assert report["usage"]["output_tokens"] == sum(r.usage.output_tokens for _, r in ended if r.usage is not None)
    checks = {c["name"]: c for c in report["checks"]}
    assert list(checks) == ["disclosure", "never_say", "max_dead_air"]
    assert checks["disclosure"]["passed"], checks["disclosure"]
    assert not checks["never_say"]["passed"] and "'on its way'" in checks["never_say"]["detail"]
    assert checks["max_dead_air"]["passed"]
    state = await _hash(edge, report["call_id"])
    assert state["disposition"] == "refund" and state["post_call_status"] == "ok"
    assert HEARS in state["call_summary"]
    assert state["failed_checks"] == "never_say"
    # `callbridge calls CALL_ID --json` reads the same from Redis, as the report line has it
    shown = await _calls_json(edge, report["call_id"])
    assert shown["post_call"] == post and shown["checks"] == report["checks"]
    entries = await call_events(edge, report["call_id"])
    kinds = [e["kind"] for e in entries]
    # asked after the call's last turn (the caller's hang-up ends the call), answered before the call's end
    assert kinds.index("post_call") > len(kinds) - 1 - kinds[::-1].index("agent_transcript")
    assert kinds[-2:] == ["checks", "ended"]


async def test_a_session_dropped_as_it_is_asked_leaves_no_summary_and_says_why(node: tuple[Node, Path]) -> None:
    edge, work = node
    report = await _ordered_call(edge, work, {"drop_on_post_call": True})
    assert report["post_call"] == {"summary": None, "disposition": None, "fields": None, "status": "session lost"}
    assert report["agent_transcript"]  # the call itself went on as usual
    state = await _hash(edge, report["call_id"])
    assert state["post_call_status"] == "session lost" and state["call_summary"] == "" and state["disposition"] == ""


async def test_a_dialect_that_cannot_answer_out_of_band_is_marked_so(node: tuple[Node, Path]) -> None:
    edge, work = node
    edge.emulator.queue_next(settings={"speed": 4.0})
    phone = await _phone(edge, LIVE_NUMBER, "--play", str(_speech(work / "live.wav")), "--hangup-after", "4")
    assert phone["answered"], phone
    report = await wait_report(edge, phone["call_id"], within_s=30)
    assert report["dialect"] == "live"
    assert report["post_call"] == {
        "summary": None,
        "disposition": None,
        "fields": None,
        "status": "dialect cannot answer out of band",
    }
    assert report["checks"] == []  # the plan has none


async def test_the_agents_bye_is_not_held_back_by_a_slow_answer(node: tuple[Node, Path]) -> None:
    edge, work = node
    # the caller says goodbye: the agent says goodbye and ends the call (end_call); the model then takes 3 s
    # (12 s of service time at speed 4) to answer the post-call question
    edge.emulator.queue_next(
        settings={"speed": 4.0, "post_call_delay_ms": 12_000},
        annotations={"greeting": {"text": GREETING}, "turns": [{"hears": "That is all, goodbye."}]},
    )
    phone = await _phone(edge, BYE_NUMBER, "--play", str(_speech(work / "bye.wav")), "--hangup-after", "25")
    assert phone["answered"] and phone["hangup_by"] == "remote", phone
    report = await wait_report(edge, phone["call_id"], within_s=40)
    assert report["ended_by"] == "agent"
    # the answer came (no order number was said, and the plan's fields require one: it is not taken)
    assert report["post_call"] == {
        "summary": None,
        "disposition": None,
        "fields": None,
        "status": "answer does not fit the schema: fields",
    }
    times = {kind: t for t, kind, _ in report["timeline"]}
    answered, bye, asked = times["answered"], times["hangup"], times["post_call"]
    assert asked - bye >= 3000  # the answer came 3 s after the agent hung up ...
    # ... and the caller's line ended with the agent's BYE, not after the answer
    assert phone["duration_s"] * 1000 < bye - answered + 1500, (phone["duration_s"], bye - answered)
