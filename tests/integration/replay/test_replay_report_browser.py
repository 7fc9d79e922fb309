"""The replay report as a person reads it, in a real headless Chromium (driven over CDP, as the console's tests do):
statuses in colours that differ, the "unexpected only" filter, the by-design differences of a Live run, runs in as
many columns as there are, aligned transcripts with marked words, the events behind the ticks, the audio, the cost,
the emulator banner, and no absolute path of the machine."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "console"))
from _cdp import CHROMIUM, Browser

from bridge.replay.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")]

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = REPO / "call_scripts"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """question_answer, idle_timeout (its difference declared) and a copy of question_answer whose GA answers 2 s
    later (unexpected), in beta, GA and Live."""
    work = tmp_path_factory.mktemp("suite")
    slow = work / "slow_ga"
    shutil.copytree(SCRIPTS / "question_answer", slow)
    data = yaml.safe_load((slow / "script.yaml").read_text())
    data["name"] = "slow_ga"
    data["emulator"]["dialect_settings"] = {"ga": {"response_latency_ms": 8150}}
    for bound in ("max_first_audio_ms", "max_greeting_ms", "max_reply_gap_ms"):  # the script's own bounds left out
        data["expect"].pop(bound)
    (slow / "script.yaml").write_text(yaml.safe_dump(data))
    out = work / "report"
    argv = [str(SCRIPTS / "question_answer"), str(SCRIPTS / "idle_timeout"), str(slow)]
    assert main([*argv, "--dialects", "beta,ga,live", "--report", str(out)]) == 1
    return out


async def test_the_report_tells_expected_from_unexpected_at_a_glance(report: Path) -> None:
    text = (report / "report.html").read_text()
    assert str(REPO) not in text and str(report) not in text  # relative paths only
    async with Browser(width=1500, height=1200) as browser:
        page = await browser.page()
        await page.goto((report / "report.html").as_uri())
        statuses = await page.eval(
            "JSON.stringify([...document.querySelectorAll('table.summary tr[data-status]')].map(tr => "
            "[tr.querySelector('a').textContent, tr.dataset.status, "
            "getComputedStyle(tr.querySelector('.badge')).backgroundColor]))"
        )
        rows = {name: (status, colour) for name, status, colour in json.loads(statuses)}
        assert {name: s for name, (s, _) in rows.items()} == {
            "question_answer": "by_design",
            "idle_timeout": "expected",
            "slow_ga": "unexpected",
        }
        assert len({colour for _, colour in rows.values()}) == 3  # each status its own colour
        # the Live run's by-design differences are listed, as such
        designed = await page.eval(
            "[...document.querySelectorAll('#script-question_answer li.by_design')].map(li => li.textContent).join('|')"
        )
        assert "beta/Live: no speech events" in designed and "commentary" in designed
        assert await page.eval("document.getElementById('emulator-banner').offsetHeight > 0")
        # three runs, three columns side by side
        tops = await page.eval(
            "JSON.stringify([...document.querySelectorAll('#script-slow_ga .dialect')].map(d => "
            "[d.dataset.dialect, d.getBoundingClientRect().top, d.getBoundingClientRect().left]))"
        )
        columns = json.loads(tops)
        assert [c[0] for c in columns] == ["beta", "ga", "live"]
        assert len({round(c[1]) for c in columns}) == 1 and columns[0][2] < columns[1][2] < columns[2][2]
        # the slow reply's cell is marked; idle_timeout's extra words are marked in the aligned transcript
        assert await page.eval("document.querySelectorAll('#script-slow_ga table.timing td.far').length") >= 1
        marked = await page.eval(
            "[...document.querySelectorAll('#script-idle_timeout table[data-transcript=agent_transcript] mark')]"
            ".map(m => m.textContent).join('|')"
        )
        assert "still there?" in marked
        # the events behind the ticks, the audio and the cost of each run
        assert await page.eval("document.querySelectorAll('#script-slow_ga details.events tr').length") > 20
        sources = await page.eval(
            "[...document.querySelectorAll('#script-slow_ga audio')].map(a => a.getAttribute('src')).join('|')"
        )
        assert sources.split("|") == [f"audio/slow_ga-{d}/audio.wav" for d in ("beta", "ga", "live")]
        for source in sources.split("|"):
            assert (report / source).stat().st_size > 10_000
        assert "prices as of 2025-08-28" in await page.eval("document.querySelector('tr.cost').textContent")
        # "unexpected only": one script left in view
        await page.click("label[for=f-unexpected]")
        visible = await page.eval(
            "[...document.querySelectorAll('section.script')].filter(s => s.offsetHeight > 0)"
            ".map(s => s.dataset.script).join('|')"
        )
        assert visible == "slow_ga"
        rows_left = await page.eval(
            "[...document.querySelectorAll('table.summary tr[data-status]')].filter(r => r.offsetHeight > 0).length"
        )
        assert rows_left == 1
        assert not page.problems, page.problems
