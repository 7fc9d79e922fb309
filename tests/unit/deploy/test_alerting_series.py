"""Every series an alert rule (deploy/prometheus) or a dashboard panel (deploy/grafana) reads is on ``/metrics`` from
the node's start, each label set known at start at 0: a counter whose first sample is already 1 never shows an
``increase()``, so its first event would page nobody.

The node is started the way ``callbridge serve`` starts it, without sockets: each of its processes (serve's own, its
two workers, and the front that runs in serve's process with ``front: kamailio``) makes the start-up call it makes
in serve (tests/unit/deploy/_node_start.py), in a process of its own with ``PROMETHEUS_MULTIPROC_DIR`` set, and
``/metrics``' merge of their files (:func:`bridge.metrics.render`) is read. The node serves the repository's
dialplans (two rollouts, an orchestrated plan, pinned plans), ``webhook_url`` and one dialplan webhook.

Which part exports a series: the front's (:data:`FRONT`) only a node with ``front: kamailio`` exports, checked on the
front's own start; the orchestrator's (:data:`ORCHESTRATOR`) the workers of a node with an orchestrated dialplan
export, one series set per such dialplan; every other one serve and its workers export on every node.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bridge import metrics
from bridge.config import Settings
from bridge.dialplan import load_dialplans, rollout_specs
from bridge.realtime.dialects import DIALECTS
from bridge.serve.front import node_destinations

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
START = Path(__file__).with_name("_node_start.py")
NAME = re.compile(r"\bcallbridge_[a-z0-9_]+")
WORKERS = 2
WORKER_CAP = 4  # as _node_start.py's front has the workers report it

FRONT = {  # the front's view of the workers and its edge (bridge/serve/front.py), in the serve process that runs it
    "callbridge_front_worker_calls",
    "callbridge_front_worker_max_calls",
    "callbridge_front_worker_state",
    "callbridge_front_full_total",
}
ORCHESTRATOR = {  # the workers' calls of an orchestrated dialplan (bridge/call/orchestration.py)
    "callbridge_orchestrator_decisions_total",
    "callbridge_orchestrator_errors_total",
    "callbridge_orchestrator_fillers_total",
}

Samples = dict[str, list[tuple[dict[str, str], float]]]


def rule_files() -> list[Path]:
    """The rule files Prometheus loads (deploy/prometheus/prometheus.yml's ``rule_files``)."""
    here = DEPLOY / "prometheus"
    return [here / name for name in yaml.safe_load((here / "prometheus.yml").read_text())["rule_files"]]


def dashboard_queries(node: Any) -> Iterator[str]:
    """Every query of a Grafana dashboard: its panels' targets and its variables' queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                yield value
            else:
                yield from dashboard_queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_queries(item)


def used_names() -> set[str]:
    """Every ``callbridge_*`` identifier the alert rules' expressions and the dashboards' queries name (PromQL read
    loosely: recording rules' ``callbridge:...`` names are not series of the bridge)."""
    exprs = [r["expr"] for f in rule_files() for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]]
    for dashboard in sorted((DEPLOY / "grafana").glob("*.json")):
        exprs += dashboard_queries(json.loads(dashboard.read_text()))
    return {name for expr in exprs for name in NAME.findall(expr)}


def node_folder(tmp: Path) -> Path:
    """The repository's dialplans, the support plan with a webhook of its own (endpoint ``support.crm``)."""
    folder = tmp / "dialplans"
    folder.mkdir()
    for plan in sorted((ROOT / "dialplans").glob("*.yaml")):
        text = plan.read_text()
        if plan.name == "support.yaml":
            text += "webhooks:\n  - {url: 'https://crm.example/support', name: crm, secret: {env: CRM_SECRET}}\n"
        (folder / plan.name).write_text(text)
    return folder


def node_settings(tmp: Path) -> dict[str, Any]:
    return {
        "workers": WORKERS,
        "dialplans": str(node_folder(tmp)),
        "redis_url": "redis://127.0.0.1:1/0",  # never reached: nothing at start asks Redis for a series
        "webhook_url": "https://crm.example/hooks",
        "webhook_secret": "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY",
        "spool_dir": str(tmp / "spool"),
        "recordings_dir": str(tmp / "recordings"),
    }


def start(roles: list[str], settings: dict[str, Any], directory: Path) -> Samples:
    """Run each role's start in a process of its own, as serve's processes share ``directory``; /metrics' merge."""
    directory.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CALLBRIDGE_") and k not in ("REDIS_URL", "OPENAI_API_KEY", "PROMETHEUS_MULTIPROC_DIR")
    }
    env |= {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "sk-unused"}
    for role in roles:
        run = subprocess.run(
            [sys.executable, str(START), role, json.dumps(settings)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, f"{role}: {run.stderr[-3000:]}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
        body, _ = metrics.render()  # what serve's /metrics answers
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples.setdefault(s.name, []).append((dict(s.labels), s.value))
    return samples


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Samples]]:
    tmp = tmp_path_factory.mktemp("node")
    settings = node_settings(tmp)
    parts = {
        "serve": start(["serve", *(f"worker-{i}" for i in range(WORKERS))], settings, tmp / "serve-metrics"),
        "front": start(["front"], settings, tmp / "front-metrics"),
    }
    return settings, parts


def part_of(name: str) -> str:
    return "front" if name in FRONT else "serve"  # the orchestrator's: serve's workers


def test_the_deploy_files_name_the_series_this_test_sorts() -> None:
    used = used_names()
    assert len(used) >= 45, sorted(used)
    assert used >= FRONT | ORCHESTRATOR, sorted((FRONT | ORCHESTRATOR) - used)
    assert {"callbridge_webhooks_dead_lettered_total", "callbridge_webhooks_dropped_total"} <= used


def test_every_series_the_alerts_and_dashboards_read_is_exported_from_the_start(
    node: tuple[dict[str, Any], dict[str, Samples]],
) -> None:
    _, parts = node
    missing = sorted(f"{name} ({part_of(name)})" for name in used_names() if not parts[part_of(name)].get(name))
    assert not missing, f"{len(missing)} of {len(used_names())} series absent at start: {missing}"


def test_every_counter_and_histogram_read_starts_at_zero(node: tuple[dict[str, Any], dict[str, Samples]]) -> None:
    _, parts = node
    counted = [n for n in used_names() if n.endswith(("_total", "_bucket"))]
    for name in counted:
        values = {v for _, v in parts[part_of(name)].get(name, [])}
        assert values <= {0.0}, f"{name} starts at {sorted(values)}"


def known_label_sets(settings: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """The label sets known at start (from the settings and the dialplans) of the series the alerts and panels read
    by label, each one that must be there."""
    plans = load_dialplans(Path(settings["dialplans"]))
    specs = rollout_specs(plans)
    rollouts = sorted(specs)
    variants = [(dp, v.name) for dp, spec in specs.items() for v in spec.variants]
    every_variant = variants + [(p.name, p.dialect) for p in plans if p.rollout_spec is None]
    models = [(dp, v.name, m) for dp, spec in specs.items() for v in spec.variants for m in v.models() if m]
    orchestrated = sorted(p.name for p in plans if p.orchestrator is not None)
    endpoints = ("default", "support.crm")  # webhook_url, and the support plan's webhook named crm
    dialects = tuple(DIALECTS)
    workers = [str(i) for i in range(WORKERS)]
    node = Settings(**settings)
    caps = [(node.worker_sip_port(i), WORKER_CAP) for i in range(WORKERS)]
    front_workers = [d.address for d in node_destinations(node, caps)]
    # what a worker refuses an INVITE with (bridge/sip/service.py) and the 503 of a draining one (stopping.py)
    sip_codes = ("400", "401", "403", "415", "420", "486", "488", "500", "503", "513")
    return {
        "callbridge_webhooks_dead_lettered_total": [{"endpoint": e} for e in endpoints],
        "callbridge_webhooks_dropped_total": [
            {"endpoint": e, "reason": r} for e in endpoints for r in ("full", "memory")
        ],
        "callbridge_sip_rejected_total": [{"code": c} for c in sip_codes],
        "callbridge_rollout_flag_refused_total": [{"dialplan": dp} for dp in rollouts],
        "callbridge_rollout_state_missing": [{"dialplan": dp} for dp in rollouts],
        "callbridge_rollout_srm": [{"dialplan": dp} for dp in rollouts],
        "callbridge_rollout_weight": [{"dialplan": dp, "variant": v} for dp, v in variants],
        "callbridge_rollout_model_shutdown_timestamp_seconds": [
            {"dialplan": dp, "variant": v, "model": m} for dp, v, m in models
        ],
        "callbridge_rollout_variant_refused": [
            {"dialplan": dp, "variant": v.name, "model": v.models()[0]}
            for dp, spec in specs.items()
            for v in spec.variants
        ],
        "callbridge_rollout_rollbacks_total": [{"dialplan": dp, "variant": v} for dp, v in every_variant],
        "callbridge_rollout_decisions_total": [
            {"dialplan": dp, "variant": v, "action": a}
            for dp, v in variants
            for a in ("rollback", "promote", "srm", "complete")
        ],
        "callbridge_variant_calls_total": [
            {"dialplan": dp, "variant": v, "outcome": o}
            for dp, v in every_variant
            for o in ("ok", "connect_failure", "dropped", "recovered", "abandoned")
        ],
        "callbridge_calls_lost_to_worker_death_total": [{"dialplan": dp, "variant": v} for dp, v in every_variant],
        "callbridge_calls_started_total": [{"dialect": d, "dialplan": p.name} for d in dialects for p in plans],
        "callbridge_calls_on_hold": [{"dialplan": p.name} for p in plans],
        "callbridge_failovers_total": [
            {"dialplan": p.name, "reason": r} for p in plans for r in ("transfer", "goodbye")
        ],
        "callbridge_credential_rotations_total": [
            {"dialect": d, "result": r} for d in dialects for r in ("ok", "failed")
        ],
        "callbridge_realtime_connect_failures_total": [
            {"dialect": d, "error_class": c} for d in dialects for c in ("network", "auth", "protocol", "server")
        ],
        "callbridge_latency_seconds_bucket": [
            {"dialect": d, "segment": s, "le": "+Inf"} for d in dialects for s in metrics.SEGMENTS
        ],
        "callbridge_worker_restarts_total": [{"worker": w} for w in workers],
        "callbridge_realtime_breaker_open": [{"worker": w} for w in workers],
        "callbridge_orchestrator_decisions_total": [
            {"dialplan": dp, "action": a}
            for dp in orchestrated
            for a in ("say", "respond", "transfer", "hangup", "send_dtmf", "nothing")
        ],
        "callbridge_orchestrator_errors_total": [
            {"dialplan": dp, "kind": k}
            for dp in orchestrated
            for k in ("down", "timeout", "http_5xx", "http_4xx", "invalid_json", "invalid_answer")
        ],
        "callbridge_orchestrator_fillers_total": [{"dialplan": dp} for dp in orchestrated],
        "callbridge_front_worker_calls": [{"worker": w} for w in front_workers],
        "callbridge_front_worker_max_calls": [{"worker": w} for w in front_workers],
        "callbridge_front_worker_state": [
            {"worker": w, "state": s} for w in front_workers for s in ("active", "inactive", "trying", "drained")
        ],
    }


def test_each_known_label_set_is_there_from_the_start(node: tuple[dict[str, Any], dict[str, Samples]]) -> None:
    settings, parts = node
    known = known_label_sets(settings)
    assert set(known) <= used_names(), sorted(set(known) - used_names())
    absent: dict[str, list[dict[str, str]]] = {}
    for name, label_sets in known.items():
        there = [labels for labels, _ in parts[part_of(name)].get(name, [])]
        lacking = [want for want in label_sets if not any(want.items() <= have.items() for have in there)]
        if lacking:
            absent[name] = lacking
    assert not absent, "label sets absent at start:\n" + "\n".join(f"{n}: {ls}" for n, ls in sorted(absent.items()))


def test_the_orchestrators_series_are_its_dialplans_and_the_fronts_its_workers(
    node: tuple[dict[str, Any], dict[str, Samples]],
) -> None:
    settings, parts = node
    plans = load_dialplans(Path(settings["dialplans"]))
    orchestrated = {p.name for p in plans if p.orchestrator is not None}
    assert orchestrated == {"orders"}  # the repository's orchestrated plan
    for name in ORCHESTRATOR:
        assert {labels["dialplan"] for labels, _ in parts["serve"].get(name, [])} == orchestrated, name
    for name in FRONT - {"callbridge_front_full_total"}:
        assert not parts["serve"].get(name), f"{name}: a node without a front exports it"


def test_the_gauges_read_start_at_what_they_mean(node: tuple[dict[str, Any], dict[str, Samples]]) -> None:
    _, parts = node
    serve, front = parts["serve"], parts["front"]
    for name in (
        "callbridge_rollout_state_missing", "callbridge_rollout_srm", "callbridge_rollout_variant_refused",
        "callbridge_realtime_breaker_open", "callbridge_calls_on_hold",
    ):  # fmt: skip
        assert {v for _, v in serve.get(name, [])} == {0.0}, name
    assert {v for _, v in front.get("callbridge_front_worker_calls", [])} == {0.0}
    assert {v for _, v in front.get("callbridge_front_worker_max_calls", [])} == {float(WORKER_CAP)}
    assert {v for _, v in front.get("callbridge_front_worker_state", [])} == {0.0}  # until Kamailio says
    # the shipped rollouts' models have no announced shutdown: never (+Inf), which CallbridgeVariantModelShutdownSoon
    # does not take for a date; a 0 would read as 1970
    shutdowns = serve.get("callbridge_rollout_model_shutdown_timestamp_seconds", [])
    assert shutdowns and all(v > 0 for _, v in shutdowns), shutdowns
    assert any(math.isinf(v) for _, v in shutdowns), shutdowns
    weights: dict[str, float] = {}
    for labels, value in serve.get("callbridge_rollout_weight", []):
        weights[labels["dialplan"]] = weights.get(labels["dialplan"], 0.0) + value
    assert weights and set(weights.values()) == {100.0}, weights  # each rollout's default flag, shared out
