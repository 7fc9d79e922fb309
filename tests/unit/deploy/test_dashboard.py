"""The Grafana dashboard and the Prometheus alerts name only series the bridge exports (or recording rules it
defines), and the dashboard has the panels operators look for."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

from bridge import metrics

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
DASHBOARD = json.loads((DEPLOY / "grafana" / "callbridge.json").read_text())
ALERTS = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
SERIES = re.compile(r"\bcallbridge[_:][a-z0-9_:]+")


def exported() -> set[str]:
    """Every series name the bridge's metrics produce (counters' _total, histograms' _bucket/_sum/_count, ...)."""
    assert metrics.NS == "callbridge"
    names: dict[str, Any] = REGISTRY._names_to_collectors  # the registry's own name table, suffixes included
    return {name for name in names if name.startswith("callbridge_")}


def recorded() -> set[str]:
    return {rule["record"] for group in ALERTS["groups"] for rule in group["rules"] if "record" in rule}


def panels() -> list[dict[str, Any]]:
    return [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def test_every_panel_queries_exported_series_only() -> None:
    known = exported() | recorded()
    for panel in panels():
        exprs = [t["expr"] for t in panel["targets"]]
        assert exprs, f"panel {panel['title']!r} has no query"
        used = {name for expr in exprs for name in SERIES.findall(expr)}
        assert used, f"panel {panel['title']!r} names no callbridge series"
        assert used <= known, f"panel {panel['title']!r} names series nothing exports: {sorted(used - known)}"


def test_every_alert_queries_exported_series_only() -> None:
    known = exported() | recorded()
    for group in ALERTS["groups"]:
        for rule in group["rules"]:
            used = set(SERIES.findall(rule["expr"]))
            assert used <= known, f"{rule.get('alert') or rule.get('record')}: unknown series {sorted(used - known)}"


def test_the_dashboard_shows_what_operators_look_for() -> None:
    queries = " ".join(t["expr"] for p in panels() for t in p["targets"])
    titles = [p["title"].lower() for p in panels()]
    assert "callbridge_calls_active" in queries  # live calls
    assert "callbridge_front_worker_calls" in queries  # calls per worker
    for segment in ("capture", "uplink", "inference", "downlink", "playback", "greeting", "first_reply"):  # budget
        assert segment in queries
    assert any("connection failures per dialect" in t for t in titles)
    assert any("dropped sessions per dialect" in t for t in titles)
    assert "callbridge:call_failure_ratio:rate10m" in queries and "callbridge_rollout_rollbacks_total" in queries
    for per_variant in (
        "callbridge_variant_calls_total",
        "callbridge_variant_greeting_seconds_bucket",
        "callbridge_variant_first_reply_seconds_bucket",
        "callbridge_variant_cost_usd_total",
    ):  # health side by side per variant
        assert per_variant in queries
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))


def test_the_dashboard_has_the_safety_rows_and_its_variables() -> None:
    queries = " ".join(t["expr"] for p in panels() for t in p["targets"])
    for series in (
        "callbridge:variant_failure_ratio:rate10m",  # variant failure ratio
        "callbridge_rollout_weight",  # current weights
        "callbridge_calls_on_hold",  # the outage row: hold, breaker, failover
        "callbridge_realtime_breaker_open",
        "callbridge_failovers_total",
        'segment="turn"',  # end-to-end turn latency
        "callbridge_worker_restarts_total",
    ):
        assert series in queries, series
    variables = {v["name"] for v in DASHBOARD["templating"]["list"]}
    assert {"dialplan", "variant", "instance"} <= variables
    for variable in ("$dialplan", "$variant", "$instance"):
        assert variable in queries, variable


def test_a_misspelt_series_would_be_caught() -> None:
    assert "callbridge_calls_active" in exported()
    assert "callbridge_latency_seconds_bucket" in exported()
    assert "callbridge_realtime_connect_failures_total" in exported()
    assert "callbridge_call_active" not in exported() | recorded()
