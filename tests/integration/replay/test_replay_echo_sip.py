"""The echo guard over real SIP: the echo set's callers as pjsua2 softphones whose line returns what they hear
(``callbridge call --echo``), into a worker pool, the emulator as the model (its VAD hears the returned agent audio
like a real service's). Scored as ``callbridge bench echo`` scores the direct runs (``bridge/replay/echoset.py``).
The scripts leave ``echo_guard`` at the plan's defaults: the guard is on without being asked for.

Each test runs a copy of its script with fewer turns (:func:`shortened`): its line, levels, plan and replies are the
set's, the turns the test does not need are left out (``callbridge bench echo`` runs the whole set).

* ``quiet``: the line returns the agent 14 dB down after 120 ms and the caller never speaks over it. The greeting
  and the first three answers: with the guard off the emulator's VAD cuts the agent off (the failure the guard
  prevents, over RTP: at least half the turns cut); with it on, none of the four agent turns is cut;
* ``barge_in``: the same line, and the caller does speak over the agent twice, into the first answer and into the
  answer to that barge-in (the plain turn between them left out): both barge-ins are taken, each within 250 ms of
  the caller's onset (the moment the caller stops hearing the agent), and the last answer plays whole after them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bridge.dialplan import EchoGuardPlan
from bridge.replay.compare import DialectRun
from bridge.replay.echoset import EchoScore, score
from bridge.replay.script import load_script
from bridge.replay.sip import SipOptions, replay_sip

pytestmark = pytest.mark.integration
# real-time audio judged to the frame: one after another with the suite's other timing-precise tests (tests/conftest.py)
timed = pytest.mark.xdist_group("cpu")

ECHO = Path(__file__).resolve().parents[3] / "call_scripts" / "echo"
QUIET_ANSWERS = 3  # quiet's answers kept: with the greeting, four agent turns


def run_over_sip(path: Path, defaults: bool = True) -> tuple[EchoScore, DialectRun]:
    script = load_script(path)
    if defaults:  # nothing in the script or its plan sets the guard: what a user who never heard of it gets
        assert script.plan("ga").echo_guard == EchoGuardPlan() and EchoGuardPlan().enabled
    (result,) = replay_sip([script], ["ga"], SipOptions())
    run = result.runs["ga"]
    assert not run.runner_failures, run.runner_failures
    return score(script, run), run


@timed
def test_a_silent_caller_on_an_echoing_line_is_never_taken_for_a_barge_in(tmp_path: Path) -> None:
    scored, run = run_over_sip(shortened(tmp_path, "quiet", [*range(QUIET_ANSWERS), -1]))
    assert scored.agent_turns == QUIET_ANSWERS + 1
    cuts = [e for e in run.report.get("timeline", []) if e[1] in ("barge_in", "echo_judged", "truncate")]
    assert scored.false_barge_ins == 0, (run.report.get("media"), run.report.get("echo"), cuts)
    assert [c for c in run.checks if not c.ok] == []  # every agent turn played whole, the caller hung up


def test_without_the_guard_the_echo_cuts_the_agent_off(tmp_path: Path) -> None:
    """The same caller with the plan's guard off: the failure the guard prevents, over real RTP."""
    copy = shortened(tmp_path, "quiet", [*range(QUIET_ANSWERS), -1], guard=False)
    scored, _run = run_over_sip(copy, defaults=False)
    assert scored.agent_turns == QUIET_ANSWERS + 1
    assert scored.false_barge_ins >= scored.agent_turns // 2, scored.summary()  # at least half the turns cut


@timed
def test_a_caller_speaking_over_the_agent_still_cuts_it_at_once(tmp_path: Path) -> None:
    scored, run = run_over_sip(shortened(tmp_path, "barge_in", [0, 1, 3, 4]))
    assert scored.agent_turns == 4
    assert scored.true_barge_ins == 2 and scored.hits == 2 and scored.false_barge_ins == 0, scored.summary()
    assert max(scored.latencies_ms) <= 250.0, scored.latencies_ms
    assert [c for c in run.checks if not c.ok] == []  # the last answer played whole, the caller hung up
    media = run.report.get("media", {})
    if media.get("port") == "native":  # the C guard heard the caller where the native uplink sent the frames
        uplink = media["uplink"]
        # ... on the media clock thread, but while each paused barge-in was judged, on the loop
        assert uplink["clock_thread"] > uplink["loop"] > 0, uplink


def shortened(tmp_path: Path, name: str, keep: list[int], guard: bool = True) -> Path:
    """A copy of the echo set's script ``name`` with only its turns at ``keep`` (in that order), written under
    ``tmp_path``; ``guard=False``: the plan's echo guard off in every dialect."""
    home = ECHO / name
    data = yaml.safe_load((home / "script.yaml").read_text())
    data["turns"] = [data["turns"][i] for i in keep]
    if not guard:
        for override in data["dialect_overrides"].values():
            override["echo_guard"] = {"enabled": False}
    copy = tmp_path / name
    copy.mkdir()
    # the script's relative audio paths made absolute, for a copy written elsewhere
    text = yaml.safe_dump(data, sort_keys=False).replace("../../", f"{home.parent.parent}/")
    (copy / "script.yaml").write_text(text)
    return copy
