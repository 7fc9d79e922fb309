"""A supervisor's actions in the call's session (``bridge.call.supervision``), with the collaborators it drives."""

from __future__ import annotations

from bridge import events as ev
from bridge.call.builtin_tools import ToolAction, ToolResult
from bridge.call.flow import CallFlow, Trigger
from bridge.call.limit import SUPERVISOR_GOODBYE, CallLimit
from bridge.call.state import Phase, PhaseMachine
from bridge.call.supervision import HANDBACK_NOTE, TRANSFER_LINE, WHISPER_NOTE, Supervision
from bridge.realtime.profile import AgentProfile


class Tools:
    def __init__(self) -> None:
        self.after: list[tuple[ToolResult, bool]] = []

    def after_line(self, action: ToolResult, spoken: bool) -> None:
        self.after.append((action, spoken))


class Wire:
    """The link's side a supervisor drives: commands to the model, and the caller's audio muted or not."""

    def __init__(self) -> None:
        self.sent: list[ev.Command] = []
        self.send = self.sent.append
        self.muted = False

    def mute(self, on: bool) -> None:
        self.muted = on


CUTS: list[str] = []
PATH = {Phase.LISTENING: [Trigger.READY], Phase.SPEAKING: [Trigger.READY, Trigger.MODEL_AUDIO]}


def make(
    phase: Phase = Phase.LISTENING, wire: Wire | None = None
) -> tuple[Supervision, list[ev.Command], list[ev.Report], CallLimit, Tools]:
    wire = wire or Wire()
    reports: list[ev.Report] = []
    limit = CallLimit(3600.0, 15.0, lambda: 100.0)
    limit.start()
    tools = Tools()
    flow = CallFlow(PhaseMachine("c1"), lambda action, why: None)
    for trigger in PATH[phase]:
        flow.fire(trigger)
    sup = Supervision(wire, reports.append, limit, tools, flow, cut=CUTS.append)  # type: ignore[arg-type]  # stand-ins
    return sup, wire.sent, reports, limit, tools


def test_a_whisper_is_a_system_note_now_and_in_every_later_session() -> None:
    sup, sent, reports, _, _ = make()
    sup.handle(ev.SupervisorAction(ev.SupervisorKind.WHISPER, "dana", text="offer a refund"))
    assert sent == [ev.AddText(WHISPER_NOTE.format(text="offer a refund"), ev.Role.SYSTEM)]
    assert reports == [ev.SupervisorActed("whisper", "dana", "offer a refund")]
    base = AgentProfile(instructions="Be brief.")
    later = sup.profile(base)
    assert later.instructions.startswith("Be brief.") and "offer a refund" in later.instructions
    assert make()[0].profile(base) is base  # no whisper: the plan's profile as it is


def test_hang_up_brings_the_goodbye_forward_and_transfer_waits_for_its_line() -> None:
    sup, sent, reports, limit, tools = make()
    sup.handle(ev.SupervisorAction(ev.SupervisorKind.HANGUP, "dana"))
    assert limit.due and limit.instructions == SUPERVISOR_GOODBYE and sent == []
    sup.handle(ev.SupervisorAction(ev.SupervisorKind.TRANSFER, "dana", target="sip:desk@pbx"))
    assert sent == [ev.CreateResponse(instructions=TRANSFER_LINE)]
    assert tools.after == [(ToolResult({}, ToolAction.TRANSFER, "sip:desk@pbx"), True)]
    # while the agent speaks, no second response is asked for: the transfer follows the current reply
    busy, sent2, _, _, tools2 = make(Phase.SPEAKING)
    busy.handle(ev.SupervisorAction(ev.SupervisorKind.TRANSFER, "sam", target="sip:desk@pbx"))
    assert sent2 == [] and tools2.after == [(ToolResult({}, ToolAction.TRANSFER, "sip:desk@pbx"), False)]
    assert [r.summary for r in reports] == ["hangup by dana", "transfer by dana: sip:desk@pbx"]


def test_take_over_mutes_the_model_and_cuts_its_reply_once_hand_back_resumes_it_with_a_note() -> None:
    CUTS.clear()
    wire = Wire()
    sup, sent, reports, _, _ = make(Phase.SPEAKING, wire)
    sup.handle(ev.SupervisorAction(ev.SupervisorKind.TAKEOVER, "sam"))
    assert wire.muted and CUTS == ["taken over by a supervisor"] and sent == []
    sup.handle(ev.SupervisorAction(ev.SupervisorKind.TAKEOVER, "sam"))  # again: nothing more to cut
    assert CUTS == ["taken over by a supervisor"]
    sup.handle(ev.SupervisorAction(ev.SupervisorKind.HANDBACK, "sam"))
    assert not wire.muted and sent == [ev.AddText(HANDBACK_NOTE, ev.Role.SYSTEM)]
    sup.handle(ev.SupervisorAction(ev.SupervisorKind.HANDBACK, "sam"))  # not taken over: no second note
    assert len(sent) == 1
    assert [r.summary for r in reports] == ["takeover by sam", "takeover by sam", "handback by sam", "handback by sam"]
