"""The alert rules are unit-tested with promtool (Debian package `prometheus`); CI installs it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

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


def test_every_alert_has_a_runbook_that_is_a_section_of_operating_md() -> None:
    rules = [r for g in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r.get("annotations", {}).get("runbook_url", "") for r in rules if "alert" in r}
    docs = (RULES.parents[1] / "docs" / "operating.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in docs.splitlines()
        if line.startswith("#")
    }
    assert len(alerts) >= 21, sorted(alerts)
    without = sorted(name for name, url in alerts.items() if not url.startswith("docs/operating.md#"))
    assert not without, f"alerts without a runbook_url in docs/operating.md: {without}"
    missing = {name: url for name, url in alerts.items() if url.partition("#")[2] not in anchors}
    assert not missing, f"runbook_url anchors with no section in docs/operating.md: {missing}"
    assert len(set(alerts.values())) == len(alerts), "two alerts share one runbook"


def test_the_new_node_alerts_watch_what_they_say() -> None:
    rules = {
        r.get("alert"): r for g in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"] for r in g["rules"]
    }
    assert rules["CallbridgeTargetDown"]["expr"].startswith("up{")
    assert "callbridge_ready" in rules["CallbridgeNotReady"]["expr"]
    assert "callbridge_redis_up" in rules["CallbridgeRedisUnreachable"]["expr"]
    assert "callbridge_calls_lost_to_worker_death_total" in rules["CallbridgeCallsLostToWorkerDeath"]["expr"]
    assert "callbridge_rollout_state_missing" in rules["CallbridgeRolloutStateMissing"]["expr"]
    assert 'state="drained"' in rules["CallbridgeFrontFull"]["expr"]  # a planned drain does not page


def test_every_counting_alert_fires_on_a_series_that_starts_absent() -> None:
    """An alert on a counter's ``increase()`` also takes a series that appears within its window already above its
    threshold (alerts.yml's header: ``X unless last_over_time(X[1d] offset W)``), and alerts_test.yml has a case
    where that counter's series starts absent (``_``, not 0) and the alert fires."""
    rules = [r for g in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    cases = yaml.safe_load((RULES / "alerts_test.yml").read_text())["tests"]
    counting = {r["alert"]: r["expr"] for r in rules if "alert" in r and "increase(" in r["expr"]}
    assert len(counting) >= 13, sorted(counting)
    for alert, expr in counting.items():
        counters = set(re.findall(r"increase\((callbridge_[a-z0-9_]+)", expr))
        for counter in counters:
            window = re.search(rf"increase\({counter}\b[^\[]*\[(\w+)\]", expr)
            assert window, f"{alert}: {counter}"
            assert re.search(rf"unless last_over_time\({counter}\b[^\[]*\[1d\] offset {window[1]}\)", expr), (
                f"{alert}: a {counter} series that appears above the threshold is not seen"
            )
        from_absent = [
            case
            for case in cases
            if any(t["alertname"] == alert and t.get("exp_alerts") for t in case.get("alert_rule_test", []))
            and any(
                s["series"].partition("{")[0] in counters and str(s["values"]).split()[0] == "_"
                for s in case["input_series"]
            )
        ]
        assert from_absent, f"{alert}: no promtool case starts its counter absent and expects it to fire"
