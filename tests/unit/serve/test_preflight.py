"""The start-up check asks each dialect the plans use at that dialect's own credential endpoint."""

from __future__ import annotations

from pathlib import Path

from bridge.dialplan import load_dialplans
from bridge.serve.preflight import dialects_in_use

ROOT = Path(__file__).resolve().parents[3]


def _plans(tmp_path: Path, *bodies: str) -> Path:
    for i, body in enumerate(bodies):
        (tmp_path / f"p{i}.yaml").write_text(f"name: p{i}\nmatch: ['{1000 + i}']\n{body}")
    return tmp_path


def test_a_pinned_plan_is_checked_at_its_own_dialects_endpoint(tmp_path: Path) -> None:
    plans = load_dialplans(_plans(tmp_path, "dialect: beta\n"))
    assert [(d.name, d.credential_path) for d in dialects_in_use(plans)] == [("beta", "/realtime/sessions")]


def test_rollout_variants_count_and_live_has_nothing_to_ask() -> None:
    shipped = {p.name: p for p in load_dialplans(ROOT / "dialplans")}
    # Live connects with the key: no credential endpoint to ask
    assert [d.name for d in dialects_in_use([shipped["support-ga-to-live"]])] == ["ga"]
    assert dialects_in_use([shipped["live"]]) == []


def test_the_shipped_plans_check_beta_and_ga_each_once() -> None:
    assert [d.name for d in dialects_in_use(load_dialplans(ROOT / "dialplans"))] == ["beta", "ga"]
