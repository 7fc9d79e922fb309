"""The report: JSON for tools, one self-contained HTML page for people."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bridge.replay.compare import ScriptResult
from bridge.replay.direct import replay_direct
from bridge.replay.history import changes
from bridge.replay.report import HTML_FILE, JSON_FILE, write_report
from bridge.replay.script import load_script

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = REPO / "call_scripts"


@pytest.fixture(scope="module")
def results() -> list[ScriptResult]:
    scripts = [load_script(SCRIPTS / n) for n in ("barge_in", "idle_timeout", "transfer")]
    return replay_direct(scripts, ["beta", "ga"])


def test_json_report(results: list[ScriptResult], tmp_path: Path) -> None:
    write_report(results, tmp_path, {"via": "direct", "target": "emulator", "dialects": ["beta", "ga"]})
    data = json.loads((tmp_path / JSON_FILE).read_text())
    summary = data["meta"]["summary"]
    assert (summary["same"], summary["differs"], summary["failed"], summary["error"]) == (2, 1, 0, 0)
    assert (summary["status_same"], summary["status_expected"], summary["status_unexpected"]) == (2, 1, 0)
    assert summary["unexpected_differences"] == 0 and summary["expected_differences"] == 5
    by_name = {s["script"]: s for s in data["scripts"]}
    idle = by_name["idle_timeout"]
    assert idle["verdict"] == "differs" and idle["expected_comparison"] == "differs"
    assert "GA: IdleTimeout x1 (beta had none)" in idle["reasons"]
    run = by_name["barge_in"]["runs"]["ga"]
    assert run["ok"] and run["report"]["truncates"] and run["events"] and run["agent_spans"]
    assert {c["name"] for c in run["checks"]} >= {"barge_ins", "truncates", "agent_keywords"}


def test_html_is_self_contained_and_shows_both_dialects(results: list[ScriptResult], tmp_path: Path) -> None:
    page = write_report(results, tmp_path, {"via": "direct", "target": "emulator", "dialects": ["beta", "ga"]})
    assert page == tmp_path / HTML_FILE
    text = page.read_text()
    assert not re.search(r"<script|<link|<img|@import|url\(|\bsrc=", text)  # nothing to fetch, nothing to run
    assert not re.search(r"href=\"(?!#)", text)  # links only within the page (no audio was recorded here)
    assert str(REPO) not in text  # the script's path is relative
    for result in results:
        section = text.split(f'id="script-{result.script}"', 1)[1].split("</section>", 1)[0]
        assert section.count('class="dialect" data-dialect="beta"') == 1
        assert section.count('class="dialect" data-dialect="ga"') == 1
        assert section.count('<svg class="timeline"') == 2 and section.count('<svg class="latency"') == 2
        assert f'data-verdict="{result.verdict}"' in text and f'data-status="{result.status}"' in section
    assert "GA: IdleTimeout x1 (beta had none)" in text
    assert "truncate at <b>" in text  # barge-in truncates are shown
    assert "transfer_to_human" in text and "sip:agent@127.0.0.1:5090" in text


def test_the_report_shows_the_consoles_figures(results: list[ScriptResult], tmp_path: Path) -> None:
    """The greeting and the first reply (docs/operating.md, *what each figure means*) per run, as the call measured
    them: in the JSON's timing, the HTML's timing table and each run's line of figures."""
    write_report(results, tmp_path, {"via": "direct", "target": "emulator", "dialects": ["beta", "ga"]})
    data = json.loads((tmp_path / JSON_FILE).read_text())
    run = {s["script"]: s for s in data["scripts"]}["barge_in"]["runs"]["ga"]
    greeting, first_reply = run["report"]["greeting_ms"], run["report"]["first_reply_ms"]
    assert greeting is not None and first_reply is not None
    assert (run["timing"]["greeting_ms"], run["timing"]["first_reply_ms"]) == (greeting, first_reply)
    section = (tmp_path / HTML_FILE).read_text().split('id="script-barge_in"', 1)[1].split("</section>", 1)[0]
    timing = section.split('<table class="aligned timing">', 1)[1].split("</table>", 1)[0]
    assert f"<tr><td>greeting</td><td>{greeting:.0f} ms</td>" in timing
    assert f"<tr><td>first reply</td><td>{first_reply:.0f} ms</td>" in timing
    assert f"greeting: {greeting:.0f} ms; first reply: {first_reply:.0f} ms; longest wait: " in section


def test_a_baseline_names_a_first_reply_that_moved() -> None:
    def run(greeting: float, first_reply: float) -> dict[str, Any]:
        return {"model": "m", "ok": True, "timing": {"greeting_ms": greeting, "first_reply_ms": first_reply}}

    then = {"status": "same", "digest": "d", "tolerance_ms": 500.0, "runs": {"ga": run(800.0, 160.0)}}
    now = {"status": "same", "digest": "d", "tolerance_ms": 500.0, "runs": {"ga": run(900.0, 2160.0)}}
    assert changes(now, then) == [  # the greeting moved 100 ms: within the baseline tolerance (150 ms)
        "GA: first reply 160 ms -> 2160 ms (+2000 ms; tolerance 150 ms, beyond the budget 500 ms)"
    ]
    assert changes(now, then, tolerance_ms=50.0)[0] == (
        "GA: greeting 800 ms -> 900 ms (+100 ms; tolerance 50 ms, within the budget 500 ms)"
    )
