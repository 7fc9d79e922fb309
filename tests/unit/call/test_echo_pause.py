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
        self.caller_speaking = False

    def send(self, command: ev.Command) -> None:
        self.sent.append(command)

    def heard_caller(self, on: bool) -> None:
        pass

    def keep_on_loop(self, on: bool) -> None:
        pass


class Bed:
    def __init__(self, withhold: bool = False, model_speaks: bool = True, interrupts: bool = False) -> None:
        self.reports: list[ev.Report] = []
        self.taken: list[str] = []
        self.busy = True  # the agent's audio plays
        self.audio_item: str | None = "item-1"  # the answer it belongs to
        self.flow = CallFlow(PhaseMachine("c-echo"), lambda action, why: None)
        self.flow.fire(Trigger.READY)
        if model_speaks:  # the model's own audio plays (else the bridge's: a hold, over a silent model)
            self.flow.fire(Trigger.MODEL_AUDIO)
        plan = EchoGuardPlan(enabled=True, confirm_ms=3 * FRAME_MS, resume_ms=10 * FRAME_MS)
        self.link = StubLink()
        self.echo = EchoGuarding(
            plan,
            cast(Playback, self),
            self.reports.append,
            CallReport("c-echo", "ga", "p"),
            lambda: interrupts,
            flow=self.flow,
            withhold=withhold,
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
    assert bed.source.pop_frame() == AGENT and bed.flow.phase is Phase.SPEAKING  # where it was


def test_echo_is_rejected_without_a_pause_and_its_input_is_cleared() -> None:
    bed = Bed()
    bed.guard.verdict = Verdict(True, -30.0, -60.0, None)
    bed.speech_started()
    assert bed.mode() is Echo.JUDGING and bed.taken == []
    assert bed.outcomes() == [ev.EchoOutcome.REJECTED]
    assert [type(c) for c in bed.link.sent] == [ev.ClearAudio]


VOICE = b"\x00\x10" * (FRAME_BYTES // 2)  # 4096: about -18 dBFS, above speech_dbfs (-40)


def _voices(n: int) -> list[bytes]:
    """``n`` distinct loud caller frames, to follow each through the uplink."""
    return [bytes([i + 1, 16]) * (FRAME_BYTES // 2) for i in range(n)]


def test_a_dialect_whose_model_stops_itself_hears_silence_while_the_paused_agent_is_judged() -> None:
    """No words follow (a cough): the model never hears what was withheld, and later frames go straight on."""
    bed = Bed(withhold=True)
    sent: list[bytes] = []
    up = bed.echo.uplink(lambda pcm, t: sent.append(pcm))
    bed.speech_started()
    cough = _voices(3)
    for frame in cough:
        up(frame, 0.0)
    assert sent == [SILENCE] * 3  # the stream keeps its pace, the cough stays here
    bed.frames(10, speaking=False)
    assert bed.mode() is Echo.JUDGING and bed.outcomes()[-1] is ev.EchoOutcome.RESUMED
    up(VOICE, 0.0)
    assert sent[-1] == VOICE and not any(frame in sent for frame in cough)


def test_confirmed_the_withheld_frames_go_on_in_order_one_per_frame_and_the_lag_shrinks_in_quiet_frames() -> None:
    bed = Bed(withhold=True)
    sent: list[bytes] = []
    up = bed.echo.uplink(lambda pcm, t: sent.append(pcm))
    bed.speech_started()
    words = _voices(6)
    for frame in words[:3]:
        up(frame, 0.0)
    bed.frames(3, speaking=True)
    assert bed.taken == ["speech"]
    for frame in words[3:]:
        up(frame, 0.0)
    assert sent == [SILENCE] * 3 + words[:3]  # paced: one frame out per frame in, nothing lost
    for _ in range(3):
        up(SILENCE, 0.0)  # the caller pauses: each quiet frame at the head is skipped while others wait
    up(SILENCE, 0.0)
    assert sent[6:9] == words[3:] and sent[9:] == [SILENCE]


def test_over_the_bridges_own_hold_the_model_hears_the_caller_as_they_speak() -> None:
    """The model is silent (a soft hold plays while a tool is pending): it has nothing to stop, so nothing is
    withheld, and a pause in its stream would end the caller's turn early."""
    bed = Bed(withhold=True, model_speaks=False)
    sent: list[bytes] = []
    up = bed.echo.uplink(lambda pcm, t: sent.append(pcm))
    bed.speech_started()
    words = _voices(3)
    for frame in words:
        up(frame, 0.0)
    assert bed.mode() is Echo.PAUSED and sent == words


def test_a_dialect_that_can_cancel_sends_the_callers_frames_as_they_are() -> None:
    bed = Bed()
    sent: list[bytes] = []
    up = bed.echo.uplink(lambda pcm, t: sent.append(pcm))
    bed.speech_started()
    up(VOICE, 0.0)
    assert bed.mode() is Echo.PAUSED and sent == [VOICE]


def test_frames_the_guard_passes_whole_over_the_agent_have_the_window_judged_before_the_voice_detection() -> None:
    """The bridge's own voice detection (GPT-Live) hears tempered frames; two the guard passed whole and loud in a
    row while the agent speaks get the window judged at once: the caller's voice pauses the agent, and once
    confirmed the barge-in is the voice detection's."""
    bed = Bed(withhold=True)
    taken: list[str] = []
    bed.echo.voice(lambda why, busy: taken.append(why))
    bed.heard(VOICE, 0.0)
    assert bed.mode() is Echo.JUDGING  # one frame is not yet the caller
    bed.heard(VOICE, 0.0)
    assert bed.mode() is Echo.PAUSED and bed.outcomes() == [ev.EchoOutcome.PAUSED]
    bed.frames(3, speaking=True)
    assert taken == ["caller spoke over the agent"] and bed.mode() is Echo.JUDGING


def test_frames_passed_whole_that_the_window_judges_echo_change_nothing() -> None:
    bed = Bed(withhold=True)
    bed.echo.voice(lambda why, busy: None)
    bed.guard.verdict = Verdict(True, -30.0, -60.0, None)
    for _ in range(6):
        bed.heard(VOICE, 0.0)
    assert bed.mode() is Echo.JUDGING and bed.outcomes() == []  # no speech start was rejected: nothing to report


def test_frames_the_guard_attenuates_are_left_to_the_voice_detection() -> None:
    bed = Bed(withhold=True)
    bed.echo.voice(lambda why, busy: None)
    bed.guard.temper = lambda frame: bytes(len(frame))  # type: ignore[method-assign]  # every frame taken for echo
    for _ in range(6):
        bed.heard(VOICE, 0.0)
    assert bed.mode() is Echo.JUDGING and bed.outcomes() == []


def test_the_agents_audio_ending_while_paused_hands_the_kept_frames_to_the_model() -> None:
    """The agent fell silent meanwhile: the model no longer speaks, so what the caller said is not dropped."""
    bed = Bed(withhold=True)
    sent: list[bytes] = []
    up = bed.echo.uplink(lambda pcm, t: sent.append(pcm))
    bed.speech_started()
    words = _voices(2)
    for frame in words:
        up(frame, 0.0)
    bed.busy = False
    bed.frames(1, speaking=False)
    assert bed.mode() is Echo.JUDGING and bed.outcomes()[-1] is ev.EchoOutcome.RESUMED
    more = _voices(4)[2:]
    for frame in more:
        up(frame, 0.0)
    assert sent == [SILENCE, SILENCE, *words]


def test_frames_passed_whole_while_the_voice_detection_hears_the_caller_already_are_left_to_it() -> None:
    """A line's steady noise above the voice detection's threshold: it heard its onset once; the guard's passes are
    no onset, and the agent is not paused for them."""
    bed = Bed(withhold=True)
    bed.echo.voice(lambda why, busy: None)
    bed.link.caller_speaking = True
    for _ in range(6):
        bed.heard(VOICE, 0.0)
    assert bed.mode() is Echo.JUDGING and bed.outcomes() == []


def test_where_the_service_decides_the_callers_onset_pauses_the_agent_and_its_speech_start_confirms_it() -> None:
    """Realtime with ``interrupt_response: false``: two frames passed whole over the agent pause it before the
    service's speech start; the window's words alone take nothing (the service has not heard a turn), its speech
    start once the caller spoke ``confirm_ms`` takes the barge-in, cut where the caller stopped hearing the agent."""
    bed = Bed()
    bed.heard(VOICE, 0.0)
    assert bed.mode() is Echo.JUDGING
    bed.heard(VOICE, 0.0)
    assert bed.mode() is Echo.PAUSED and bed.outcomes() == [ev.EchoOutcome.PAUSED]
    assert bed.source.pop_frame() == SILENCE  # the caller hears the agent stop before the service said a word
    bed.frames(5, speaking=True)
    assert bed.mode() is Echo.PAUSED and bed.taken == []  # the caller's words: the service's speech start decides
    bed.speech_started()
    assert bed.taken == ["speech"] and bed.mode() is Echo.JUDGING
    assert bed.outcomes() == [ev.EchoOutcome.PAUSED, ev.EchoOutcome.TAKEN]


def test_a_speech_start_soon_after_the_onset_waits_for_the_callers_words() -> None:
    bed = Bed()
    bed.heard(VOICE, 0.0)
    bed.heard(VOICE, 0.0)
    bed.speech_started()
    assert bed.mode() is Echo.PAUSED and bed.taken == []
    bed.frames(2, speaking=True)
    assert bed.taken == []
    bed.frames(1, speaking=True)
    assert bed.taken == ["speech"] and bed.outcomes() == [ev.EchoOutcome.PAUSED, ev.EchoOutcome.TAKEN]


def test_an_onset_the_service_never_hears_resumes_the_agent_where_it_was_paused() -> None:
    bed = Bed()
    bed.heard(VOICE, 0.0)
    bed.heard(VOICE, 0.0)
    bed.frames(8, speaking=True)  # the onset's frame is the window's first
    assert bed.mode() is Echo.PAUSED
    bed.frames(1, speaking=True)  # resume_ms (10 frames) and no speech start
    assert bed.mode() is Echo.JUDGING and bed.taken == []
    assert bed.outcomes() == [ev.EchoOutcome.PAUSED, ev.EchoOutcome.RESUMED]
    assert bed.source.pop_frame() == AGENT


def test_a_service_that_cuts_its_response_itself_has_the_onsets_pause_taken_at_its_speech_start() -> None:
    """Realtime with ``interrupt_response``: the service cancelled its response when it heard the caller, so the
    barge-in is taken at once; the caller stopped hearing the agent at the onset, before."""
    bed = Bed(interrupts=True)
    bed.heard(VOICE, 0.0)
    bed.heard(VOICE, 0.0)
    assert bed.mode() is Echo.PAUSED
    bed.speech_started()
    assert bed.taken == ["speech"] and bed.mode() is Echo.JUDGING
    assert bed.outcomes() == [ev.EchoOutcome.PAUSED, ev.EchoOutcome.TAKEN]
    bed.speech_started()  # the next one, not paused: the service's own, as before
    assert bed.taken == ["speech", "speech"]


def test_an_onset_over_audio_the_bridge_plays_itself_pauses_nothing() -> None:
    """A consent notice or a hold plays through a caller talking over it: only the model's voice is paused."""
    bed = Bed(model_speaks=False)
    for _ in range(6):
        bed.heard(VOICE, 0.0)
    assert bed.mode() is Echo.JUDGING and bed.outcomes() == [] and bed.source.pop_frame() == AGENT


def test_after_an_onset_nobody_confirmed_the_same_answer_is_paused_at_no_further_onset() -> None:
    """A voice the service does not take for the caller (a backchannel, a line's noise): one gap, not an agent that
    stops and goes all answer long. The service's speech starts are judged as before; the next answer is watched."""
    bed = Bed()
    bed.heard(VOICE, 0.0)
    bed.heard(VOICE, 0.0)
    bed.frames(9, speaking=False)
    assert bed.outcomes() == [ev.EchoOutcome.PAUSED, ev.EchoOutcome.RESUMED]
    for _ in range(6):
        bed.heard(VOICE, 0.0)
    assert bed.mode() is Echo.JUDGING and len(bed.outcomes()) == 2
    bed.speech_started()  # the service heard the caller after all: judged, paused
    assert bed.mode() is Echo.PAUSED and bed.outcomes()[-1] is ev.EchoOutcome.PAUSED
    bed.frames(3, speaking=True)
    assert bed.taken == ["speech"]
    bed.audio_item = "item-2"  # the next answer: its first audio tells the guard (Playback.on_item)
    cast(Any, bed).on_item()
    assert cast(Any, bed).on_item is None
    bed.heard(VOICE, 0.0)
    bed.heard(VOICE, 0.0)
    assert bed.mode() is Echo.PAUSED


def test_a_confirmed_onset_leaves_the_next_onsets_watched() -> None:
    bed = Bed(interrupts=True)
    bed.heard(VOICE, 0.0)
    bed.heard(VOICE, 0.0)
    bed.speech_started()
    assert bed.taken == ["speech"]
    bed.heard(VOICE, 0.0)
    bed.heard(VOICE, 0.0)
    assert bed.mode() is Echo.PAUSED  # the same item still plays in this bed: a taken barge-in spends nothing
