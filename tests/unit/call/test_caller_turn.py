"""The caller-felt turn: from the end of the caller's speech (where the service's VAD places it, its silence window
taken off) to the first agent frame sent, with the model's share, in a real session against the emulator (the
replay's direct path)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.replay.direct import run_direct
from bridge.replay.script import load_script

SCRIPT = Path(__file__).resolve().parents[3] / "call_scripts" / "question_answer"
SILENCE_MS = 500  # dialplans/support.yaml's server VAD


@pytest.mark.parametrize("dialect", ["beta", "ga"])
def test_the_caller_felt_turn_starts_at_the_end_of_speech_and_splits_out_the_models_share(dialect: str) -> None:
    run = run_direct(load_script(SCRIPT), dialect)
    assert run.ok
    latency = run.report["latency_ms"]
    [turn], [felt], [model] = latency["turn"], latency["caller_turn"], latency["caller_turn_model"]
    assert felt == pytest.approx(turn + SILENCE_MS, abs=25)  # VAD's silence window: part of what the caller waits
    assert model < felt and model == pytest.approx(latency["inference"][0] + SILENCE_MS, abs=25)
    # the turn starts inside what the caller said (before their audio, its trailing quiet included, ended)
    caller_start, caller_end = run.caller_spans[0][:2]
    answer = next(a for a, _ in run.agent_spans if a > caller_start)
    assert caller_start < answer - felt < caller_end
