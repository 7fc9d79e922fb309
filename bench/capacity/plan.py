"""The capacity plan's arithmetic: a measured cost of one call -> the machines for N concurrent calls. Pure.

::

    cost = CallCost(cpu_pct=0.6, pss_mb=10.7, redis_cmds_per_s=18.0, redis_bytes_per_s=2400.0,
                    rtp_bytes_per_s=16000.0, model_bytes_per_s=130000.0, front_cpu_ms_per_setup=1.2)
    rows = plan(cost, Assumptions())            # one PlanRow per size, for 1,000 / 10,000 / 100,000 calls
    print(format_plan(cost, Assumptions(), rows))

Every figure is per call in its steady state, so the plan scales linearly; each kind of machine is sized for the
target utilisation (``headroom``), and rounded up to whole machines.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

SIZES = (1_000, 10_000, 100_000)


@dataclass(frozen=True)
class CallCost:
    """What one call costs in its steady state, measured (``bench capacity``)."""

    cpu_pct: float  # of one core: the workers' user + system time
    pss_mb: float  # the workers' proportional set size, per call
    redis_cmds_per_s: float  # commands a second (INFO commandstats)
    redis_bytes_per_s: float  # bytes a second into and out of Redis (INFO stats: total_net_*_bytes)
    rtp_bytes_per_s: float  # the caller's media both ways, on the wire (RTP + UDP + IPv4 headers)
    model_bytes_per_s: float  # the model's socket both ways (TCP payload)
    front_cpu_ms_per_setup: float | None = None  # the front's CPU per call, set-up to hang-up; None: not measured
    parent_pss_mb: float = 0.0  # the preloaded parent the workers fork from: once per node


@dataclass(frozen=True)
class Assumptions:
    """What the plan assumes beside the measured cost (each a ``bench capacity`` option)."""

    cores_per_node: int = 16
    headroom: float = 0.6  # target utilisation of a node's cores, a front's cores
    memory_gb_per_node: float = 64.0
    redis_cmds_per_shard: float = 50_000.0  # what one Redis primary is planned to carry, headroom included
    front_cores: int = 4
    mean_call_s: float = 180.0  # calls set up a second = concurrent calls / mean call length


@dataclass(frozen=True)
class PlanRow:
    calls: int
    nodes: int
    bound_by: str  # "cpu" | "memory": what sets the node count
    cores: float  # cores the calls keep busy
    memory_gb: float
    setups_per_s: float
    fronts: int | None  # None: the front's cost was not measured
    redis_cmds_per_s: float
    redis_shards: int
    redis_mbit_s: float
    media_mbit_s: float  # RTP both ways, all nodes
    model_mbit_s: float  # the model's sockets both ways, all nodes
    node_mbit_s: float  # one node's share of both


def plan(cost: CallCost, assume: Assumptions, sizes: tuple[int, ...] = SIZES) -> list[PlanRow]:
    """The machines for each number of concurrent calls in ``sizes``."""
    if not 0 < assume.headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], not {assume.headroom}")
    if assume.cores_per_node < 1 or assume.front_cores < 1 or assume.mean_call_s <= 0:
        raise ValueError("cores per node, front cores and the mean call length must be positive")
    if assume.memory_gb_per_node <= 0 or assume.redis_cmds_per_shard <= 0:
        raise ValueError("memory per node and commands per shard must be positive")
    rows = []
    for calls in sizes:
        cores = calls * cost.cpu_pct / 100
        calls_gb = calls * cost.pss_mb / 1024
        room_gb = assume.memory_gb_per_node * assume.headroom - cost.parent_pss_mb / 1024  # a node's, for calls
        if room_gb <= 0:
            raise ValueError(f"{assume.memory_gb_per_node:g} GiB per node do not hold the preloaded parent")
        by_cpu = math.ceil(cores / (assume.cores_per_node * assume.headroom))
        by_memory = math.ceil(calls_gb / room_gb)
        nodes = max(1, by_cpu, by_memory)
        memory_gb = calls_gb + nodes * cost.parent_pss_mb / 1024
        setups = calls / assume.mean_call_s
        fronts = None
        if cost.front_cpu_ms_per_setup is not None:
            front_cores = setups * cost.front_cpu_ms_per_setup / 1000
            fronts = max(1, math.ceil(front_cores / (assume.front_cores * assume.headroom)))
        redis = calls * cost.redis_cmds_per_s
        media = calls * cost.rtp_bytes_per_s * 8 / 1e6
        model = calls * cost.model_bytes_per_s * 8 / 1e6
        rows.append(
            PlanRow(
                calls=calls,
                nodes=nodes,
                bound_by="memory" if by_memory > by_cpu else "cpu",
                cores=round(cores, 1),
                memory_gb=round(memory_gb, 1),
                setups_per_s=round(setups, 1),
                fronts=fronts,
                redis_cmds_per_s=round(redis),
                redis_shards=max(1, math.ceil(redis / assume.redis_cmds_per_shard)),
                redis_mbit_s=round(calls * cost.redis_bytes_per_s * 8 / 1e6, 1),
                media_mbit_s=round(media, 1),
                model_mbit_s=round(model, 1),
                node_mbit_s=round((media + model) / nodes, 1),
            )
        )
    return rows


def plan_json(cost: CallCost, assume: Assumptions, rows: list[PlanRow]) -> dict[str, Any]:
    return {"cost": asdict(cost), "assumptions": asdict(assume), "plan": [asdict(r) for r in rows]}


def format_plan(cost: CallCost, assume: Assumptions, rows: list[PlanRow]) -> str:
    """The cost of a call and the plan, as the text ``bench capacity`` prints (a Markdown table)."""
    front = "not measured" if cost.front_cpu_ms_per_setup is None else f"{cost.front_cpu_ms_per_setup:.2f} ms"
    lines = [
        "cost of a call (steady state): "
        f"CPU {cost.cpu_pct:.2f} % of a core, PSS {cost.pss_mb:.1f} MB (and {cost.parent_pss_mb:.0f} MB per node "
        "for the preloaded parent), "
        f"Redis {cost.redis_cmds_per_s:.1f} commands/s and {cost.redis_bytes_per_s / 1000:.2f} kB/s, "
        f"media {cost.rtp_bytes_per_s * 8 / 1000:.1f} kbit/s both ways, "
        f"model socket {cost.model_bytes_per_s * 8 / 1000:.1f} kbit/s both ways, front CPU per call {front}",
        f"assumed: {assume.cores_per_node} cores and {assume.memory_gb_per_node:g} GiB per node, "
        f"{100 * assume.headroom:g} % target utilisation, {assume.redis_cmds_per_shard:,.0f} commands/s per Redis "
        f"shard, {assume.front_cores} cores per front, calls of {assume.mean_call_s:g} s on average",
        "",
        "| calls | nodes (bound by) | cores busy | memory | set-ups/s | fronts | Redis commands/s | Redis shards "
        "| Redis traffic | media | model | per node |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.calls:,} | {r.nodes} ({r.bound_by}) | {r.cores:g} | {r.memory_gb:g} GiB | {r.setups_per_s:g} | "
            f"{'-' if r.fronts is None else r.fronts} | {r.redis_cmds_per_s:,} | {r.redis_shards} | "
            f"{r.redis_mbit_s:g} Mbit/s | {r.media_mbit_s:g} Mbit/s | {r.model_mbit_s:g} Mbit/s | "
            f"{r.node_mbit_s:g} Mbit/s |"
        )
    return "\n".join(lines)
