"""The call session's smaller collaborators, alone: the agent's playback and the barge-in cut, tool calls and their
waiting action, and the caller turns a lost session took along."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fakes.clock import Clock

from bridge import events as ev
from bridge.audio import PassthroughDownlink, PlayoutBuffer, ulaw_encode
from bridge.audio.resample import Downsampler
from bridge.call.bargein import BargeIn
from bridge.call.core import Transfer
from bridge.call.flow import CallFlow
from bridge.call.latency import LatencyMeter
from bridge.call.outage import HOLD_ITEM
from bridge.call.playback import Playback
from bridge.call.report import CallReport
from bridge.call.state import PhaseMachine
from bridge.call.toolcalls import LINE_TIMEOUT_S, TRANSFER_GOES_AHEAD, Handover, ToolCalls
from bridge.call.transcripts import Transcripts
from bridge.call.waiting import WAIT_HOLD_ITEM
from bridge.dialplan import Dialplan

FRAME_ULAW = 160  # 20 ms of G.711 at 8 kHz


def chunk(response: str, item: str, frames: int, level: int = 1000) -> ev.AudioChunk:
    pcm = level.to_bytes(2, "little", signed=True) * (80 * frames * 2)
    return ev.AudioChunk(response, item, ulaw_encode(pcm)[: FRAME_ULAW * frames])


class Agent:
    """Playback and barge-in wired as the session wires them, on a fake clock."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.report = CallReport("c1", "ga", "support")
        self.reports: list[ev.Report] = []
        self.sent: list[ev.Command] = []
        self.playout = PlayoutBuffer(clock=self.clock)
        latency = LatencyMeter(self.report, self.reports.append, self.clock)
        self.playback = Playback(self.playout, PassthroughDownlink("ulaw"), latency, self.clock)
        self.barge_in = BargeIn(self.playback, self.sent.append, self.reports.append, self.report)

    def play(self, frames: int) -> None:
        """The media clock pulls ``frames`` frames, 20 ms apart."""
        for _ in range(frames):
            self.playout.pop_frame()
            self.clock.now += 0.02


def test_a_barge_in_cancels_the_response_and_truncates_to_what_was_heard() -> None:
    agent = Agent()
    agent.playback.started("r1")
    assert agent.playback.push(chunk("r1", "i1", 10)) and agent.playback.busy
    agent.play(4)
    agent.barge_in.cut("caller spoke over the agent")
    assert agent.sent == [ev.CancelResponse("r1"), ev.Truncate("i1", 80)]
    assert [r for r in agent.reports if not isinstance(r, ev.Latency)] == [
        ev.TruncateSent("i1", 80),
        ev.BargeIn("caller spoke over the agent", 0.0),  # 4 frames handed out over 80 ms: what the caller heard
    ]
    assert agent.report.truncates == [{"item_id": "i1", "audio_end_ms": 80}] and agent.report.barge_ins == 1
    assert agent.playback.idle and agent.playback.audio_item is None
    assert not agent.playback.push(chunk("r1", "i1", 2))  # the cancelled response's audio still in flight
    assert agent.playout.idle


def test_a_barge_in_the_services_vad_cancelled_sends_only_the_truncate() -> None:
    agent = Agent()
    agent.playback.started("r1")
    assert agent.playback.push(chunk("r1", "i1", 10))
    agent.play(3)
    agent.barge_in.cut("caller spoke over the agent", service_cancelled=True)
    assert agent.sent == [ev.Truncate("i1", 60)]  # no cancel: it would meet response_cancel_not_active
    assert agent.report.barge_ins == 1 and agent.playback.idle
    assert not agent.playback.push(chunk("r1", "i1", 2))  # the response is still dropped as cancelled


def test_items_queued_but_never_heard_are_truncated_to_zero_and_nothing_is_cancelled_once_done() -> None:
    agent = Agent()
    agent.playback.started("r1")
    agent.playback.push(chunk("r1", "i1", 3))
    agent.playback.push(chunk("r1", "i2", 3))
    agent.playback.ended("r1")  # generated in full: no response to cancel
    agent.play(1)
    agent.barge_in.cut("caller pressed a key")
    assert agent.sent == [ev.Truncate("i1", 20), ev.Truncate("i2", 0)]


def test_the_service_s_answer_to_a_truncate_is_read_once() -> None:
    agent = Agent()
    refusal = ev.ErrorEvent(ev.ErrorClass.PROTOCOL, "item_not_found", "no such item")
    assert not agent.barge_in.refused(refusal)  # no truncate outstanding: just an error
    agent.playback.started("r1")
    agent.playback.push(chunk("r1", "i1", 2))
    agent.barge_in.cut("x")
    assert agent.barge_in.awaiting_truncate
    assert agent.barge_in.refused(refusal) and not agent.barge_in.awaiting_truncate
    assert agent.reports[-1] == ev.TruncateRefused("no such item")
    agent.barge_in.cut("y")  # nothing queued now: no truncate
    assert not agent.barge_in.awaiting_truncate
    agent.barge_in.confirmed(ev.ItemTruncated("i1", 0, 0))
    assert agent.reports[-1] == ev.Truncated("i1", 0)


def test_losing_the_session_mid_answer_says_whether_the_answer_was_cut() -> None:
    agent = Agent()
    agent.playback.started("r1")
    assert agent.playback.drop_response() == (True, False)  # under way, no audio yet: asked for, not cut
    agent.playback.started("r2")
    agent.playback.push(chunk("r2", "i2", 1))
    assert agent.playback.drop_response() == (True, True)
    assert agent.playback.drop_response() == (False, False)


# ------------------------------------------------------------------------------------------------ tool calls
PLAN = Dialplan.model_validate(
    {
        "name": "support",
        "match": ["100"],
        "transfer_target": "sip:agent@pbx.example",
        "profile": {"tools": ["transfer_to_human", "end_call"]},
    }
)


class Leg:
    call_id = "c1"

    def __init__(self) -> None:
        self.did: list[str] = []

    def transfer(self, uri: str) -> None:
        self.did.append(f"transfer {uri}")

    def hangup(self, reason: str | None = None) -> None:
        self.did.append("hangup")

    def hold(self, wav: str) -> None:
        self.did.append(f"hold {wav}")

    def unhold(self) -> None:
        self.did.append("unhold")


class Desk:
    """The call's acts as the tools see them (:class:`~bridge.call.acts.CallActs`), and their tools."""

    ending = False
    service_interrupts = False

    def __init__(self, warm: bool = False) -> None:
        self.clock, self.leg = Clock(), Leg()
        self.warm: list[str] = []  # the warm transfers started
        self.sent: list[ev.Command] = []
        self.reports: list[ev.Report] = []
        self.ended: list[tuple[str, str]] = []
        self.report = CallReport("c1", "ga", "support")
        latency = LatencyMeter(self.report, self.reports.append, self.clock)
        playback = Playback(PlayoutBuffer(clock=self.clock), PassthroughDownlink("ulaw"), latency, self.clock)
        self.flow = CallFlow(PhaseMachine("c1", clock=self.clock), lambda action, why: None)
        handover = Handover(self.flow, self.warm.append if warm else None, "hold.wav")
        leg: Any = self.leg  # the two methods used
        self.tools = ToolCalls(PLAN, leg, self, playback, send=self.sent.append, handover=handover)

    def emit(self, report: ev.Report) -> None:
        self.reports.append(report)

    def end(self, reason: str, by: ev.EndedBy, outcome: ev.CallOutcome = ev.CallOutcome.COMPLETED) -> None:
        self.ended.append((reason, outcome))

    def interrupt(self, why: str, agent_busy: bool, *, service_cancelled: bool = False) -> None:
        raise AssertionError("the tools never interrupt the call")

    def start_pump(self) -> None:
        raise AssertionError("the tools never open a session")


def test_a_transfer_waits_for_its_line_to_start_and_play_out() -> None:
    desk = Desk()
    desk.tools.call(ev.FunctionCall("r1", "i1", "call_1", "transfer_to_human", "{}"))
    assert isinstance(desk.sent[0], ev.FunctionOutput) and desk.sent[0].call_id == "call_1"
    assert '"status":"transferring"' in desk.sent[0].output
    assert desk.report.tool_calls[0]["name"] == "transfer_to_human" and desk.tools.pending is not None
    assert desk.flow.core.transfer is Transfer.ANNOUNCING
    desk.tools.beat(idle=True)  # idle, but the line was asked for and has not started
    desk.tools.line_started()
    desk.tools.beat(idle=False)  # the line is playing
    assert desk.leg.did == [] and desk.flow.core.transfer is Transfer.ANNOUNCING
    desk.tools.beat(idle=True)
    assert desk.leg.did == ["transfer sip:agent@pbx.example"] and desk.tools.pending is None
    assert desk.flow.core.transfer is Transfer.NONE  # the REFER is sent: its NOTIFYs say the rest
    assert desk.reports[-1] == ev.TransferStarted("sip:agent@pbx.example") and desk.ended == []


def test_end_call_hangs_up_after_the_timeout_if_the_model_never_speaks_the_line() -> None:
    desk = Desk()
    desk.tools.call(ev.FunctionCall("r1", "i1", "call_1", "end_call", "{}"))
    desk.clock.now = LINE_TIMEOUT_S
    desk.tools.beat(idle=False)
    assert desk.leg.did == []
    desk.clock.now = LINE_TIMEOUT_S + 0.02
    desk.tools.beat(idle=False)
    assert desk.leg.did == ["hangup"] and desk.ended == [("agent ended the call", "completed")]
    assert desk.reports[-1] == ev.AgentHungUp()


def test_a_barge_in_on_the_transfer_line_runs_the_transfer_at_once_with_the_caller_on_hold() -> None:
    desk = Desk()
    desk.tools.call(ev.FunctionCall("r1", "i1", "call_1", "transfer_to_human", "{}"))
    assert desk.reports[-1] == ev.TransferDecided("sip:agent@pbx.example", ev.TransferMode.BLIND)
    desk.tools.line_started()
    desk.tools.interrupted()
    assert desk.tools.pending is None and desk.leg.did == ["hold hold.wav", "transfer sip:agent@pbx.example"]
    assert desk.flow.core.transfer is Transfer.NONE
    started = ev.TransferStarted("sip:agent@pbx.example")
    assert desk.reports[-3:] == [ev.TransferLineInterrupted(), ev.HoldStarted(), started]
    # the model, told "transferring", is told it still is; what the caller said over the line is no turn for it
    assert desk.sent[-2:] == [ev.AddText(TRANSFER_GOES_AHEAD, ev.Role.SYSTEM), ev.ClearAudio()]
    sent = len(desk.sent)
    desk.tools.interrupted()  # nothing waiting: nothing more
    desk.tools.beat(idle=True)
    assert len(desk.sent) == sent and len(desk.leg.did) == 2
    desk.clock.now = 2.5
    desk.tools.transfer_progress(ev.TransferProgress(486, "Busy Here", final=True))
    assert desk.leg.did[-1] == "unhold" and ev.HoldEnded(2.5) in desk.reports  # off hold: the agent says so
    assert desk.sent[-2:] == [
        ev.AddText("The transfer failed (486 Busy Here). Tell the caller.", ev.Role.SYSTEM),
        ev.CreateResponse(),
    ]


def test_a_spoken_over_transfer_that_completes_leaves_the_caller_on_hold_until_the_hangup() -> None:
    desk = Desk()
    desk.tools.call(ev.FunctionCall("r1", "i1", "call_1", "transfer_to_human", "{}"))
    desk.tools.interrupted()
    desk.tools.transfer_progress(ev.TransferProgress(200, "OK", final=True))
    assert desk.leg.did[-2:] == ["transfer sip:agent@pbx.example", "hangup"]
    assert desk.ended == [("transferred", "transferred")] and ev.HoldEnded(0.0) in desk.reports


def test_a_barge_in_on_a_warm_transfer_line_starts_the_warm_transfer_at_once() -> None:
    desk = Desk(warm=True)
    desk.tools.call(ev.FunctionCall("r1", "i1", "call_1", "transfer_to_human", "{}"))
    assert desk.reports[-1] == ev.TransferDecided("sip:agent@pbx.example", ev.TransferMode.WARM)
    assert desk.flow.core.transfer is Transfer.ANNOUNCING  # the warm transfer's start takes it to HOLDING
    desk.tools.interrupted()
    assert desk.warm == ["sip:agent@pbx.example"] and desk.leg.did == []  # the warm transfer holds the caller itself
    assert desk.reports[-1:] == [ev.TransferLineInterrupted()]


def test_a_barge_in_on_the_goodbye_drops_the_hangup() -> None:
    desk = Desk()
    desk.tools.call(ev.FunctionCall("r1", "i1", "call_1", "end_call", "{}"))
    assert desk.flow.core.transfer is Transfer.NONE  # no transfer is decided
    sent = len(desk.sent)
    desk.tools.interrupted()
    desk.tools.beat(idle=True)
    assert desk.tools.pending is None and desk.leg.did == [] and len(desk.sent) == sent and desk.ended == []


@pytest.mark.parametrize(("code", "ends"), [(200, True), (486, False)])
def test_the_transfer_s_final_notify(code: int, ends: bool) -> None:
    desk = Desk()
    desk.tools.transfer_progress(ev.TransferProgress(100, "Trying", final=False))
    assert desk.leg.did == [] and desk.sent == []
    desk.tools.transfer_progress(ev.TransferProgress(code, "OK" if ends else "Busy Here", final=True))
    if ends:
        assert desk.leg.did == ["hangup"] and desk.ended == [("transferred", "transferred")]
    else:  # the caller is still ours: the model tells them
        assert desk.ended == [] and desk.sent == [
            ev.AddText("The transfer failed (486 Busy Here). Tell the caller.", ev.Role.SYSTEM),
            ev.CreateResponse(),
        ]


# ------------------------------------------------------------------------------------------------ transcripts
def test_caller_turns_are_handed_over_or_reported_lost() -> None:
    report, reports = CallReport("c1", "ga", "support"), list[ev.Report]()
    turns = Transcripts(report, reports.append, caller_transcribed=True)
    for item in ("i1", "i2", "i3"):
        turns.committed(ev.InputCommitted(item))
    turns.caller(ev.CallerTranscript("i1", "hello", final=False))
    turns.caller(ev.CallerTranscript("i1", "hello there", final=True))
    turns.caller_failed(ev.CallerTranscriptFailed("i2", "no speech"))
    assert report.caller_transcript == ["hello there"] and turns.untranscribed == {"i3"}
    assert turns.hand_over() == {"i3"} and not turns.forget_lost()  # a replaced session took it along
    turns.committed(ev.InputCommitted("i4"))
    assert turns.forget_lost() and reports[-1] == ev.CallerTurnLost(1, replaced=False)
    untranscribed = Transcripts(report, reports.append, caller_transcribed=False)
    untranscribed.committed(ev.InputCommitted("i5"))  # no transcription asked for: nothing is owed
    assert not untranscribed.forget_lost()


@pytest.mark.parametrize("dry", [False, True])
def test_the_filters_tail_joins_the_reply_unless_the_reply_already_ran_dry(dry: bool) -> None:
    """At 24 kHz the downsampler gives the reply's last 2 ms at ``audio_done`` (what is still inside its filter).
    A done that comes while the reply is still queued adds them after it; one that comes after the caller got
    silence in the reply's place drops them: alone after the gap they would be a click."""
    agent = Agent()
    latency = LatencyMeter(agent.report, agent.reports.append, agent.clock)
    agent.playback = Playback(agent.playout, Downsampler(), latency, agent.clock)
    tone = (8000 * np.sin(2 * np.pi * 900 * np.arange(2400) / 24000)).astype("<i2").tobytes()  # 100 ms at 24 kHz
    agent.playback.started("r1")
    agent.playback.push(ev.AudioChunk("r1", "i1", tone))  # five frames at 8 kHz
    agent.play(7 if dry else 3)  # dry: the five, then two of dead air
    assert agent.playout.underruns == (2 if dry else 0)
    agent.playback.audio_done("r1", "i1")
    rest = [agent.playout.pop_frame() for _ in range(4)]
    heard = [frame for frame in rest if any(frame)]
    if dry:
        assert heard == []
    else:
        assert len(heard) == 3 and any(heard[2][:32]) and not any(heard[2][32:])  # two frames, then the 2 ms


def test_a_barge_in_over_the_bridges_own_hold_audio_flushes_it_and_truncates_nothing() -> None:
    agent = Agent()
    agent.playout.push(f"{WAIT_HOLD_ITEM}-1", b"\x01\x00" * 1600)  # the soft hold while a tool works (0.2 s)
    agent.playout.end_item(f"{WAIT_HOLD_ITEM}-1")
    agent.playout.push(f"{HOLD_ITEM}-1", b"\x01\x00" * 1600)
    agent.play(3)
    assert agent.playback.busy
    agent.barge_in.cut("caller spoke over the hold")
    assert agent.sent == [] and agent.report.truncates == []  # in no conversation: nothing for the service
    assert agent.playout.idle and agent.report.barge_ins == 1
