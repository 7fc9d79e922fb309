"""The direct runner: the real call session, a virtual phone and the sans-I/O emulator, in virtual time."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge import events as ev
from bridge.emulator import EmulatorSession
from bridge.emulator.faults import Settings
from bridge.realtime.dialects import BETA, GA
from bridge.replay.direct import InMemoryRealtime, replay_direct, run_direct
from bridge.replay.script import load_script
from bridge.replay.virtual import VirtualTimeLoop

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = REPO / "call_scripts"


def _stable(run_json: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run_json.items() if k != "wall_s"}


def test_a_call_replays_in_virtual_time_and_passes() -> None:
    script = load_script(SCRIPTS / "question_answer")
    run = run_direct(script, "ga")
    assert run.ok, [c for c in run.checks if not c.ok]
    assert run.duration_ms > 10_000  # greeting, question, answer, hangup: about 11 s of call (bench replay: how fast)
    assert run.report["caller_transcript"] == ["Hi, what are your opening hours on Saturday?"]
    assert run.report["agent_transcript"][-1] == "We are open from nine to five on Saturdays."
    assert run.ended_by == "caller"
    # what the caller heard: the greeting, then the answer after the question
    assert len(run.agent_spans) == 2 and run.agent_spans[0][0] < 100
    speech = [s for s in run.caller_spans if s[2].startswith("turn 0")]
    assert speech and run.agent_spans[1][0] > speech[0][1]
    kinds = [t for _, t in run.events]
    assert kinds[:2] == ["SessionReady", "SessionConfigured"]
    assert "AgentTranscript(final)" in kinds and "AudioChunk" in kinds


def test_same_script_same_report() -> None:
    script = load_script(SCRIPTS / "barge_in")
    first = [_stable(r.to_json()) for r in replay_direct([script], ["beta", "ga"])[0].runs.values()]
    again = [_stable(r.to_json()) for r in replay_direct([script], ["beta", "ga"])[0].runs.values()]
    assert first == again


def test_barge_in_truncates_to_what_the_caller_heard() -> None:
    run = run_direct(load_script(SCRIPTS / "barge_in"), "beta")
    [truncate] = run.report["truncates"]
    # the caller started 1500 ms into the answer; the VAD needs 60 ms of voice, plus the espeak onset
    assert 1500 <= truncate["audio_end_ms"] <= 1900
    answer = run.agent_spans[1]
    assert truncate["audio_end_ms"] == pytest.approx(answer[1] - answer[0], abs=60)
    assert any(k == "truncated" for _, k, _ in run.timeline)  # the emulator accepted it
    assert "CANCELLING" in run.report["phases"]


def test_dtmf_transfer_and_tools_reach_the_session() -> None:
    menu = run_direct(load_script(SCRIPTS / "dtmf_menu"), "ga")
    assert menu.report["dtmf"] == ["2"]
    assert any(s[2] == "DTMF 2" for s in menu.caller_spans)
    transfer = run_direct(load_script(SCRIPTS / "transfer"), "beta")
    assert transfer.transfer_targets == ["sip:agent@127.0.0.1:5090"]
    assert [k for _, k, s in transfer.timeline if k == "transfer_progress"] == ["transfer_progress"] * 2
    assert transfer.report["end_reason"] == "transferred" and transfer.ended_by == "transfer"


@pytest.mark.parametrize("dialect", ["beta", "ga"])
def test_network_drop_reconnects_once_and_leaves_nothing_stale(dialect: str) -> None:
    run = run_direct(load_script(SCRIPTS / "network_drop"), dialect)
    assert run.ok, [c for c in run.checks if not c.ok]
    assert run.report["reconnects"] == 1
    assert "Closed(network)" in [t for _, t in run.events]
    # the lost answer's item is not truncated on the new session (it does not know it): no barge-in, one error
    assert run.report["barge_ins"] == 0
    assert len(run.report["errors"]) == 1 and run.report["errors"][0]["class"] == "network"
    assert "Sorry, the line dropped. We open at nine on Saturdays." in run.report["agent_transcript"]


def test_a_wait_that_never_comes_true_fails_the_run(tmp_path: Path) -> None:
    target = tmp_path / "silent_agent"
    shutil.copytree(SCRIPTS / "billing_caller_first", target)
    data = yaml.safe_load((target / "script.yaml").read_text())
    data["turns"][0] = {**data["turns"][0], "wait": "agent_done", "timeout_ms": 2000}  # nobody greets here
    (target / "script.yaml").write_text(yaml.safe_dump(data))
    run = run_direct(load_script(target), "beta")
    assert run.runner_failures[0] == "turns[0].wait agent_done: not met within 2000 ms"
    assert not run.ok
    assert run.checks[0].name == "turns" and not run.checks[0].ok


def test_max_duration_hangs_up(tmp_path: Path) -> None:
    target = tmp_path / "long"
    shutil.copytree(SCRIPTS / "transfer", target)
    data = yaml.safe_load((target / "script.yaml").read_text())
    data["max_duration_s"] = 3.0  # before the caller even speaks
    (target / "script.yaml").write_text(yaml.safe_dump(data))
    run = run_direct(load_script(target), "ga")
    assert any("max_duration_s=3" in f for f in run.runner_failures)
    assert run.duration_ms == pytest.approx(3000, abs=60)
    assert run.ended_by == "caller"


def test_in_memory_connection_speaks_the_dialect_on_both_sides() -> None:
    async def main() -> list[ev.Event]:
        emulator = EmulatorSession(GA, Settings(speed=0, seed=3, faults=Settings().faults), now=0.0)
        client = InMemoryRealtime(GA, emulator)
        await client.connect()
        client.send(ev.CreateResponse(instructions="Say: 'hello there'"))
        seen: list[ev.Event] = []
        async for event in client.events():
            seen.append(event)
            if isinstance(event, ev.ResponseDone):
                await client.close()
        return seen

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        seen = runner.run(main())
    kinds = [e.kind for e in seen]
    assert kinds[0] == "SessionReady" and "AudioChunk" in kinds and "ItemDone" in kinds
    assert [e.text for e in seen if isinstance(e, ev.AgentTranscript) and e.final] == ["hello there"]
    assert isinstance(seen[-1], ev.Closed) and seen[-1].error_class is None


def test_an_aborted_socket_is_a_retryable_network_close() -> None:
    async def main() -> ev.Closed | None:
        emulator = EmulatorSession(BETA, Settings().with_values({"drop_after_s": 1.0}), now=0.0)
        client = InMemoryRealtime(BETA, emulator)
        await client.connect()
        async for event in client.events():
            if isinstance(event, ev.Closed):
                return event
        return None

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        closed = runner.run(main())
    assert closed == ev.Closed(ev.ErrorClass.NETWORK, None, "connection lost", retryable=True)
