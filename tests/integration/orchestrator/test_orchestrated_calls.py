"""Orchestrated calls end to end (issue 25's done-when): a real pjsua2 caller, a worker of ``callbridge serve`` (a
pool of one), the emulator as the model, and the contact center's orchestrator as a real aiohttp server started by
the test. The model answers nothing on its own; what the caller hears is what the orchestrator decided.

Every line the emulator speaks without a scripted reply is a tone of ``LINE_HZ`` as long as its text (60 ms a
character), so the caller's recording tells a say, a filler and an answer apart by when they play and how long
they last; the caller's questions are pieces of the bundled recorded speech, transcribed by the emulator's
annotations.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from _bridge_helpers import (
    LOCALHOST,
    RATE,
    SILENCE_MS,
    SINE_PEAK_TO_RMS_DB,
    BridgeStack,
    Region,
    active_regions,
    assert_tone,
    call,
    dbfs,
    finish,
    free_port,
    listener,
    one_session,
    read_pcm_wav,
    segment,
    silence,
    speech,
    stop,
    timeline,
    tone,
    write_pcm_wav,
)
from aiohttp import web

from bridge.emulator.session import SessionRecord

# one stack (emulator, worker, orchestrator) for the whole module: each test sets the orchestrator's answers
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

LINE_HZ, PEAK_DBFS, MS_PER_CHAR = 700.0, -12.0, 60.0
CALLER_HZ, CALLER_DBFS = 1020.0, -10.0
QUESTION = "Where is my order?"
LINE = "Your order 4471 ships today."
FILLER = "One moment, please."
NUMBERS = {"ga": "3201", "beta": "3202", "live": "3203"}
DOWN_NUMBER = "3204"  # GA, its orchestrator's port has nobody listening
HASTY_NUMBER = "3205"  # GA, timeout_ms 400: the filler comes sooner


def ms(text: str) -> float:
    """How long the emulator speaks ``text``."""
    return len(text) * MS_PER_CHAR


# -- the orchestrator ------------------------------------------------------------------------------------------


@dataclass
class Answer:
    """One scripted answer: a decision (JSON) or a raw body, after ``delay_s``."""

    decision: dict[str, Any] | None = None
    raw: bytes | None = None
    delay_s: float = 0.0


@dataclass
class OrchestratorServer:
    """The contact center's service: answers each POST with the next :class:`Answer` (then ``nothing``), and keeps
    every request's JSON body."""

    answers: list[Answer] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}/turn"

    async def __aenter__(self) -> OrchestratorServer:
        app = web.Application()
        app.router.add_post("/turn", self._turn)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOCALHOST, 0).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _turn(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/json"
        self.requests.append(await request.json())
        answer = self.answers.pop(0) if self.answers else Answer({"action": "nothing"})
        await asyncio.sleep(answer.delay_s)
        if answer.raw is not None:
            return web.Response(body=answer.raw, content_type="application/json")
        return web.json_response(answer.decision)


# -- the stack -------------------------------------------------------------------------------------------------


def plans(url: str, transfer_target: str) -> list[dict[str, Any]]:
    """One orchestrated plan per dialect; GA ones whose orchestrator is down, or hasty."""
    vad = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": SILENCE_MS}
    orchestrator = {"url": url, "timeout_ms": 1000, "give_up_ms": 4000, "filler": FILLER}
    out = []
    for dialect, number in NUMBERS.items():
        profile: dict[str, Any] = {"instructions": "Read what you are asked to.", "audio_format": "pcm16",
                                   "turn_detection": vad, "tools": []}  # fmt: skip
        if dialect == "live":  # Live takes turns itself, at 16 kHz
            profile = {**profile, "audio_format": "pcm16_16k", "model": "gpt-live-1"}
            del profile["turn_detection"]
        out.append({"name": f"orch-{dialect}", "match": [number], "dialect": dialect, "profile": profile,
                    "orchestrator": orchestrator, "outage": {"failover": "transfer"},
                    "transfer_target": transfer_target})  # fmt: skip
    down = {**out[0], "name": "orch-down", "match": [DOWN_NUMBER]}
    down["orchestrator"] = {**orchestrator, "url": f"http://{LOCALHOST}:{free_port()}/turn"}
    hasty = {
        **out[0],
        "name": "orch-hasty",
        "match": [HASTY_NUMBER],
        "orchestrator": {**orchestrator, "timeout_ms": 400},
    }
    return [*out, down, hasty]


@dataclass
class Bed:
    stack: BridgeStack
    orch: OrchestratorServer
    agent_port: int  # the plans' transfer_target: a listening softphone there, in the tests that transfer

    @property
    def target(self) -> str:
        return f"sip:agent@{LOCALHOST}:{self.agent_port}"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bed]:
    agent_port = free_port()
    async with OrchestratorServer() as orch:
        target = f"sip:agent@{LOCALHOST}:{agent_port}"
        async with BridgeStack(tmp_path_factory.mktemp("stack"), extra_plans=plans(orch.url, target)) as stack:
            yield Bed(stack, orch, agent_port)


def answering(bed: Bed, *answers: Answer) -> tuple[BridgeStack, OrchestratorServer]:
    """The orchestrator's answers for this test's call (and no requests yet)."""
    bed.orch.answers[:] = answers
    bed.orch.requests.clear()
    return bed.stack, bed.orch


def annotate(stack: BridgeStack, *hears: str, **settings: Any) -> None:
    """The next call's model: transcribes each caller turn as ``hears``, speaks at ``LINE_HZ``."""
    stack.emu.queue_next(
        settings={"tone_hz": LINE_HZ, "tone_dbfs": PEAK_DBFS, "ms_per_char": MS_PER_CHAR, **settings},
        annotations=[{"hears": h} for h in hears],
    )


async def until(predicate: Callable[[], Any], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {within_s} s: {what}")
        await asyncio.sleep(0.05)


def lines_heard(wav: Path) -> tuple[Any, list[Region]]:
    heard, rate = read_pcm_wav(wav)
    assert rate == RATE
    return heard, active_regions(heard, RATE, floor_dbfs=-45.0)


def assert_line(heard: Any, region: Region, text: str) -> None:
    """``region`` of the caller's recording is the emulator speaking ``text``: its tone, level and length."""
    assert region.seconds == pytest.approx(ms(text) / 1000, abs=0.1), (text, region)
    body = segment(heard, RATE, region.start_s + 0.05, region.end_s - 0.05)
    assert_tone(body, RATE, LINE_HZ)
    assert dbfs(body) == pytest.approx(PEAK_DBFS - SINE_PEAK_TO_RMS_DB, abs=1.5)


def responses(record: SessionRecord) -> list[dict[str, Any]]:
    return [e.get("response") or {} for e in record.received if e.get("type") == "response.create"]


def assert_model_answered_nothing_itself(record: SessionRecord, dialect: str) -> None:
    if dialect == "live":
        kinds = record.types_received()
        assert "session.thinking.append" not in kinds and "response.create" not in kinds
    else:
        assert all(r.get("conversation") == "none" for r in responses(record)), responses(record)


# -- the tests -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["ga", "live"])  # beta: in the barge-in test below
async def test_a_say_is_heard_and_is_exactly_the_agent_transcript(bed: Bed, tmp_path: Path, dialect: str) -> None:
    play, heard_wav = tmp_path / "caller.wav", tmp_path / "heard.wav"
    write_pcm_wav(play, silence(0.3), speech(0.0, 1.2), silence(5.0))
    s, orch = answering(bed, Answer({"action": "say", "text": LINE}))
    annotate(s, QUESTION)
    before = len(s.emu.sessions)
    done = await call(s.uri(NUMBERS[dialect]), play=play, record=heard_wav, hangup_after=5.0)
    assert done.returncode == 0, done.describe()
    assert done.report is not None
    report = await s.report(done.report["call_id"])
    record = one_session(s.emu, before)

    (request,) = orch.requests
    assert (request["version"], request["event"], request["turn"], request["dialect"]) == (
        "1",
        "turn",
        QUESTION,
        dialect,
    )
    assert (request["dialplan"], request["called"], request["sequence"]) == (f"orch-{dialect}", NUMBERS[dialect], 1)
    assert request["call_id"] == report["call_id"]
    assert request["transcript"] == [{"role": "caller", "text": QUESTION}]

    assert report["dialect"] == dialect and report["errors"] == []
    assert report["agent_transcript"] == [LINE]
    assert [{k: v for k, v in d.items() if k != "ms"} for d in report["decisions"]] == [{"action": "say", "text": LINE}]
    kinds = [k for _, k, _ in report["timeline"]]
    assert kinds.index("caller_transcript") < kinds.index("orchestrator_decision") < kinds.index("agent_transcript")

    # the model spoke only what it was told to, out of band (Live: as commentary)
    assert_model_answered_nothing_itself(record, dialect)
    if dialect == "live":
        commentary = [e for e in record.received if e.get("type") == "session.commentary.append"]
        assert len(commentary) == 1 and LINE in json.dumps(commentary[0])
    else:
        (say,) = responses(record)
        assert say["conversation"] == "none" and LINE in say["instructions"]

    heard, regions = lines_heard(heard_wav)
    (line,) = regions
    assert line.start_s > 1.5  # after the question
    assert_line(heard, line, LINE)


async def test_a_transfer_decision_refers_the_caller_to_an_agent_who_hears_them(bed: Bed, tmp_path: Path) -> None:
    agent_port, target = bed.agent_port, bed.target
    play, heard_wav, agent_wav = tmp_path / "caller.wav", tmp_path / "heard.wav", tmp_path / "agent.wav"
    bye = "Let me put you through."
    # the question, then (after the line and the transfer, about 3.5 s in) a tone for the agent to hear
    write_pcm_wav(play, silence(0.3), speech(0.0, 1.2), silence(3.5), tone(CALLER_HZ, 2.5, CALLER_DBFS))
    s, orch = answering(bed, Answer({"action": "transfer", "text": bye}))
    annotate(s, QUESTION)
    agent = await listener(agent_port, agent_wav, duration=15)
    try:
        done = await call(s.uri(NUMBERS["ga"]), play=play, record=heard_wav, hangup_after=7.5)
    finally:
        agent_done = await finish(agent, timeout=5) if agent.returncode is None else await stop(agent)
    assert done.returncode == 0, done.describe()
    assert done.report is not None
    report = await s.report(done.report["call_id"])

    assert [r["turn"] for r in orch.requests] == [QUESTION]
    assert report["end_reason"] == "transferred"
    assert timeline(report, "transfer")[0][1] == target
    assert report["agent_transcript"] == [bye] and report["tool_calls"] == []
    transfer = done.report["transfer"]
    assert transfer is not None and transfer["sip_status"] == 200 and transfer["answered"] is True
    # the caller heard the line before being transferred...
    heard, regions = lines_heard(heard_wav)
    assert regions, "the caller heard nothing before the transfer"
    assert_line(heard, regions[0], bye)
    # ...and the third user agent hears the caller
    assert agent_done.report is not None, agent_done.describe()
    (answered,) = agent_done.report["calls"]
    assert answered["answered"] is True
    agent_heard, agent_regions = lines_heard(agent_wav)
    longest = max(agent_regions, key=lambda r: r.seconds)
    assert longest.seconds >= 1.5, agent_regions
    body = segment(agent_heard, RATE, longest.start_s + 0.05, longest.end_s - 0.05)
    assert_tone(body, RATE, CALLER_HZ)
    assert dbfs(body) == pytest.approx(CALLER_DBFS, abs=1.0)


async def test_a_slow_orchestrator_gets_the_filler_then_its_answer(bed: Bed, tmp_path: Path) -> None:
    play, heard_wav = tmp_path / "caller.wav", tmp_path / "heard.wav"
    write_pcm_wav(play, silence(0.3), speech(0.0, 1.2), silence(6.0))
    # past timeout_ms (400 ms), within give_up_ms: the filler, then the line
    s, orch = answering(bed, Answer({"action": "say", "text": LINE}, delay_s=1.8))
    annotate(s, QUESTION)
    before = len(s.emu.sessions)
    done = await call(s.uri(HASTY_NUMBER), play=play, record=heard_wav, hangup_after=6.5)
    assert done.returncode == 0, done.describe()
    assert done.report is not None
    report = await s.report(done.report["call_id"])
    record = one_session(s.emu, before)

    assert [r["turn"] for r in orch.requests] == [QUESTION]  # one request: the filler is the bridge's own
    assert report["agent_transcript"] == [FILLER, LINE]
    kinds = [k for _, k, _ in report["timeline"]]
    assert kinds.index("orchestrator_filler") < kinds.index("orchestrator_decision")
    (decision,) = report["decisions"]
    assert decision["action"] == "say" and decision["ms"] >= 1800
    assert [r["instructions"] for r in responses(record)] == [
        r["instructions"] for r in responses(record) if r.get("conversation") == "none"
    ]
    assert len(responses(record)) == 2  # the filler and the line, both out of band
    heard, regions = lines_heard(heard_wav)
    filler, *held, line = regions  # between them, once the filler has played out: the soft hold (bridge.call.waiting)
    assert_line(heard, filler, FILLER)
    assert_line(heard, line, LINE)
    assert line.start_s - filler.start_s >= 1.3  # the line came with the answer, not with the filler
    assert all(filler.end_s <= r.start_s and r.end_s <= line.start_s for r in held)


async def test_an_orchestrator_that_is_down_fails_over_to_a_human(bed: Bed, tmp_path: Path) -> None:
    agent_port, target = bed.agent_port, bed.target
    play, agent_wav = tmp_path / "caller.wav", tmp_path / "agent.wav"
    write_pcm_wav(play, silence(0.3), speech(0.0, 1.2), silence(2.0), tone(CALLER_HZ, 2.5, CALLER_DBFS))
    s, orch = answering(bed)
    annotate(s, QUESTION)
    agent = await listener(agent_port, agent_wav, duration=15)
    try:
        done = await call(s.uri(DOWN_NUMBER), play=play, hangup_after=6.5)
    finally:
        agent_done = await finish(agent, timeout=5) if agent.returncode is None else await stop(agent)
    assert done.returncode == 0, done.describe()
    assert done.report is not None
    report = await s.report(done.report["call_id"])

    assert orch.requests == []  # the plan's orchestrator was another, unreachable, one
    assert report["end_reason"] == "transferred"
    (error,) = report["decisions"]
    assert (error["error"], error["then"]) == ("down", "failover")
    assert "orchestrator_filler" not in [k for _, k, _ in report["timeline"]]  # at once, not after timeout_ms
    assert timeline(report, "transfer")[0][1] == target
    assert agent_done.report is not None, agent_done.describe()
    agent_heard, agent_regions = lines_heard(agent_wav)
    longest = max(agent_regions, key=lambda r: r.seconds)
    assert_tone(segment(agent_heard, RATE, longest.start_s + 0.05, longest.end_s - 0.05), RATE, CALLER_HZ)


async def test_invalid_json_is_counted_and_the_call_goes_on(bed: Bed, tmp_path: Path) -> None:
    play, heard_wav = tmp_path / "caller.wav", tmp_path / "heard.wav"
    # a question, its answer (the model's own), a second question, its answer (the orchestrator's say)
    write_pcm_wav(play, silence(0.3), speech(0.0, 1.2), silence(3.0), speech(1.3, 0.8), silence(3.0))
    second = "And when will it arrive?"
    s, orch = answering(bed, Answer(raw=b'{"action": "say", "text": '), Answer({"action": "say", "text": LINE}))
    annotate(s, QUESTION, second)
    before = len(s.emu.sessions)
    done = await call(s.uri(NUMBERS["ga"]), play=play, record=heard_wav, hangup_after=8.3)
    assert done.returncode == 0, done.describe()
    assert done.report is not None
    report = await s.report(done.report["call_id"])
    record = one_session(s.emu, before)

    assert [r["turn"] for r in orch.requests] == [QUESTION, second]
    error, decision = report["decisions"]
    assert (error["error"], error["then"]) == ("invalid_json", "respond")
    assert decision["action"] == "say"
    (logged,) = [s for _, s in timeline(report, "orchestrator_error")]
    assert logged.startswith("invalid_json:") and logged.endswith("(respond)")
    # the model answered the broken turn itself (in band), then read the orchestrator's line
    echo = f"I heard you say: {QUESTION}."
    assert report["agent_transcript"] == [echo, LINE]
    assert [r.get("conversation") for r in responses(record)] == [None, "none"]
    assert report["end_reason"].startswith("caller hung up")
    heard, regions = lines_heard(heard_wav)
    first, last = regions
    assert_line(heard, first, echo)
    assert_line(heard, last, LINE)


@pytest.mark.parametrize(("dialect", "speed"), [("ga", 1.0), ("beta", 4.0)])
async def test_a_barge_in_during_a_say_cancels_no_inactive_response_and_is_reported(
    bed: Bed, tmp_path: Path, dialect: str, speed: float
) -> None:
    """At speed 1 the say's response is still being generated when the caller speaks (the bridge cancels it); at
    speed 4 the model has finished sending it and only the playout is left (the bridge must not cancel)."""
    long_line = "Your order 4471 left our warehouse this morning and should reach you by Friday afternoon."
    play, heard_wav = tmp_path / "caller.wav", tmp_path / "heard.wav"
    # the say starts about 2.1 s in and lasts 5.3 s: the caller speaks over it at 3.5 s
    write_pcm_wav(play, silence(0.3), speech(0.0, 1.2), silence(2.0), speech(1.3, 0.8), silence(2.5))
    s, orch = answering(bed, Answer({"action": "say", "text": long_line}), Answer({"action": "nothing"}))
    annotate(s, QUESTION, "Which order?", speed=speed, delta_ms=100)
    before = len(s.emu.sessions)
    done = await call(s.uri(NUMBERS[dialect]), play=play, record=heard_wav, hangup_after=6.5)
    assert done.returncode == 0, done.describe()
    assert done.report is not None
    report = await s.report(done.report["call_id"])
    record = one_session(s.emu, before)
    await until(lambda: record.closed, 5, "the model session closed")

    assert record.errors == [], record.errors  # no response_cancel_not_active
    assert_model_answered_nothing_itself(record, dialect)
    assert report["errors"] == []
    assert "conversation.item.truncate" not in record.types_received()  # a say is in no conversation
    assert all(c["ok"] for c in record.cancels), record.cancels
    if speed == 1.0:
        assert [c["by"] for c in record.cancels] == ["client"]
    assert report["barge_ins"] == 1 and report["truncates"] == []
    # the next request says what the caller heard of the say
    assert [r["turn"] for r in orch.requests] == [QUESTION, "Which order?"]
    interrupted = orch.requests[1]["interrupted"]
    assert interrupted is not None and interrupted["text"] == long_line
    assert 500 < interrupted["played_ms"] < ms(long_line), interrupted
    assert long_line.startswith(interrupted["heard"]) and interrupted["heard"].strip(), interrupted
    heard, regions = lines_heard(heard_wav)
    cut = regions[0]
    assert 0.5 < cut.seconds < ms(long_line) / 1000 - 1.0, cut  # cut short at the barge-in
    assert_tone(segment(heard, RATE, cut.start_s + 0.05, cut.end_s - 0.05), RATE, LINE_HZ)
