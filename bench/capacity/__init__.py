"""``callbridge bench capacity``: the cost of a call, measured now, and the machines for 1,000 to 100,000 calls.

A fresh short measurement, so the plan is never older than the code: ``--calls`` concurrent calls (default 16;
``--quick``: 4 calls for 5 s) through ``serve``'s own pool of workers (``bench calls``' bridge path: the bundled
caller recording played by pjsua2 load callers, the in-process emulator as the model, speaking in real time), the
workers keeping their calls in a private ``redis-server``, and behind the Kamailio front when Kamailio is installed
(``bench calls``' front path). Over the steady-state window (every call up), it reads:

- **CPU** and **PSS** of the workers (``/proc``), per call; and the PSS of the preloaded parent they are forked
  from (once per node);
- **Redis**: commands (``INFO commandstats``) and bytes both ways (``INFO stats``: ``total_net_input_bytes``,
  ``total_net_output_bytes``) at both ends of the window, the bench's own two ``INFO`` requests taken out;
- **network**: the callers' RTP both ways (their stream statistics: payload, plus 40 bytes of RTP, UDP and IPv4
  headers a packet), and the model's sockets both ways (``ss -ti`` at the emulator's port: ``bytes_acked`` and
  ``bytes_received``); SIP is not in a call's steady state;
- **the front**: Kamailio's CPU time over the step per call (its INVITE, ACK and BYE, and the health probes).

Then :mod:`bench.capacity.plan` sizes nodes (``--cores-per-node``, ``--memory-gb-per-node``, at ``--headroom``
target utilisation), fronts, Redis shards (``--redis-cmds-per-shard``) and bandwidth for 1,000, 10,000 and 100,000
concurrent calls, and prints the cost and the table (``--json``: one object).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from bench.capacity.plan import Assumptions, CallCost, format_plan, plan, plan_json
from bridge.devkit.redis_count import INFO_REQUEST, Reading, difference, read_info

if TYPE_CHECKING:
    from bench.calls.report import Step

RTP_HEADERS = 12 + 8 + 20  # RTP, UDP, IPv4: on the wire beside each packet's payload
LOG_NAME = "callbridge-bench-capacity.log"
# What the plan assumes beside the measured cost, each an option (``cores_per_node``: ``--cores-per-node``, of the
# field's type, defaulting to ``Assumptions``' own): what its help says.
ASSUMPTION_OPTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "cores_per_node": "cores of one node",
        "memory_gb_per_node": "memory of one node, GiB",
        "headroom": "target utilisation, 0-1",
        "redis_cmds_per_shard": "commands a second one Redis primary carries, headroom included",
        "front_cores": "cores of one front",
        "mean_call_s": "mean call length in seconds, for set-ups",
    }
)


def _parser() -> argparse.ArgumentParser:
    doc = (__doc__ or "").splitlines()[0]
    parser = argparse.ArgumentParser(prog="callbridge bench capacity", description=doc)
    defaults = Assumptions()
    parser.add_argument("--calls", type=int, default=16, help="concurrent calls measured (default 16)")
    parser.add_argument("--seconds", type=float, default=12.0, help="the measured window (default 12)")
    parser.add_argument("--quick", action="store_true", help="4 calls for 5 s: that it runs, not a plan to trust")
    for name, said in ASSUMPTION_OPTIONS.items():
        default = getattr(defaults, name)
        option = "--" + name.replace("_", "-")
        parser.add_argument(option, type=type(default), default=default, help=f"{said} (default %(default)s)")
    parser.add_argument("--no-front", action="store_true", help="call the workers directly even with Kamailio")
    parser.add_argument("--json", action="store_true", help="the cost, the assumptions and the plan as one object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.seconds = 4, 5.0
    if args.calls < 1 or args.seconds <= 0:
        parser.error("--calls and --seconds must be positive")
    assume = Assumptions(**{name: getattr(args, name) for name in ASSUMPTION_OPTIONS})
    try:
        plan(CallCost(0, 0, 0, 0, 0, 0), assume)  # the assumptions checked before anything runs
    except ValueError as exc:
        parser.error(str(exc))
    front = not args.no_front and _kamailio()
    cost, step = asyncio.run(measure(args.calls, args.seconds, front))
    rows = plan(cost, assume)
    if args.json:
        print(json.dumps(plan_json(cost, assume, rows) | {"measured": step}))
    else:
        print(
            f"callbridge bench capacity: {step['calls']} calls for {step['window_s']:g} s through serve's workers"
            f"{' behind Kamailio' if front else ''}, a private Redis, the emulator as the model; "
            f"{os.cpu_count()} cores here, machine {step['machine_pct']:.0f} % busy, steal {step['steal_pct']:.0f} %"
        )
        if step["errors"]:
            print("  ! " + "\n  ! ".join(step["errors"]))
        print(format_plan(cost, assume, rows))
    sys.stdout.flush()
    return 0


def _kamailio() -> bool:
    from bridge.serve.front import require_kamailio
    from bridge.serve.front_files import FrontError

    try:
        require_kamailio()
    except FrontError:
        return False
    return True


# ------------------------------------------------------------------------------------------------------------
# The measurement


@dataclass
class _Sample:
    at: float
    redis: Reading
    model_up: int  # bytes the workers sent the model
    model_down: int  # bytes the model sent the workers
    parent_pss_kb: int


@dataclass
class _Probe:
    """Read at both ends of the window (``Bench.on_window``): Redis, the model's sockets, the preloaded parent."""

    redis_port: int
    model_port: int
    samples: list[_Sample] = field(default_factory=list)
    info_reply_bytes: list[int] = field(default_factory=list)  # what each of our INFO requests was answered

    def __call__(self, at: float) -> None:
        redis, reply_bytes = read_info("127.0.0.1", self.redis_port)
        self.info_reply_bytes.append(reply_bytes)
        up, down = _model_bytes(self.model_port)
        self.samples.append(_Sample(at, redis, up, down, _parent_pss_kb()))

    def cost(self, step: Step) -> CallCost:
        """One call's cost from the two samples and the step's own figures (CPU, PSS, the callers' RTP)."""
        a, b = self.samples[0], self.samples[-1]
        call_s = step.calls * (b.at - a.at)
        (to_pkt, to_bytes), (from_pkt, from_bytes) = step.rtp_to_callers, step.rtp_from_callers
        rtp = to_bytes + from_bytes + RTP_HEADERS * (to_pkt + from_pkt)  # over the callers' window
        moved = difference(a.redis, b.redis, skip=frozenset())
        redis_cmds = sum(moved.calls.values()) - 1  # the first INFO is counted by the second
        # the second INFO's request is input before its own figures; the first one's reply is output after its own
        redis_in = moved.net_input_bytes - len(INFO_REQUEST)
        redis_bytes = redis_in + (moved.net_output_bytes - self.info_reply_bytes[0])
        return CallCost(
            cpu_pct=step.cpu_per_call_pct,
            pss_mb=step.pss_mb_per_call or 0.0,
            redis_cmds_per_s=round(redis_cmds / call_s, 2),
            redis_bytes_per_s=round(redis_bytes / call_s, 1),
            rtp_bytes_per_s=round(rtp / (step.calls * step.window_s), 1) if step.window_s else 0.0,
            model_bytes_per_s=round(((b.model_up - a.model_up) + (b.model_down - a.model_down)) / call_s, 1),
            front_cpu_ms_per_setup=step.front_cpu_ms_per_call,
            parent_pss_mb=round(b.parent_pss_kb / 1024, 1),
        )


def _model_bytes(port: int) -> tuple[int, int]:
    """Bytes the model's established connections (its side: local port ``port``) received and had acknowledged:
    (up from the workers, down to them), from the kernel's TCP info (``ss -ti``)."""
    done = subprocess.run(
        ["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    up = sum(int(n) for n in re.findall(r"bytes_received:(\d+)", done.stdout))
    down = sum(int(n) for n in re.findall(r"bytes_acked:(\d+)", done.stdout))
    return up, down


def _parent_pss_kb() -> int:
    """The preloaded parent's PSS (``bridge.serve.zygote``, this process's child): its pages shared by a node's
    workers, once per node."""
    from bench.calls.machine import process_tree, pss_kb_by_pid

    parents = []
    for pid in process_tree(os.getpid()):
        try:
            if b"bridge.serve.zygote" in Path(f"/proc/{pid}/cmdline").read_bytes():
                parents.append(pid)
        except OSError:
            continue
    return sum(pss_kb_by_pid(parents).values())


async def measure(calls: int, seconds: float, front: bool) -> tuple[CallCost, dict[str, Any]]:
    """Run ``calls`` calls through the workers (behind the front if ``front``) with a private Redis; the cost of
    one call, and the step's figures."""
    from bench.calls.ladder import emulator_options
    from bench.calls.paths import Bench
    from bridge.devkit.ports import listen_port
    from bridge.devkit.redis_server import EmbeddedRedis
    from bridge.emulator import EmulatorServer

    with tempfile.TemporaryDirectory(prefix="callbridge-bench-capacity-") as tmp, EmbeddedRedis() as redis:
        log_path = Path(tempfile.gettempdir()) / LOG_NAME
        log_path.write_text("")
        bench = Bench(seconds, Path(tmp), log_path, spread=front)
        bench.redis_url = redis.url
        async with EmulatorServer("127.0.0.1", listen_port(), **emulator_options(seconds, speed=1.0)) as emulator:
            port = int(emulator.base_url.rsplit(":", 1)[1].split("/", 1)[0])
            probe = _Probe(redis.port, port)
            bench.on_window = probe
            step = await bench.bridge_step(calls, emulator, "front" if front else "bridge")
    if len(probe.samples) < 2:
        raise RuntimeError(f"the window was not measured: {step.errors}")
    cost = probe.cost(step)
    figures: dict[str, Any] = {
        "calls": calls,
        "answered": step.answered,
        "window_s": step.window_s,
        "machine_pct": step.cpu_machine_pct,
        "steal_pct": step.cpu_steal_pct,
        "errors": step.errors + ([] if step.answered == calls else [f"{step.answered} of {calls} calls up"]),
    }
    return cost, figures
