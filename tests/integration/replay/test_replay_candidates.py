"""The QA gate on broken candidates: each one red, with a reason a QA lead reads in one line; the unchanged set and
paraphrases of its answers green. A candidate is the shipped set changed as a model, a prompt or a release would
change it (the emulator says what the script's annotations say, so changing what it says stands for a model saying
something else), replayed against the unchanged set's run as the baseline."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.replay.cli import main

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SET = ("question_answer", "tool_end_call", "transfer", "network_drop")
SPEED = 4  # the emulator's pace: response_latency_ms is scaled by it

Edit = Callable[[Path], None]


def _script(suite: Path, name: str) -> tuple[Path, dict[str, Any]]:
    path = suite / name / "script.yaml"
    return path, yaml.safe_load(path.read_text())


def reply(name: str, turn: int, text: str) -> Edit:
    """The model answers ``turns[turn]`` of script ``name`` with ``text``."""

    def edit(suite: Path) -> None:
        path, data = _script(suite, name)
        old = data["turns"][turn]["reply"]
        data["turns"][turn]["reply"] = {**old, "text": text} if isinstance(old, dict) else text
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    return edit


def greeting(name: str, text: str) -> Edit:
    def edit(suite: Path) -> None:
        path, data = _script(suite, name)
        data["emulator"]["greeting"] = text
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    return edit


def after_tool(name: str, turn: int, text: str | None) -> Edit:
    """What the model says once its tool's result is back (None: nothing scripted, it reads the result out)."""

    def edit(suite: Path) -> None:
        path, data = _script(suite, name)
        if text is None:
            data["turns"][turn]["reply"].pop("after_tool")
        else:
            data["turns"][turn]["reply"]["after_tool"] = text
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    return edit


def no_tool_call(name: str, turn: int, text: str) -> Edit:
    def edit(suite: Path) -> None:
        path, data = _script(suite, name)
        data["turns"][turn]["reply"] = text
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    return edit


def declared(name: str, turn: int, text: str, reason: str) -> Edit:
    """The model answers differently, and the script declares the change."""

    def edit(suite: Path) -> None:
        reply(name, turn, text)(suite)
        path, data = _script(suite, name)
        data["turns"][turn]["expect"]["changed"] = reason
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    return edit


def reconnect(name: str, text: str) -> Edit:
    def edit(suite: Path) -> None:
        path, data = _script(suite, name)
        data["emulator"]["reconnect_greeting"] = text
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    return edit


def removed(name: str) -> Edit:
    return lambda suite: shutil.rmtree(suite / name)


def plan(change: dict[str, Any]) -> Edit:
    """The support plan's profile changed (a prompt, a voice)."""

    def edit(suite: Path) -> None:
        path = suite.parent / "dialplans" / "support.yaml"
        data = yaml.safe_load(path.read_text())
        data["profile"].update(change)
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    return edit


def safe_model(model: str) -> Edit:
    """The support rollout's safe variant (where every call falls back) moves to ``model``."""

    def edit(suite: Path) -> None:
        path = suite.parent / "dialplans" / "support.yaml"
        data = yaml.safe_load(path.read_text())
        data["rollout"]["variants"][0]["model"] = model
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    return edit


def nothing(suite: Path) -> None:
    return None


def slower(ms: int) -> tuple[str, ...]:
    return ("--emulator-set", f"response_latency_ms={150 + SPEED * ms}")


@dataclass(frozen=True)
class Candidate:
    name: str
    edit: Edit
    red: str = ""  # a substring of one of the gate's red lines ("": green)
    args: tuple[str, ...] = ()


NEVER = "expect.never_says: said /"
BROKEN = [
    Candidate(
        "greeting says closed",
        greeting("question_answer", "Acme support is closed. Do not call us again today."),
        "expect.greeting.never_says: said 'closed'",
    ),
    Candidate(
        "answer negated",
        reply("question_answer", 0, "We are not open from nine to five on Saturdays."),
        f"turns[0].{NEVER}",
    ),
    Candidate(
        "answer negated by a contraction",
        reply("question_answer", 0, "On Saturdays we aren't open from nine to five."),
        f"turns[0].{NEVER}",
    ),
    Candidate(
        "hours changed",
        reply("question_answer", 0, "We are open from ten to four on Saturdays."),
        "turns[0].expect.says: missing 'nine to five'",
    ),
    Candidate(
        "day dropped",
        reply("question_answer", 0, "We are open from nine to five."),
        "turns[0].expect.says: missing 'Saturdays'",
    ),
    Candidate(
        "goodbye dropped: the result read aloud",
        after_tool("tool_end_call", 1, None),
        "spoken_json: the agent read raw JSON aloud",
    ),
    Candidate(
        "goodbye dropped: a closing without it",
        after_tool("tool_end_call", 1, "Thank you for calling Acme."),
        "expect.closing_line.says: missing 'goodbye'",
    ),
    Candidate(
        "transfer line dropped: the result read aloud",
        after_tool("transfer", 0, None),
        "transfer: failed: beta: spoken_json",
    ),
    Candidate(
        "JSON read in an answer",
        reply("tool_end_call", 0, 'Your order: {"status": "shipped", "eta": "Friday"}'),
        "spoken_json",
    ),
    Candidate(
        "delivery day flipped",
        reply("tool_end_call", 0, "Your order did not ship and will not arrive on Friday."),
        f"turns[0].{NEVER}",
    ),
    Candidate(
        "resumed answer wrong",
        reply("network_drop", 1, "Sorry about that. We are open from nine to three."),
        "turns[1].expect.says: missing 'nine to five'",
    ),
    Candidate("tool call lost", no_tool_call("transfer", 0, "Please hold on."), "tool_calls: called nothing"),
    Candidate("transfer script deleted", removed("transfer"), "transfer: removed: in the baseline, not run now"),
    Candidate("GA dropped", nothing, "removed: its GA run is in the baseline only", ("--dialects", "beta")),
    Candidate(
        "prompt changed",
        plan({"instructions": "You are Acme's agent. Always offer the premium plan."}),
        "unjudged: GA instructions #",
    ),
    Candidate("voice changed", plan({"voice": "verse"}), "unjudged: GA voice alloy -> verse"),
    Candidate("550 ms slower everywhere", nothing, "worse than the baseline: beta: greeting", slower(550)),
    Candidate("2 s slower everywhere", nothing, "max_reply_gap_ms", slower(2000)),
    Candidate("answers run longer: cost creep", nothing, "cost of the call", ("--emulator-set", "min_reply_ms=6000")),
    Candidate("safe model past its shutdown date", safe_model("gpt-realtime"), "refused: ", ("--today", "2027-02-01")),
    # the pinned words still said, the meaning moved: drift against the baseline's answer names it
    Candidate(
        "Sunday hours added",
        reply("question_answer", 0, "We are open from nine to five on Saturdays and from ten to two on Sundays."),
        "answer: GA turns[0], pinned, changed: a number changed: nine five -> nine five ten two",
    ),
    Candidate(
        "shipping day moved",
        reply("tool_end_call", 0, "Your order shipped last week and arrives on Friday."),
        "answer: beta turns[0], pinned, changed: a date changed: yesterday friday -> friday",
    ),
    Candidate(
        "another company's name",
        greeting("question_answer", "Thank you for calling Acme support, a Globex company. How can I help you today?"),
        "answer: beta greeting, pinned, changed: a name changed: - -> Globex",
    ),
    Candidate(
        "the goodbye says something else",
        after_tool(
            "tool_end_call", 1, "Please stay on the line while I open a ticket for the damaged parcel. Goodbye."
        ),
        "closing, pinned, changed: a name changed: Acme -> -; says something else (similarity 20%)",
    ),
]
GREEN = [
    Candidate("unchanged", nothing),
    Candidate("paraphrase: the hours", reply("question_answer", 0, "On Saturdays, we're open from nine to five.")),
    Candidate("paraphrase: the greeting", greeting("question_answer", "Hi, Acme support here. What can I do for you?")),
    Candidate("paraphrase: the delivery", reply("tool_end_call", 0, "It shipped yesterday, and it arrives on Friday.")),
    Candidate("paraphrase: the goodbye", after_tool("tool_end_call", 1, "Goodbye, and thanks for calling Acme!")),
    Candidate("paraphrase: the transfer", after_tool("transfer", 0, "Sure, I'm transferring you to a person now.")),
    Candidate("paraphrase: the resumed answer", reply("network_drop", 1,
              "Apologies. On Saturdays we are open nine to five.")),
    Candidate("an unpinned answer changed: listed", reconnect("network_drop",
              "Sorry, the line dropped. We open at ten on Saturdays."),
              "GA: answer turns[0] changed (similarity"),
    Candidate("a pinned change the script declares", declared("question_answer", 0,
              "We open nine to five on Saturdays, ten to two Sundays.", "Sunday opening (QA-88)"),
              "accepted (answer): question_answer/ga/turns[0] by the script: Sunday opening (QA-88)"),
    Candidate("a pinned change accepted", reply("question_answer", 0,
              "We open nine to five on Saturdays, ten to two Sundays."),
              "accepted (answer): question_answer/ga/turns[0] by --accept question_answer:turns[0]",
              ("--accept", "question_answer:turns[0]")),
]  # fmt: skip


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The shipped set (a few of its scripts) and its green run, the baseline."""
    root = tmp_path_factory.mktemp("set")
    for name in SET:
        shutil.copytree(REPO / "call_scripts" / name, root / "suite" / name)
    shutil.copytree(REPO / "dialplans", root / "dialplans")
    assert _main(root / "suite", root / "base") == 0
    return root, root / "base"


def _main(suite: Path, out: Path, *extra: str) -> int:
    dialects = () if "--dialects" in extra else ("--dialects", "beta,ga")
    return main([str(suite), "--dialplans", str(suite.parent / "dialplans"), *dialects, "--report", str(out), *extra])


def _candidate(baseline: tuple[Path, Path], tmp_path: Path, candidate: Candidate) -> tuple[int, dict[str, Any]]:
    root, base = baseline
    shutil.copytree(root / "suite", tmp_path / "suite")
    shutil.copytree(root / "dialplans", tmp_path / "dialplans")
    candidate.edit(tmp_path / "suite")
    code = _main(tmp_path / "suite", tmp_path / "out", "--baseline", str(base), *candidate.args)
    data: dict[str, Any] = json.loads((tmp_path / "out" / "report.json").read_text())
    return code, data


def test_a_model_move_is_named(baseline: tuple[Path, Path], tmp_path: Path) -> None:
    _, data = _candidate(baseline, tmp_path, Candidate("mini", safe_model("gpt-realtime-2.1-mini")))
    since = {s["script"]: s["since_baseline"] for s in data["scripts"]}["question_answer"]
    assert "a model move: the plan's calls go gpt-realtime-2.1 -> gpt-realtime-2.1-mini" in since, since
    red = [line for line in data["meta"]["gate"]["red"] if "refused" in line]
    assert red == [], red  # a current model: nothing refused
    code_old, data = _candidate(
        baseline, tmp_path / "old", Candidate("old", safe_model("gpt-realtime"), args=("--today", "2027-02-01"))
    )
    [refused, *_] = [line for line in data["meta"]["gate"]["red"] if ": refused: " in line]
    assert code_old == 1
    assert "the safe model gpt-realtime was shut down on 2027-01-20: the service refuses it" in refused, refused


def test_a_dialect_move_is_named(tmp_path: Path) -> None:
    for name in ("billing_caller_first",):
        shutil.copytree(REPO / "call_scripts" / name, tmp_path / "suite" / name)
    shutil.copytree(REPO / "dialplans", tmp_path / "dialplans")
    assert _main(tmp_path / "suite", tmp_path / "base") == 0
    plan = tmp_path / "dialplans" / "billing-beta.yaml"
    plan.write_text(plan.read_text().replace("dialect: beta", "dialect: ga", 1))
    _main(tmp_path / "suite", tmp_path / "moved", "--baseline", str(tmp_path / "base"))
    [script] = json.loads((tmp_path / "moved" / "report.json").read_text())["scripts"]
    assert "a dialect move: the plan's calls go beta -> GA" in script["since_baseline"], script["since_baseline"]


def test_there_are_enough_candidates() -> None:
    assert len(BROKEN) >= 20 and len([c for c in GREEN if c.name.startswith("paraphrase")]) >= 5


@pytest.mark.parametrize("candidate", BROKEN, ids=lambda c: c.name)
def test_a_broken_candidate_is_red_in_one_line(
    baseline: tuple[Path, Path], tmp_path: Path, candidate: Candidate
) -> None:
    code, data = _candidate(baseline, tmp_path, candidate)
    red = data["meta"]["gate"]["red"]
    assert code == 1, red
    assert any(candidate.red in line and "\n" not in line for line in red), red


@pytest.mark.parametrize("candidate", GREEN, ids=lambda c: c.name)
def test_the_unchanged_set_and_paraphrases_are_green(
    baseline: tuple[Path, Path], tmp_path: Path, candidate: Candidate
) -> None:
    for attempt in range(5 if candidate.name == "unchanged" else 1):  # the same five runs in a row
        code, data = _candidate(baseline, tmp_path / str(attempt), candidate)
        assert code == 0, data["meta"]["gate"]["red"]
    lines = [line for s in data["scripts"] for line in s.get("since_baseline") or []]
    accepted = [f"accepted ({a['kind']}): {a['name']} by {a['by']}" + (f": {a['reason']}" if a.get("reason") else "")
                for a in data["meta"]["gate"]["accepts"]]  # fmt: skip
    if candidate.name.startswith("paraphrase"):  # the report shows how alike the words are
        assert any(" in other words (similarity " in line for line in lines), lines
    if candidate.red:
        assert any(candidate.red in line for line in [*lines, *accepted]), (lines, accepted)
