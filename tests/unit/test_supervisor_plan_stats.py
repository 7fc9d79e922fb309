"""The per-plan strip's figures on known call hashes (pure)."""

from __future__ import annotations

from bridge.supervisor.plan_stats import p95, plan_stats


def ended(plan: str, secs: float, outcome: str, **extra: str) -> dict[str, str]:
    return {"dialplan": plan, "started_at": "100.0", "ended_at": str(100.0 + secs), "outcome": outcome, **extra}


def test_nearest_rank_p95() -> None:
    assert p95([]) is None
    assert p95([7.0]) == 7.0
    assert p95([float(v) for v in range(1, 21)]) == 19.0  # 20 values: rank 19
    assert p95([float(v) for v in range(1, 22)]) == 20.0  # 21 values: rank ceil(19.95) = 20


def test_figures_per_plan_and_a_configured_plan_without_calls() -> None:
    live = [{"dialplan": "desk", "on_hold": True, "in_outage": True}, {"dialplan": "desk", "on_hold": False}]
    calls = [
        ended("desk", 60, "completed", greeting_ms="300", first_reply_ms="900"),
        ended("desk", 120, "transferred", greeting_ms="500", first_reply_ms="700", had_outage="1"),
        ended("desk", 30, "completed", first_reply_ms="600"),  # the caller spoke first: no greeting
        ended("desk", 30, "completed", supervised="1"),
        ended("desk", 90, "failed"),
    ]
    rows = plan_stats(live, calls, plans=["quiet", "desk"])
    assert [r["dialplan"] for r in rows] == ["desk", "quiet"]
    desk, quiet = rows
    assert desk == {
        "dialplan": "desk", "active": 2, "on_hold": 1, "in_outage": 1, "ended": 5, "avg_handle_s": 66.0,
        "transfer_rate": 0.2, "resolved_alone": 2, "resolved_alone_rate": 0.4, "greeting_p95_ms": 500.0,
        "first_reply_p95_ms": 900.0, "had_outage": 1,
    }  # fmt: skip
    assert quiet == {
        "dialplan": "quiet", "active": 0, "on_hold": 0, "in_outage": 0, "ended": 0, "avg_handle_s": None,
        "transfer_rate": None, "resolved_alone": 0, "resolved_alone_rate": None, "greeting_p95_ms": None,
        "first_reply_p95_ms": None, "had_outage": 0,
    }  # fmt: skip
