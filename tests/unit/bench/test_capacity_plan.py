"""The capacity plan's arithmetic (bench/capacity/plan.py): a call's cost -> machines, checked by hand."""

from __future__ import annotations

import pytest

from bench.capacity.plan import Assumptions, CallCost, format_plan, plan, plan_json

COST = CallCost(
    cpu_pct=0.6,
    pss_mb=10.0,
    redis_cmds_per_s=18.0,
    redis_bytes_per_s=2_000.0,
    rtp_bytes_per_s=20_000.0,  # 160 kbit/s both ways
    model_bytes_per_s=130_000.0,  # 1.04 Mbit/s both ways
    front_cpu_ms_per_setup=2.0,
    parent_pss_mb=40.0,
)


def test_nodes_fronts_shards_and_bandwidth_for_each_size() -> None:
    rows = {r.calls: r for r in plan(COST, Assumptions())}
    assert set(rows) == {1_000, 10_000, 100_000}
    r = rows[10_000]
    # 10,000 calls x 0.6 % = 60 cores; 16 cores at 60 % = 9.6 cores a node -> 7 nodes (6.25 rounded up)
    assert (r.cores, r.nodes, r.bound_by) == (60.0, 7, "cpu")
    # memory: 10,000 x 10 MiB = 97.7 GiB of calls, plus 40 MB of preloaded parent on each of the 7 nodes
    assert r.memory_gb == pytest.approx(10_000 * 10 / 1024 + 7 * 40 / 1024, abs=0.05)
    # 10,000 calls of 180 s: 55.6 set-ups a second x 2 ms = 0.11 cores -> one front (4 cores at 60 %)
    assert (r.setups_per_s, r.fronts) == (55.6, 1)
    # 180,000 commands/s at 50,000 a shard -> 4 shards
    assert (r.redis_cmds_per_s, r.redis_shards) == (180_000, 4)
    assert (r.redis_mbit_s, r.media_mbit_s, r.model_mbit_s) == (160.0, 1600.0, 10400.0)
    assert r.node_mbit_s == round(12_000 / 7, 1)
    big = rows[100_000]
    # 600 cores / 9.6 = 62.5 nodes; 1.8 M commands / 50 k; 555.6 set-ups/s x 2 ms = 1.1 cores: one front
    assert (big.nodes, big.redis_shards, big.fronts) == (63, 36, 1)
    assert rows[1_000].nodes == 1 and rows[1_000].redis_shards == 1


def test_memory_sets_the_node_count_when_it_runs_out_first_and_the_options_move_the_plan() -> None:
    small = Assumptions(memory_gb_per_node=8.0)  # 4.8 GiB usable, less the 40 MiB parent: about 487 calls a node
    r = plan(COST, small, (10_000,))[0]
    assert (r.nodes, r.bound_by) == (21, "memory")
    wide = plan(COST, Assumptions(cores_per_node=64, headroom=0.8), (10_000,))[0]
    assert wide.nodes == 2  # 60 cores / (64 x 0.8)
    assert plan(COST, Assumptions(redis_cmds_per_shard=200_000), (10_000,))[0].redis_shards == 1


def test_an_unmeasured_front_is_not_planned_and_bad_assumptions_are_refused() -> None:
    rows = plan(CallCost(0.5, 10.0, 5.0, 1000.0, 20_000.0, 100_000.0), Assumptions())
    assert all(r.fronts is None for r in rows)
    assert "| 1,000 | 1 (cpu) |" in format_plan(COST, Assumptions(), plan(COST, Assumptions()))
    for bad in (Assumptions(headroom=0), Assumptions(headroom=1.5), Assumptions(cores_per_node=0)):
        with pytest.raises(ValueError):
            plan(COST, bad)
    with pytest.raises(ValueError, match="preloaded parent"):
        plan(CallCost(0.5, 10.0, 5.0, 1.0, 1.0, 1.0, None, parent_pss_mb=4096.0), Assumptions(memory_gb_per_node=4))
    assert plan_json(COST, Assumptions(), plan(COST, Assumptions()))["plan"][0]["calls"] == 1_000


def test_each_assumption_is_an_option_of_its_type_defaulting_to_the_plans_own() -> None:
    from dataclasses import asdict, fields

    from bench.capacity import _parser

    defaults = _parser().parse_args([])
    assert {f.name: getattr(defaults, f.name) for f in fields(Assumptions)} == asdict(Assumptions())
    args = _parser().parse_args(["--cores-per-node", "64", "--memory-gb-per-node", "8.5", "--mean-call-s", "90"])
    assert (args.cores_per_node, args.memory_gb_per_node, args.mean_call_s) == (64, 8.5, 90.0)
    assert isinstance(args.cores_per_node, int) and isinstance(args.mean_call_s, float)
