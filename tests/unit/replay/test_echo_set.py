"""The echo guard in the call, against the emulator that hears echo as a service does (``call_scripts/echo/``):
the real call session, the virtual phone on a line that returns the agent's audio, in virtual time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge import events as ev
from bridge.call.report import CallReport
from bridge.replay.compare import DialectRun
from bridge.replay.direct import in_fresh_loop, replay_call
from bridge.replay.echoset import EchoScore, cuts, guarded, replay_guarded, score
from bridge.replay.script import CallScript, load_script

ECHO = Path(__file__).resolve().parents[3] / "call_scripts" / "echo"


@pytest.fixture(scope="module")
def quiet() -> CallScript:
    return load_script(ECHO / "quiet")


def test_a_silent_caller_on_an_echoing_line_never_cuts_the_agent_off(quiet: CallScript) -> None:
    assert quiet.model.line is not None and (quiet.model.line.echo_db, quiet.model.line.echo_delay_ms) == (-14, 120)
    run = replay_guarded(quiet, "ga", True)
    assert run.ok, [c for c in run.checks if not c.ok]
    result = score(quiet, run)
    assert result.agent_turns == 10 and result.false_barge_ins == 0
    assert run.report["barge_ins"] == 0 and cuts(run) == []
    # every answer was heard whole: the caller got each reply's audio (10 agent turns, none cut short)
    assert len(run.report["agent_transcript"]) == 10
    assert run.report["echo"].get("taken", 0) == 0


def test_without_the_guard_the_echo_cuts_the_agent_off(quiet: CallScript) -> None:
    run = replay_guarded(quiet, "ga", False)
    result = score(quiet, run)
    assert result.false_barge_ins >= 8, run.report["timeline"][-20:]  # the failure the guard prevents is real
    assert run.report["echo"] == {}


def test_the_caller_speaking_over_the_agent_still_cuts_it() -> None:
    script = load_script(ECHO / "barge_in")  # the bridge decides (interrupt_response: false): pause, then the cut
    run = replay_guarded(script, "ga", True)
    assert run.ok, [c for c in run.checks if not c.ok]
    result = score(script, run)
    assert (result.true_barge_ins, result.hits, result.false_barge_ins) == (2, 2, 0)
    assert max(result.latencies_ms) <= 250.0, result.latencies_ms
    assert run.report["echo"].get("paused") == 2 and run.report["echo"].get("taken") == 2
    kinds = [kind for _t, kind, _s in run.report["timeline"] if kind in {"echo_judged", "barge_in", "truncate"}]
    assert kinds.count("barge_in") == 2 and kinds.count("truncate") == 2


def _cough_at(ms: int) -> CallScript:
    """The cough script with the cough this far into the agent's answer."""
    script = load_script(ECHO / "cough")
    turns = list(script.model.turns)
    turns[1] = turns[1].model_copy(update={"barge_in_after_ms": ms})
    script.model = script.model.model_copy(update={"turns": turns})
    return script


def test_a_cough_over_the_agents_loudest_words_never_reaches_the_model_while_tempering() -> None:
    """A cough no louder than the agent's echo (1.5 s into the answer) is attenuated with it: the model hears
    nothing, the agent goes on unpaused."""
    script = _cough_at(1500)
    run = replay_guarded(script, "ga", True)
    assert run.ok, [c for c in run.checks if not c.ok]
    # the greeting's first echo may be rejected (or never reach the model's VAD): the agent is never paused
    assert run.report["barge_ins"] == 0 and set(run.report["echo"]) <= {ev.EchoOutcome.REJECTED}
    assert run.report["caller_transcript"] == ["What are your hours on Saturday?"]  # the cough never reached it
    assert score(script, run).summary()["false_barge_ins"] == 0


@pytest.mark.parametrize("dialect", ["beta", "ga"])
def test_the_echo_sets_cough_pauses_the_agent_in_either_turn_shape(dialect: str) -> None:
    """As shipped, on the support plan's safe model (a preamble before each answer) and on beta's model (the answer
    alone), the cough comes early in the agent's answer, where the echo cannot hide it: paused, then resumed."""
    script = load_script(ECHO / "cough").on_safe_variant()
    run = replay_guarded(script, dialect, True)
    assert run.ok, [c for c in run.checks if not c.ok]
    echo = run.report["echo"]
    assert (echo.get("paused"), echo.get("resumed"), echo.get("taken")) == (1, 1, None), echo
    assert score(script, run).summary()["false_barge_ins"] == 0


def test_a_cough_over_the_agent_pauses_it_and_it_resumes_where_it_was() -> None:
    """Tempering off, the gate alone: the service's VAD hears the cough, the guard pauses the agent, no words follow
    within ``resume_ms``, and the agent goes on where it was paused."""
    script = load_script(ECHO / "cough")
    plan = guarded(script.plan("ga"), True)
    plan = plan.model_copy(update={"echo_guard": plan.echo_guard.model_copy(update={"temper": False})})
    run = in_fresh_loop(replay_call(script, "ga", plan=plan), True)
    assert run.ok, [c for c in run.checks if not c.ok]
    echo = run.report["echo"]
    assert (echo.get("paused"), echo.get("resumed"), echo.get("taken")) == (1, 1, None), echo  # the echo: rejected
    assert run.report["barge_ins"] == 0
    window = (ev.EchoOutcome.PAUSED, ev.EchoOutcome.RESUMED)
    paused_at, resumed_at = [t for t, r in run.noted(ev.EchoJudged) if r.outcome in window]
    assert 600 <= resumed_at - paused_at <= 800  # resume_ms (700) after the pause, not before
    # what the caller heard: the answer stops at the cough and goes on after it, all of it (5.4 s of agent audio)
    answer = [span for span in run.agent_spans if span[1] > paused_at - 3000 and span[0] < resumed_at + 6000]
    assert any(end <= paused_at + 60 for _start, end in answer) and any(start >= resumed_at for start, _ in answer)
    assert sum(end - start for start, end in answer if start < resumed_at + 6000) >= 4500
    assert score(script, run).summary()["false_barge_ins"] == 0


@pytest.mark.parametrize("on", [True, False])
def test_live_the_guard_tempers_what_the_model_hears(quiet: CallScript, on: bool) -> None:
    run = replay_guarded(quiet, "live", on)  # GPT-Live: the bridge's own voice detection, the model stops itself
    false = score(quiet, run).false_barge_ins
    assert (false == 0) if on else (false >= 8), run.report["timeline"][-10:]


def test_the_gate_alone_rejects_the_echo_and_clears_it_from_the_services_buffer(quiet: CallScript) -> None:
    """Tempering off, the bridge deciding (``interrupt_response: false``): the emulator's VAD hears the echo, each
    speech start over the agent is judged echo and rejected, and the service's buffer is cleared, so no turn is
    committed of it: the ten agent turns are all heard whole."""
    plan = guarded(quiet.plan("ga"), True)
    detection = plan.profile.turn_detection
    assert detection is not None
    plan = plan.model_copy(
        update={
            "echo_guard": plan.echo_guard.model_copy(update={"temper": False}),
            "profile": plan.profile.model_copy(
                update={"turn_detection": detection.model_copy(update={"interrupt_response": False})}
            ),
        }
    )
    run = in_fresh_loop(replay_call(quiet, "ga", plan=plan), True)
    assert run.ok, [c for c in run.checks if not c.ok]
    assert run.report["echo"].get("rejected", 0) >= 10 and set(run.report["echo"]) == {"rejected"}
    assert score(quiet, run).false_barge_ins == 0 and len(run.report["agent_transcript"]) == 10
    cleared = [e for e in run.events if e[1].startswith("InputCleared")]
    assert len(cleared) >= 10


def test_scores_add_up_figure_by_figure() -> None:
    total = EchoScore(1, 2, 1, 0, 1, [10.0])
    total.add(EchoScore(2, 1, 1, 1, 0, [20.0]))
    assert total == EchoScore(3, 3, 2, 1, 1, [10.0, 20.0])


def _run_with(*noted: tuple[float, ev.Report]) -> DialectRun:
    report = CallReport("c1", "ga", "support")
    for t, r in noted:
        report.note(t, r)
    return DialectRun("s", "ga", report=json.loads(json.dumps(report.to_json())))  # as a SIP run reads it back


def test_cuts_read_the_guards_typed_outcomes_not_their_text() -> None:
    """A pause that was taken is one cut at the pause (its barge-in the same cut); one that resumed cuts nothing; a
    barge-in with no pause is a cut of its own."""
    run = _run_with(
        (1000.0, ev.EchoJudged(ev.EchoOutcome.PAUSED, -18.0, 120.0)),
        (1200.0, ev.EchoJudged(ev.EchoOutcome.TAKEN, -10.0, 120.0)),
        (1210.0, ev.BargeIn("caller spoke over the agent", None)),
        (3000.0, ev.EchoJudged(ev.EchoOutcome.PAUSED, -18.0, None)),
        (3700.0, ev.EchoJudged(ev.EchoOutcome.RESUMED, -55.0, 400.0)),
        (5000.0, ev.BargeIn("caller spoke over the agent", 20.0)),
    )
    assert [type(r) for _, r in run.noted_all(ev.EchoJudged)] == [ev.EchoJudged] * 4
    assert run.noted(ev.EchoJudged)[3][1].outcome is ev.EchoOutcome.RESUMED
    assert cuts(run) == [1000.0, 5000.0]


def test_live_a_cough_over_the_agent_pauses_it_and_the_model_never_hears_it() -> None:
    """GPT-Live's model stops itself at any voice it hears: the bridge pauses the agent (its playout) and, while it
    judges, sends the model silence in the caller's place. No words follow: the agent resumes where it was, the
    whole answer is heard, and the model never transcribes the cough."""
    script = load_script(ECHO / "cough").on_safe_variant()
    run = replay_guarded(script, "live", True)
    assert run.ok, [c for c in run.checks if not c.ok]
    echo = run.report["echo"]
    assert (echo.get("paused"), echo.get("resumed"), echo.get("taken")) == (1, 1, None), echo
    assert run.report["barge_ins"] == 0 and "CANCELLING" not in run.report["phases"]
    assert "Nine to five on Saturdays." in run.report["agent_transcript"]  # the answer was not cut short
    assert run.report["caller_transcript"] == ["What are your hours on Saturday?"]  # the cough was withheld
    assert score(script, run).summary()["false_barge_ins"] == 0


def test_live_a_true_barge_in_is_paused_then_taken_and_the_model_hears_every_word() -> None:
    script = load_script(ECHO / "barge_in").on_safe_variant()
    run = replay_guarded(script, "live", True)
    assert run.ok, [c for c in run.checks if not c.ok]
    assert run.report["echo"].get("paused") == 2 and run.report["echo"].get("taken") == 2
    result = score(script, run)
    assert (result.true_barge_ins, result.hits, result.false_barge_ins) == (2, 2, 0)
    # the withheld frames went on to the model once confirmed: it heard the interruptions whole
    assert "Where is my order?" in run.report["caller_transcript"]
    assert "My internet is down." in run.report["caller_transcript"]


def test_a_cut_while_the_caller_says_another_turns_words_is_talk_over_not_a_false_barge_in(quiet: CallScript) -> None:
    """A caller who speaks over an answer that went on past the pause they took for its end cuts it for real: not
    the echo's doing. A cut while the caller is silent (past the line's delay after their words) is false."""
    assert not any(t.barge_in_after_ms for t in quiet.turns[:2])
    run = _run_with(
        (5200.0, ev.BargeIn("caller spoke over the agent", None)),  # amid turn 0's words
        (8700.0, ev.BargeIn("caller spoke over the agent", None)),  # turn 1's words ended 200 ms before
        (9000.0, ev.BargeIn("caller spoke over the agent", None)),  # 500 ms after: the echo
    )
    run.caller_spans = [(5000.0, 6000.0, "turn 0: hours"), (8000.0, 8500.0, "turn 1: order")]
    result = score(quiet, run)
    assert (result.talked_over, result.false_barge_ins, result.hits) == (2, 1, 0)
    assert result.summary()["talked_over"] == 2
