"""The alert rules are unit-tested with promtool (Debian package `prometheus`); CI installs it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bridge import metrics

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing: apt-get install prometheus")
def test_promtool_rule_tests_pass() -> None:
    check = subprocess.run(["promtool", "check", "rules", "alerts.yml"], cwd=RULES, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"], cwd=RULES, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_rules_only_use_metrics_the_bridge_defines() -> None:
    text = (RULES / "alerts.yml").read_text()
    used = set(re.findall(r"\b(callbridge_[a-z_]+?)(?:_bucket|_total)?\b[{\[]", text))
    defined = {m._name for m in vars(metrics).values() if hasattr(m, "_name") and hasattr(m, "_type")}
    assert used, "no metric found in the rules"
    assert used <= defined, f"rules use undefined metrics: {used - defined}"


def test_every_runbook_url_is_a_section_of_operating_md() -> None:
    text = (RULES / "alerts.yml").read_text()
    docs = (RULES.parents[1] / "docs" / "operating.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in docs.splitlines()
        if line.startswith("#")
    }
    urls = re.findall(r'runbook_url: "docs/operating.md#([a-z0-9-]+)"', text)
    assert len(urls) >= 6, urls
    assert set(urls) <= anchors, set(urls) - anchors
