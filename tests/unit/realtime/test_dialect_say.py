"""An orchestrated call's two dialect pieces, as data: ``hold_answers`` (the model answers nothing on its own) and
the ``Say`` command (a verbatim line: out of band on beta and GA, commentary on Live)."""

from __future__ import annotations

import json

import pytest

from bridge import events as ev
from bridge.emulator import rules
from bridge.realtime.dialects import BETA, DIALECTS, GA, LIVE, Dialect
from bridge.realtime.profile import AgentProfile, SemanticVad

LINE = 'Your order 4471 ships today; it\'s "express".'


def _frames(dialect: Dialect, command: ev.Command) -> list[dict[str, object]]:
    return [json.loads(f) for f in dialect.encoders[type(command)](command)]


@pytest.mark.parametrize(
    ("dialect", "modalities"), [(GA, {"output_modalities": ["audio"]}), (BETA, {"modalities": ["audio", "text"]})]
)
def test_a_say_is_an_out_of_band_response_whose_instructions_quote_the_line(
    dialect: Dialect, modalities: dict[str, list[str]]
) -> None:
    (frame,) = _frames(dialect, ev.Say(LINE))
    assert frame["type"] == "response.create"
    response = frame["response"]
    assert isinstance(response, dict)
    assert response["conversation"] == "none" and response["metadata"] == {"callbridge": "say"}
    assert {k: response[k] for k in modalities} == modalities
    assert rules.said(str(response["instructions"])) == LINE  # the emulator reads the line back whole
    assert dialect.capabilities.says == "out_of_band"


def test_live_says_a_line_as_commentary() -> None:
    (frame,) = _frames(LIVE, ev.Say(LINE))
    assert frame == {"type": "session.commentary.append", "content": LINE, "delegation_id": None}
    assert LIVE.capabilities.says == "commentary"


@pytest.mark.parametrize("dialect", [GA, BETA], ids=lambda d: d.name)
def test_held_answers_on_realtime_keep_the_vad_but_neither_answer_nor_interrupt(dialect: Dialect) -> None:
    for td in (None, SemanticVad(eagerness="high")):
        profile = AgentProfile() if td is None else AgentProfile(turn_detection=td)
        held = dialect.hold_answers(profile)
        assert held.turn_detection is not None
        assert (held.turn_detection.create_response, held.turn_detection.interrupt_response) == (False, False)
        assert held.turn_detection.type == profile.turn_detection.type  # type: ignore[union-attr]  # set above
        session = dialect.build_session(held)
        vad = session["audio"]["input"]["turn_detection"] if dialect is GA else session["turn_detection"]
        assert vad["create_response"] is False and vad["interrupt_response"] is False


def test_held_answers_on_live_delegate_to_the_client() -> None:
    profile = AgentProfile()
    assert LIVE.build_session(profile)["delegation"]["type"] == "responses"
    assert LIVE.build_session(LIVE.hold_answers(profile))["delegation"] == {"type": "client"}


def test_every_dialect_can_say_a_line() -> None:
    for dialect in DIALECTS.values():
        assert ev.Say in dialect.encoders and ev.Say not in dialect.refused
