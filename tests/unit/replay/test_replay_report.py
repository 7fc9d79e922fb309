"""The report: JSON for tools, one self-contained HTML page for people."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bridge.replay.compare import ScriptResult
from bridge.replay.direct import replay_direct
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
