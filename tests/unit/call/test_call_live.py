"""A call on GPT-Live, in virtual time against the emulator's Live session: the call session acts on the dialect's
capabilities (no turn events, a continuous output stream, no cancel or truncate, tools through a delegation)."""

from __future__ import annotations

import itertools
import json

import pytest
from _call_harness import FRAME_S, TRANSFER_TARGET, Call, Result, run_call, tone_8k

from bridge import events as ev
from bridge.audio.frames import FRAME_MS
from bridge.call.link import SLACK_FRAMES
from bridge.call.turns import AGENT_SILENCE_S, MIN_SEPARATION_MS, TurnBuilder
from bridge.dialplan import BUILTIN_TOOLS, Dialplan
from bridge.realtime.dialects import LIVE
from bridge.realtime.profile import AgentProfile

GREETING_HZ, ANSWER_HZ, LINE_HZ = 400, 600, 1000
GREETING_TEXT = "Greet the caller briefly."
WELCOME = {"text": "Welcome to ACME.", "tone_hz": GREETING_HZ, "duration_ms": 1000}
HOURS = {
    "greeting": WELCOME,
    "turns": [
        {
            "hears": "What are your hours?",
            "reply": {"text": "We open at nine.", "tone_hz": ANSWER_HZ, "duration_ms": 2000},
        }
    ],
}


def live_plan(*, tools: tuple[str, ...] = (), audio_format: str = "pcm16") -> Dialplan:
    profile = AgentProfile.model_validate(
        {"model": "gpt-live-1", "audio_format": audio_format, "tools": [BUILTIN_TOOLS[t] for t in tools]}
    )
    return Dialplan(
        name="unit-live", match=("100",), greeting=GREETING_TEXT, transfer_target=TRANSFER_TARGET, profile=profile
    )


def kinds(result: Result) -> list[str]:
    return result.service.kinds(0)


async def one_question(call: Call) -> None:
    await call.idle()
    await call.turn(tone_8k(1000))
    call.phone.hang_up()


@pytest.mark.parametrize("audio_format", ["pcm16", "pcm16_16k", "g711_ulaw"])
def test_greeting_then_an_answer_heard_at_their_pitch(audio_format: str) -> None:
    result = run_call(one_question, LIVE, dialplan=live_plan(audio_format=audio_format), annotations=HOURS)
    report, phone = result.report, result.phone
    # the greeting is commentary; nothing else asks the model to speak (it answers the caller by itself)
    commentary = [e for e in result.service.received(0) if e["type"] == "session.commentary.append"]
    assert [e["content"] for e in commentary] == [GREETING_TEXT]
    assert kinds(result) == ["session.start", "session.commentary.append", "session.close"]
    greeting, answer = phone.spans()
    (question,) = phone.said
    assert (greeting.hz, answer.hz) == (GREETING_HZ, ANSWER_HZ)
    assert greeting.ms == pytest.approx(1000, abs=40) and answer.ms == pytest.approx(2000, abs=40)
    assert answer.start > question[1]  # after the caller's words
    # the caller's words reached the model as one continuous stream: a frame every 20 ms from the answer on
    appends = result.service.append_times(0)
    assert len(appends) >= round(phone.heard[-1][0] / FRAME_S) - 2
    assert max(b - a for a, b in itertools.pairwise(appends)) == pytest.approx(FRAME_S, abs=1e-6)
    # the turns rebuilt from transcript deltas, and honest phases: silence between replies is not speaking
    assert report.caller_transcript == ["What are your hours?"]
    assert report.agent_transcript == ["Welcome to ACME.", "We open at nine."]
    assert report.phases == ["IDLE", "THINKING", "SPEAKING", "LISTENING", "SPEAKING", "LISTENING", "ENDED"]
    assert report.first_audio_ms == pytest.approx(greeting.start * 1000, abs=1)
    assert result.service.errors(0) == [] and report.errors == []


def test_a_barge_in_silences_the_agent_within_one_playout_buffer() -> None:
    long_reply = {
        "greeting": {
            "text": "Welcome to ACME, let me tell you everything.",
            "tone_hz": GREETING_HZ,
            "duration_ms": 6000,
        }
    }

    async def scenario(call: Call) -> None:
        await call.until(lambda: call.phone.heard_ms(GREETING_HZ) >= 1500, what="the greeting under way")
        call.phone.say(tone_8k(800, hz=300))
        await call.until(lambda: bool(call.phone.said), what="the caller's words")
        await call.until(lambda: bool(call.task.done()) or call.now > call.phone.said[0][1] + 1.0, what="a second")
        call.phone.hang_up()

    result = run_call(scenario, LIVE, dialplan=live_plan(), annotations=long_reply)
    phone, report = result.phone, result.report
    (spoken,) = phone.said
    # the caller heard the agent for at most one playout buffer after starting to speak: the bridge's voice
    # detection needs a few frames, then the flush; nothing it still had (or the model still sent) came after
    depth_s = max(FRAME_MS, result.service.sessions[0].settings.delta_ms) / 1000.0
    last_heard = max(t for t, hz in phone.heard if hz == GREETING_HZ)
    assert spoken[0] <= last_heard < spoken[0] + 0.1 + depth_s
    assert phone.heard_ms(GREETING_HZ) < 6000
    # no cancel, no truncate on Live: only the flush; how long the model talked over the caller is reported
    assert kinds(result) == ["session.start", "session.commentary.append", "session.close"]
    assert report.barge_ins == 1 and report.truncates == []
    (talk_over,) = report.talk_over_ms
    assert 0 <= talk_over < 1000
    assert "talked_over" in [kind for _, kind, _ in report.timeline]
    assert report.phases[:5] == ["IDLE", "THINKING", "SPEAKING", "CANCELLING", "LISTENING"]
    assert result.service.errors(0) == []


def test_transfer_to_human_answers_the_delegation_and_refers_the_caller() -> None:
    human = {
        "greeting": WELCOME,
        "turns": [
            {
                "hears": "Can I talk to a person?",
                "reply": {"tool_call": {"name": "transfer_to_human", "arguments": {"reason": "asked for a person"}}},
            }
        ],
    }

    async def scenario(call: Call) -> None:
        await call.idle()
        call.phone.say(tone_8k(1000))
        await call.until(lambda: any(t[0] == "transfer" for t in call.phone.told), what="the REFER")
        call.phone.notify(200, "OK", final=True)
        await call.until(lambda: call.task.done(), what="the bridge leaving the call")

    settings = [{"tone_hz": LINE_HZ, "max_reply_ms": 1500}]
    result = run_call(
        scenario, LIVE, dialplan=live_plan(tools=("transfer_to_human",)), settings=settings, annotations=human
    )
    received = result.service.received(0)
    outputs = [e for e in received if e["type"] == "response.item.create"]
    (output,) = outputs
    assert json.loads(output["item"]["output"])["status"] == "transferring"
    # one continuation after the backend's response was done, and never a cancel
    assert kinds(result).count("response.create") == 1
    assert kinds(result).index("response.item.create") < kinds(result).index("response.create")
    assert result.phone.told == [
        ("ringing",),
        ("answer",),
        ("start_media",),
        ("transfer", TRANSFER_TARGET),
        ("hangup",),
    ]
    # the line announcing the transfer was heard before the REFER
    (refer,) = [e.t for e in result.trace.of("leg") if e.what == "transfer"]
    assert [s.hz for s in result.phone.spans()] == [GREETING_HZ, LINE_HZ]
    assert max(t for t, hz in result.phone.heard if hz) < refer
    assert result.report.end_reason == "transferred" and result.service.errors(0) == []


def test_a_key_press_reaches_the_model_as_text_without_asking_for_a_response() -> None:
    async def scenario(call: Call) -> None:
        await call.idle()
        call.phone.press("5")
        await call.until(lambda: call.phone.spoken_to_since(call.phone.last_voiced or 0.0) and call.now > 3.0)
        call.phone.hang_up()

    result = run_call(scenario, LIVE, dialplan=live_plan(), annotations={"greeting": WELCOME})
    thinking = [e["content"] for e in result.service.received(0) if e["type"] == "session.thinking.append"]
    assert thinking == ["The caller pressed the key 5 on the phone keypad."]
    assert "response.create" not in kinds(result) and result.report.dtmf == ["5"]
    assert result.service.errors(0) == []


def test_turns_close_on_the_other_speakers_gap_and_on_agent_silence() -> None:
    now = [0.0]
    finals: list[tuple[str, str]] = []
    turns = TurnBuilder(
        lambda e: finals.append(("caller", e.text)), lambda e: finals.append(("agent", e.text)), lambda: now[0]
    )

    def caller(text: str, start: int, end: int) -> None:
        turns.delta(ev.CallerTranscript(item_id="", text=text, final=False, start_ms=start, end_ms=end))

    def agent(text: str, start: int, end: int) -> None:
        turns.delta(ev.AgentTranscript(response_id="", item_id="", text=text, final=False, start_ms=start, end_ms=end))

    caller("What are", 0, 400)
    caller(" your hours?", 400, 900)
    agent("Well, we open", 900 + MIN_SEPARATION_MS - 1, 2000)  # too close to the caller's words to close their turn
    assert finals == []
    caller(" um", 2100, 2200)  # nor does a caller's fragment this close close the agent's
    assert finals == []
    agent(" at nine.", 2200 + MIN_SEPARATION_MS, 3200)
    assert finals == [("caller", "What are your hours? um")]
    now[0] = AGENT_SILENCE_S - 0.01
    turns.beat()
    assert len(finals) == 1
    now[0] = AGENT_SILENCE_S
    turns.beat()
    assert finals[-1] == ("agent", "Well, we open at nine.")
    caller("Thanks", 5000, 5400)
    turns.flush()
    assert finals[-1] == ("caller", "Thanks")
    # the agent's turn is over when the bridge knows it (the model stopped itself, a key, a tool call): the next
    # fragment, however close, starts a new turn; closing with nothing open closes nothing
    agent("Goodbye!", 6000, 6500)
    turns.close_agent()
    assert finals[-1] == ("agent", "Goodbye!")
    agent("Thanks for waiting.", 6500, 7000)
    turns.close_agent()
    turns.close_agent()
    assert finals[-2:] == [("agent", "Goodbye!"), ("agent", "Thanks for waiting.")]


def test_rollover_seeds_the_next_session_with_the_summary_at_its_start() -> None:
    async def scenario(call: Call) -> None:
        await call.idle()
        await call.turn(tone_8k(1000))
        await call.until(lambda: call.task.done() or len(call.service.sessions) > 1, what="the next session")
        await call.until(lambda: call.task.done() or call.now > 12.0, what="the swap")
        call.phone.hang_up()

    result = run_call(scenario, LIVE, dialplan=live_plan(), annotations=HOURS, max_session_s=10.0)
    start = result.service.received(1)[0]
    assert start["type"] == "session.start"
    (seed,) = start["session"]["input"]
    assert seed["role"] == "developer" and "What are your hours?" in seed["content"][0]["text"]
    assert [k for k in result.service.kinds(1) if k != "session.close"] == ["session.start"]  # nothing sent after it
    assert result.report.rollovers == 1 and result.service.errors(1) == []


def test_usage_counts_the_sessions_audio_time_and_the_backends_tokens() -> None:
    result = run_call(one_question, LIVE, dialplan=live_plan(), annotations=HOURS)
    usage = result.report.usage
    emulated = result.service.sessions[0].record.timeline
    closed = [t for t, direction, k in emulated if direction == "out" and k == "session.closed"]
    assert closed  # the final figure came with session.close
    # the emulator counts the session's timeline: about as long as the call
    assert usage["audio_seconds"] == pytest.approx(result.phone.heard[-1][0], abs=0.5)
    assert usage["audio_seconds"] > 0
    assert "usage" in [kind for _, kind, _ in result.report.timeline]


def test_a_stall_of_the_callers_audio_is_filled_with_silence_and_never_sent_in_a_burst() -> None:
    async def scenario(call: Call) -> None:
        await call.until(lambda: call.now > 1.0, what="a second of the call")
        call.phone.stall(300)
        await call.until(lambda: call.now > 2.0, what="the stall and after")
        call.phone.hang_up()

    result = run_call(scenario, LIVE, dialplan=live_plan(), annotations={"greeting": WELCOME})
    appends = result.service.append_times(0)
    gaps = [b - a for a, b in itertools.pairwise(appends)]
    same_instant = max(sum(1 for t in appends if abs(t - u) < 1e-9) for u in appends)
    assert max(gaps) <= (SLACK_FRAMES + 3) * FRAME_S  # silence filled the stall: the slack, a beat, the phase
    # the held frames did not go out as a burst: at most the slack behind and the slack ahead, not the stall's 15
    assert same_instant <= 2 * SLACK_FRAMES + 2
    # a frame every 20 ms over the call, within the slack
    assert abs(len(appends) - (appends[-1] - appends[0]) / FRAME_S) <= SLACK_FRAMES + 1
