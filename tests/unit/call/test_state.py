from __future__ import annotations

import logging

import pytest

from bridge.call.state import TRANSITIONS, IllegalTransition, Phase, PhaseMachine, mermaid


def test_a_turn_with_barge_in(caplog: pytest.LogCaptureFixture) -> None:
    changes: list[tuple[Phase, Phase, str]] = []
    m = PhaseMachine("c1", on_change=lambda a, b, why: changes.append((a, b, why)))
    caplog.set_level(logging.INFO, "bridge.call")
    for phase in (Phase.LISTENING, Phase.THINKING, Phase.SPEAKING, Phase.CANCELLING, Phase.LISTENING, Phase.ENDED):
        m.set(phase, "test")
    assert m.sequence == ["IDLE", "LISTENING", "THINKING", "SPEAKING", "CANCELLING", "LISTENING", "ENDED"]
    assert len(changes) == 6 and changes[3] == (Phase.SPEAKING, Phase.CANCELLING, "test")
    assert "c1: SPEAKING -> CANCELLING (test)" in caplog.text


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ((Phase.LISTENING,), Phase.CANCELLING),  # nothing to cancel while listening
        ((Phase.ENDED,), Phase.LISTENING),  # ended is final
        ((Phase.LISTENING, Phase.THINKING, Phase.SPEAKING, Phase.CANCELLING), Phase.SPEAKING),
    ],
)
def test_illegal_transitions_raise(path: tuple[Phase, ...], bad: Phase) -> None:
    m = PhaseMachine("c2")
    for phase in path:
        m.set(phase, "ok")
    with pytest.raises(IllegalTransition, match=f"{m.phase} -> {bad}"):
        m.set(bad, "bug")


def test_every_live_phase_can_recover_and_end() -> None:
    for phase, targets in TRANSITIONS.items():
        if phase is Phase.ENDED:
            assert not targets
            continue
        assert Phase.ENDED in targets
        if phase is not Phase.RECOVERING:
            assert Phase.RECOVERING in targets


def test_mermaid_lists_every_edge() -> None:
    text = mermaid()
    assert text.count("-->") == sum(len(v) for v in TRANSITIONS.values()) + 2
