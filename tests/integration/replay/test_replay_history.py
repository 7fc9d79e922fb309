"""``callbridge replay`` over time: ``--baseline DIR`` names per script what changed since an earlier run and the
report links that run; ``--history DIR`` keeps every run's report in a directory of its own and an index of the
runs with their pass rate, unexpected differences and median reply gap per dialect."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.replay.cli import main

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = REPO / "call_scripts"


class Page(HTMLParser):
    """The links (by id, and all), the rows of the tables (cells as text, with the row's attributes)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.links: list[dict[str, str]] = []
        self.rows: list[tuple[dict[str, str], list[str]]] = []
        self._row: tuple[dict[str, str], list[str]] | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "a":
            self.links.append(values)
        elif tag == "tr":
            self._row = (values, [])
            self.rows.append(self._row)
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row[1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _suite(tmp_path: Path) -> Path:
    suite = tmp_path / "suite"
    shutil.copytree(SCRIPTS / "question_answer", suite / "answer")
    return suite


def _slow_ga(script_dir: Path) -> None:
    """GA's model answers 2 s later (the emulator's latency at speed 4), the greeting's bound left out."""
    data = yaml.safe_load((script_dir / "script.yaml").read_text())
    data["emulator"]["dialect_settings"] = {"ga": {"response_latency_ms": 150 + 4 * 2000}}
    for bound in ("max_first_audio_ms", "max_greeting_ms", "max_reply_gap_ms"):  # the script's own bounds left out
        data["expect"].pop(bound)
    (script_dir / "script.yaml").write_text(yaml.safe_dump(data))


def test_a_run_against_its_baseline_names_what_changed_and_links_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = _suite(tmp_path)
    history = tmp_path / "history"
    assert main([str(suite), "--history", str(history), "--accept-baseline"]) == 0
    [first] = [p for p in history.iterdir() if p.is_dir()]
    capsys.readouterr()
    _slow_ga(suite / "answer")
    assert main([str(suite), "--history", str(history), "--json"]) == 1  # the baseline: the history's newest run
    data = json.loads(capsys.readouterr().out)
    [second] = [p for p in history.iterdir() if p.is_dir() and p != first]
    [script] = data["scripts"]
    since = script["since_baseline"]
    assert "status by design -> unexpected" in since  # GA's gpt-realtime-2.1 says a preamble: by design
    assert any(s.startswith("the script changed (#") for s in since), since
    assert any(s.startswith("new unexpected difference: timing: reply gap after turns[0] beta") for s in since)
    [gap] = [s for s in since if s.startswith("GA: median reply gap 160 ms -> ")]
    assert int(gap.split("-> ")[1].split(" ms")[0]) >= 2000, gap
    assert not [s for s in since if s.startswith("beta:")], since  # beta did not change
    baseline = data["meta"]["baseline"]
    assert (second / baseline["href"]).resolve() == (first / "report.html").resolve()
    assert baseline["changed"] == 1 and baseline["missing"] == []

    # the page: the link to the baseline's page, and the row that says what changed
    page = Page((second / "report.html").read_text())
    [link] = [a for a in page.links if a.get("id") == "baseline"]
    assert (second / link["href"]).resolve() == (first / "report.html").resolve()
    [row] = [(attrs, cells) for attrs, cells in page.rows if attrs.get("data-status") == "unexpected"]
    assert row[0].get("data-changed") == "1" and f"{len(since)} change(s)" in row[1]
    text = (second / "report.html").read_text()
    assert "Since the baseline" in text and "status by design -&gt; unexpected" in text
    first_page = (first / "report.html").read_text()
    assert 'id="baseline"' not in first_page and "Since the baseline" not in first_page  # the first had none


def test_the_history_index_lists_runs_with_pass_rate_and_median_reply_gap(tmp_path: Path) -> None:
    suite = _suite(tmp_path)
    history = tmp_path / "history"
    assert main([str(suite), "--history", str(history), "--accept-baseline"]) == 0
    _slow_ga(suite / "answer")
    assert main([str(suite), "--history", str(history)]) == 1
    entries: list[dict[str, Any]] = json.loads((history / "index.json").read_text())
    assert [(e["scripts"], e["pass_rate"], e["exit"]) for e in entries] == [(1, 1.0, 0), (1, 0.0, 1)]
    assert entries[0]["unexpected_differences"] == 0 and entries[1]["unexpected_differences"] >= 1
    gaps = [e["median_reply_gap_ms"] for e in entries]
    assert gaps[0]["beta"] == gaps[0]["ga"] == gaps[1]["beta"]  # the same script, the same answer
    assert gaps[1]["ga"] - gaps[0]["ga"] >= 1900, gaps
    assert entries[1]["baseline"] == entries[0]["dir"] and entries[1]["changed_since_baseline"] == 1
    for entry in entries:  # each run's report kept in its own directory
        assert (history / entry["dir"] / "report.json").is_file()

    page = Page((history / "index.html").read_text())
    runs = [(attrs, cells) for attrs, cells in page.rows if "data-run" in attrs]
    assert [attrs["data-run"] for attrs, _ in runs] == [entries[1]["dir"], entries[0]["dir"]]  # newest first
    header = next(cells for attrs, cells in page.rows if not attrs)
    rate, ga = header.index("pass rate"), header.index("median reply gap GA")
    assert [cells[rate] for _, cells in runs] == ["0 %", "100 %"]
    assert [cells[ga] for _, cells in runs] == [f"{gaps[1]['ga']:.0f} ms", f"{gaps[0]['ga']:.0f} ms"]
    linked = [a["href"] for a in page.links]
    assert linked == [f"{entries[1]['dir']}/report.html", f"{entries[0]['dir']}/report.html"]
    assert all((history / href).is_file() for href in linked)


def test_an_explicit_baseline_and_a_bad_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = _suite(tmp_path)
    before, after = tmp_path / "before", tmp_path / "after"
    assert main([str(suite), "--report", str(before)]) == 0
    shutil.copytree(SCRIPTS / "transfer", suite / "transfer")
    assert main([str(suite), "--report", str(after), "--baseline", str(before)]) == 0
    out = capsys.readouterr().out
    assert "since the baseline: new: the baseline did not run this script" in out  # transfer
    assert "baseline ../before (" in out and "1 script(s) changed" in out
    data = json.loads((after / "report.json").read_text())
    assert {s["script"]: s["since_baseline"] for s in data["scripts"]}["answer"] == []  # nothing changed
    assert data["meta"]["baseline"]["href"] == "../before/report.html"

    assert main([str(suite), "--baseline", str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere'}: --baseline: no such directory" in capsys.readouterr().err
    assert main([str(suite), "--baseline", str(suite)]) == 2  # a directory, but no report in it
    assert f"{suite / 'report.json'}: (file): no such file" in capsys.readouterr().err


def test_the_history_keeps_recent_audio_and_every_runs_figures(tmp_path: Path) -> None:
    suite = _suite(tmp_path)
    history = tmp_path / "history"
    for _ in range(3):
        assert main([str(suite), "--history", str(history), "--keep-audio", "1", "--keep", "2"]) == 0
    entries = json.loads((history / "index.json").read_text())
    assert len(entries) == 3  # every run's figures stay in the index
    oldest, middle, newest = (history / e["dir"] for e in entries)
    assert entries[0].get("pruned") and not oldest.exists()  # beyond --keep 2: its directory is gone
    assert (middle / "report.json").is_file() and not list(middle.rglob("*.wav"))  # beyond --keep-audio 1
    assert entries[1].get("audio") is False and list(newest.rglob("*.wav"))  # the newest keeps its recordings
    page = (history / "index.html").read_text()
    assert f"{entries[0]['created']} (pruned)" in page
    # beta and GA answer alike here: both lines show, the first wider and solid, the second narrower and dashed
    beta = re.search(r'<polyline[^>]*stroke-width="(\d+)"[^>]*data-column="beta"', page)
    ga = re.search(r'<polyline[^>]*stroke-width="(\d+)" stroke-dasharray="[^"]+"[^>]*data-column="ga"', page)
    assert beta and ga and int(beta.group(1)) > int(ga.group(1)), page
    assert main([str(suite), "--history", str(history), "--keep", "0"]) == 2  # named: it would drop this run
