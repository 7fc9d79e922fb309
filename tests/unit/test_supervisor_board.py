"""The wallboard's figures from live rows, ended hashes and refused counts (pure), and the pending writer's refused
minutes and transfer start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes.clock import Clock

from bridge import events as ev
from bridge.dialplan import WallboardThresholds, load_dialplan
from bridge.errors import ConfigError
from bridge.store import keys
from bridge.store.pending import PendingWrites
from bridge.store.record import iso
from bridge.supervisor.board import TILES, board, ended_figures, figures

NOW = 10_000.0


def _ended(outcome: str, seconds: float, plan: str = "line", ring: float = 2.0) -> dict[str, str]:
    answered = "" if outcome in ("abandoned", "completed_elsewhere") else str(NOW - 100 + ring)
    return {"outcome": outcome, "started_at": str(NOW - 100), "answered_at": answered,
            "ended_at": str(NOW - 100 + seconds), "dialplan": plan}  # fmt: skip


def test_each_tile_counts_what_it_says() -> None:
    live = [
        {"dialplan": "line", "transfer": "ringing", "transfer_at": NOW - 30, "worker_alive": True},
        {"dialplan": "line", "transfer": "accepting", "transfer_at": NOW - 75, "worker_alive": True},
        {"dialplan": "line", "transfer": "completed", "transfer_at": NOW - 200, "worker_alive": True},  # done: no wait
        {"dialplan": "line", "in_outage": True, "worker_alive": True},
        {"dialplan": "line", "on_hold": True, "worker_alive": True},
        {"dialplan": "line", "worker_alive": False},
    ]
    ended = [_ended("completed", 60), _ended("transferred", 120, ring=25), _ended("abandoned", 6),
             _ended("completed_elsewhere", 4), _ended("failed", 30)]  # fmt: skip
    values = figures(live, ended, refused=3, now=NOW)
    assert values == {
        "calls_now": 6,
        "handled": 3,  # answered and ended: completed, transferred, failed
        "service_level": 0.5,  # of four callers, two answered within 20 s (one after 25 s, one never)
        "abandoned": 1,
        "callers": 4,
        "refused": 3,
        "containment": 0.667,  # of completed, transferred, failed: two without a transfer
        "waiting": 2,
        "longest_wait_s": 75.0,
        "abandonment": 0.25,  # of four callers (a ring completed elsewhere is no caller of ours)
        "handle_s": 44.0,
        "trouble": 3,
    }


def test_no_call_is_a_dash_never_a_zero_and_a_plan_filters() -> None:
    values = figures([], [], refused=0, now=NOW)
    assert values["containment"] is None and values["abandonment"] is None and values["handle_s"] is None
    assert values["longest_wait_s"] is None and values["calls_now"] == 0
    shown = board(
        [{"dialplan": "desk"}, {"dialplan": "line", "worker_alive": True}],
        [_ended("completed", 10, "desk")],
        refused=1,
        capacity=8,
        thresholds=WallboardThresholds(trouble=2).model_dump(),
        now=NOW,
        plan="line",
    )
    by_name = {t["name"]: t for t in shown["tiles"]}
    assert [t["name"] for t in shown["tiles"]] == [t.name for t in TILES]
    assert by_name["calls_now"]["value"] == 1 and by_name["handle_s"]["value"] is None
    assert by_name["trouble"]["threshold"] == 2 and by_name["refused"]["threshold"] is None
    assert by_name["containment"]["red_when"] == "below" and shown["capacity"] == 8


def test_refused_invites_are_counted_per_minute_and_kept_through_a_failed_write() -> None:
    clock = Clock(60 * 1000 + 5)
    pending = PendingWrites("w1", clock)
    pending.refuse()
    pending.refuse()
    clock.now += 60
    pending.refuse()
    batch = pending.take(False)
    assert batch.refused == {1000: 2, 1001: 1} and pending.refused == {}
    pending.refuse()
    pending.restore(batch)  # Redis was away: nothing counted is lost
    assert pending.refused == {1000: 2, 1001: 2}
    clock.now += keys.REFUSED_TTL_S + 120  # a minute older than its key's TTL is given up
    pending.refuse()
    assert list(pending.refused) == [int(clock.now // 60)]


def test_a_transfer_is_waited_for_from_its_first_step() -> None:
    clock = Clock(500.0)
    pending = PendingWrites("w1", clock)
    pending.begin("c1", dialplan="line")
    pending.on_report("c1", ev.TransferStepped(ev.TransferStep.RINGING))
    clock.now = 520.0
    pending.on_report("c1", ev.TransferStepped(ev.TransferStep.BRIEFING))
    assert pending.calls["c1"].state["transfer_at"] == "500.000"
    assert pending.calls["c1"].state["transfer"] == "briefing"


def test_a_plan_threshold_out_of_range_names_its_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    for wallboard, field in (({"containment": 1.5}, "wallboard.containment"), ({"queue": 3}, "wallboard.queue")):
        plan = {"name": "x", "match": ["1"], "dialect": "ga", "wallboard": wallboard}
        path.write_text(json.dumps(plan))
        with pytest.raises(ConfigError) as exc:
            load_dialplan(path)
        assert (exc.value.field, exc.value.source) == (field, str(path))
    path.write_text(json.dumps({"name": "x", "match": ["1"], "dialect": "ga", "wallboard": {"trouble": 2}}))
    assert load_dialplan(path).wallboard.trouble == 2


def test_the_service_level_counts_within_the_plans_seconds_and_reddens_below_its_target() -> None:
    ended = [_ended("completed", 60, ring=5), _ended("completed", 60, ring=12), _ended("abandoned", 6)]
    plan = WallboardThresholds(service_level=0.8, service_level_s=10).model_dump()
    shown = board([], ended, refused=0, capacity=4, thresholds=plan, now=NOW)
    level = {t["name"]: t for t in shown["tiles"]}["service_level"]
    assert level["value"] == 0.333 and level["threshold"] == 0.8 and level["red_when"] == "below"
    assert level["explain"] == "callers of the last hour answered within 10 s"
    handled = {t["name"]: t for t in shown["tiles"]}["handled"]
    assert handled["value"] == 2 and handled["red_when"] == "never" and handled["threshold"] is None
    assert {t["name"]: t for t in shown["tiles"]}["abandonment"]["detail"] == "1 of 3 callers"
    assert WallboardThresholds().service_level_s == 20 and shown["service_level_s"] == 10


def test_report_lines_give_the_figures_the_hashes_give() -> None:
    """A report line says its times in ISO 8601 where a hash keeps Unix seconds: the same calls, the same figures."""
    ended = [_ended("completed", 60, ring=5), _ended("transferred", 100, ring=30), _ended("abandoned", 6)]
    lines = [{**c, **{k: iso(float(c[k])) if c[k] else None for k in ("started_at", "answered_at", "ended_at")}}
             for c in ended]  # fmt: skip
    assert lines[0]["started_at"].endswith("Z")
    assert ended_figures(lines) == ended_figures(ended)
    assert ended_figures(ended)["handled"] == 2 and ended_figures(ended)["service_level"] == 0.333
