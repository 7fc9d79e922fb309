"""bridge.call.echo at work on a call's table: a voice the echo path does not explain pauses the agent (the core's
echo axis), the caller's frames then take the barge-in or resume the agent, with a stub guard whose verdicts the
test sets. The guard's own judgement is tested in tests/unit/audio/test_echo.py."""

from __future__ import annotations

from typing import Any, cast

from bridge import events as ev
from bridge.audio.echo import Verdict
from bridge.audio.frames import FRAME_BYTES, FRAME_MS, SILENCE
from bridge.call.core import Echo
from bridge.call.echo import EchoGuarding
from bridge.call.flow import CallFlow, Trigger
from bridge.call.link import Link
from bridge.call.playback import Playback
from bridge.call.report import CallReport
from bridge.call.state import Phase, PhaseMachine
from bridge.dialplan import EchoGuardPlan

AGENT = b"\x10\x00" * (FRAME_BYTES // 2)


class StubGuard:
    def __init__(self) -> None:
        self.verdict = Verdict(echo=False, inbound_dbfs=-20.0, residual_dbfs=-20.0, path=None)

    def played(self, frame: bytes) -> None:
        pass

    def unplayed(self, frames: int) -> None:
        pass

    def heard(self, frame: bytes) -> None:
        pass

    def judge(self) -> Verdict:
        return self.verdict

    def temper(self, frame: bytes) -> bytes:
        return frame


class Source:
    def pop_frame(self) -> bytes:
        return AGENT


class StubLink:
    def __init__(self) -> None:
        self.sent: list[ev.Command] = []

    def send(self, command: ev.Command) -> None:
        self.sent.append(command)

    def heard_caller(self, on: bool) -> None:
        pass

    def keep_on_loop(self, on: bool) -> None:
        pass


class Bed:
    def __init__(self) -> None:
        self.reports: list[ev.Report] = []
        self.taken: list[str] = []
        self.busy = True  # the agent's audio plays
        self.flow = CallFlow(PhaseMachine("c-echo"), lambda action, why: None)
        self.flow.fire(Trigger.READY)
        plan = EchoGuardPlan(enabled=True, confirm_ms=3 * FRAME_MS, resume_ms=10 * FRAME_MS)
        self.link = StubLink()
        self.echo = EchoGuarding(
            plan,
            cast(Playback, self),
            self.reports.append,
            CallReport("c-echo", "ga", "p"),
            lambda: False,
            flow=self.flow,
            can_pause=True,
            link=cast(Link, self.link),
        )
        self.guard = StubGuard()
        self.echo.guard = cast(Any, self.guard)
        self.source, self.heard = self.echo.media(Source(), lambda pcm, t: None)

    def mode(self) -> Echo:
        return self.flow.core.echo

    def outcomes(self) -> list[str]:
        return [r.outcome for r in self.reports if isinstance(r, ev.EchoJudged)]

    def speech_started(self) -> None:
        self.echo.speech_started(lambda e: self.taken.append("speech"))(ev.SpeechStarted("item-1", 0))

    def frames(self, n: int, speaking: bool) -> None:
        self.guard.verdict = Verdict(False, -20.0, -20.0, None, speaking=speaking)
        for _ in range(n):
            self.heard(SILENCE, 0.0)


def test_a_voice_over_the_agent_pauses_it_and_the_callers_words_take_the_barge_in() -> None:
    bed = Bed()
    bed.speech_started()
    assert bed.mode() is Echo.PAUSED and bed.taken == []
    assert bed.source.pop_frame() == SILENCE  # the caller hears the agent stop at once
    bed.speech_started()  # paused already: the window decides
    bed.frames(2, speaking=True)
    assert bed.taken == []
    bed.frames(1, speaking=True)
    assert bed.taken == ["speech"] and bed.mode() is Echo.JUDGING
    assert bed.outcomes() == [ev.EchoOutcome.PAUSED, ev.EchoOutcome.TAKEN]
    assert bed.source.pop_frame() == AGENT


def test_no_words_within_resume_ms_resume_the_agent_where_it_was_paused() -> None:
    bed = Bed()
    bed.speech_started()
    bed.frames(9, speaking=False)
    assert bed.mode() is Echo.PAUSED
    bed.frames(1, speaking=False)
    assert bed.mode() is Echo.JUDGING and bed.taken == []
    assert bed.outcomes() == [ev.EchoOutcome.PAUSED, ev.EchoOutcome.RESUMED]
    assert bed.source.pop_frame() == AGENT and bed.flow.phase is Phase.LISTENING


def test_echo_is_rejected_without_a_pause_and_its_input_is_cleared() -> None:
    bed = Bed()
    bed.guard.verdict = Verdict(True, -30.0, -60.0, None)
    bed.speech_started()
    assert bed.mode() is Echo.JUDGING and bed.taken == []
    assert bed.outcomes() == [ev.EchoOutcome.REJECTED]
    assert [type(c) for c in bed.link.sent] == [ev.ClearAudio]
