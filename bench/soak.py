"""``callbridge bench soak``: N concurrent real SIP calls for M minutes, with the Realtime socket dropped under them.

It starts Redis, the emulator (every Realtime connection aborted after ``--drop-after`` seconds: a socket drop
mid-call, mid-response or not) and ``callbridge serve`` with enough workers for N calls (4 per worker), then keeps N
pjsua2 softphone calls up (each plays recorded speech in a loop, hangs up after ``--call-s`` and dials again) until
M minutes have passed. It reports calls completed and dropped (a call that did not end by the caller's own hang-up),
reconnects, the largest gap without a Realtime session (``recovery_gap``), and each worker's RSS at the start and the
end. The goals: 0 dropped calls, RSS growth < 5 % over 10 minutes, largest gap <= 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.calls.callers import CALLS_PER_PROCESS
from bridge.store.reportfile import read_reports

if TYPE_CHECKING:
    from bridge.sip.sipconfig import SipConfig

ROOT = Path(__file__).resolve().parent.parent
PLAY = str(ROOT / "bridge" / "assets" / "caller_hours.wav")  # recorded speech, played in a loop by every call


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def caller_main(uri: str, calls: int, until: float, call_s: float, play: str) -> dict[str, Any]:
    """One load-caller process: ``calls`` concurrent call loops until the wall clock reaches ``until``."""
    from bridge.sip.phone import CallPlan, Softphone

    results: list[dict[str, Any]] = []

    async def loop() -> None:
        while time.time() + call_s < until:
            summary = await phone.call(uri, CallPlan(play=play, loop_play=True, hangup_after=call_s))
            results.append(
                {
                    "answered": summary["answered"],
                    "sip_status": summary["sip_status"],
                    "reason": summary["reason"],
                    "hangup_by": summary["hangup_by"],
                    "duration_s": summary["duration_s"],
                }
            )
            await asyncio.sleep(0.5 if summary["answered"] else 2.0)  # a refused call is retried, not hammered

    async with Softphone(_phone_config()) as phone:
        await asyncio.gather(*(loop() for _ in range(calls)))
    return {"calls": results}


def _phone_config() -> SipConfig | None:
    """A load caller's endpoint with its SIP port and RTP ports in ``CALLBRIDGE_PORT_RANGE`` when that is set; None
    without it (the softphone's own defaults: any ports)."""
    from bridge.devkit.ports import RTP_PORTS_PER_WORKER, free_port_block, port_range, rtp_block
    from bridge.sip.sipconfig import SipConfig
    from bridge.sip.sipmsg import Transport

    if port_range() is None:
        return None
    return SipConfig(
        port=free_port_block(1),
        transports=(Transport.UDP,),
        user="softphone",
        user_agent="callbridge-softphone",
        pjsua_log_level=0,
        rtp_port=rtp_block(RTP_PORTS_PER_WORKER),  # RTP and RTCP of its 4 calls, twice over
        rtp_port_range=RTP_PORTS_PER_WORKER,
    )


@dataclass
class SoakRun:
    """What a soak run saw: every phone call's summary, the workers' call reports, their RSS and restarts."""

    phone_calls: list[dict[str, Any]]
    reports: list[dict[str, Any]]
    rss_start: dict[int, int]
    rss_end: dict[int, int]
    samples: list[dict[int, int]]  # RSS every 30 s
    restarts: int


async def run_soak(calls: int, minutes: float, call_s: float, drop_after_s: float, as_json: bool) -> int:
    from bridge.devkit.stack import local_stack

    workers = max(1, math.ceil(calls / CALLS_PER_PROCESS))
    async with local_stack(
        workers=workers, realtime_query=f"drop_after_s={drop_after_s}", emulator_settings={"speed": 2}
    ) as stack:
        run = await _soak(stack, calls, minutes, call_s)
    for c in run.phone_calls:
        if not _completed(c):
            print(f"  dropped: {c}", file=sys.stderr)
    result = _result(run, calls, minutes, workers)
    rss_ok = all(g < 5.0 for g in result["rss_growth_pct"].values())
    gap = result["largest_gap_ms"]
    ok = result["calls_dropped"] == 0 and (gap is None or gap <= 1000) and rss_ok
    if as_json:
        print(json.dumps(result))
    else:
        _print_result(result, drop_after_s, ok)
    return 0 if ok else 1


async def _soak(stack: Any, calls: int, minutes: float, call_s: float) -> SoakRun:
    """Keep ``calls`` phone calls going for ``minutes`` against ``stack``, sampling the workers' RSS."""
    pool = stack.pool
    samples: list[dict[int, int]] = []

    def rss_now() -> dict[int, int]:
        return {s.index: rss_kib(s.proc.pid) for s in pool.slots if s.proc}

    async def sample_rss() -> None:
        while True:
            samples.append(rss_now())
            await asyncio.sleep(30)

    await asyncio.sleep(2)  # let the workers settle before the first RSS reading
    rss_start = rss_now()
    procs = await _spawn_callers(stack.sip_ports, calls, time.time() + minutes * 60, call_s)
    sampler = asyncio.create_task(sample_rss())
    outs = [await p.communicate() for p in procs]
    sampler.cancel()
    await asyncio.sleep(2)
    rss_end = rss_now()
    restarts = sum(s.restarts for s in pool.slots)
    lines = read_reports(stack.reports)
    phone_calls = [c for out, _ in outs if out.strip() for c in json.loads(out.decode())["calls"]]
    return SoakRun(phone_calls, lines, rss_start, rss_end, samples, restarts)


async def _spawn_callers(ports: list[int], calls: int, until: float, call_s: float) -> list[asyncio.subprocess.Process]:
    """A load-caller process per worker, each keeping up to 4 calls going until ``until`` (wall clock)."""
    return [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.soak",
            "_caller",
            f"sip:1000@127.0.0.1:{port}",
            str(min(CALLS_PER_PROCESS, calls - first)),
            str(until),
            str(call_s),
            PLAY,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for first, port in zip(range(0, calls, CALLS_PER_PROCESS), ports, strict=False)
    ]


def _completed(call: dict[str, Any]) -> bool:
    """Answered and ended by the caller's own hang-up; anything else is a dropped call."""
    return bool(call["answered"] and call["hangup_by"] == "local")


def _growth_pct(before: dict[int, int], after: dict[int, int]) -> dict[int, float]:
    return {k: round(100.0 * (after.get(k, 0) - v) / v, 1) for k, v in before.items() if v and k in after}


def _result(run: SoakRun, calls: int, minutes: float, workers: int) -> dict[str, Any]:
    completed = [c for c in run.phone_calls if _completed(c)]
    gaps = [g for r in run.reports for g in r.get("latency_ms", {}).get("recovery_gap", [])]
    warm = run.samples[2] if len(run.samples) > 2 else run.rss_start
    return {
        "calls_concurrent": calls,
        "minutes": minutes,
        "workers": workers,
        "calls_completed": len(completed),
        "calls_dropped": len(run.phone_calls) - len(completed),
        "bridge_reports": len(run.reports),
        "reconnects": sum(r.get("reconnects", 0) for r in run.reports),
        "largest_gap_ms": max(gaps) if gaps else None,
        "worker_restarts": run.restarts,
        "rss_kib_start": run.rss_start,
        "rss_kib_end": run.rss_end,
        "rss_growth_pct": _growth_pct(run.rss_start, run.rss_end),
        # after the first minute (pools and caches warmed up): a leak keeps growing, warm-up does not
        "rss_growth_after_1min_pct": _growth_pct(warm, run.rss_end),
        "rss_kib_every_30s": run.samples,
    }


def _print_result(result: dict[str, Any], drop_after_s: float, ok: bool) -> None:
    rss_start, rss_end, samples = result["rss_kib_start"], result["rss_kib_end"], result["rss_kib_every_30s"]
    print(f"soak: {result['calls_concurrent']} concurrent calls for {result['minutes']} min on {result['workers']} "
          f"worker(s), socket drop every {drop_after_s} s of session")  # fmt: skip
    print(f"  calls completed {result['calls_completed']}, dropped {result['calls_dropped']}, "
          f"reconnects {result['reconnects']}, largest gap {result['largest_gap_ms']} ms, "
          f"worker restarts {result['worker_restarts']}")  # fmt: skip
    for k in sorted(rss_start):
        curve = " ".join(f"{x.get(k, 0) / 1024:.1f}" for x in samples)
        print(f"  worker {k}: RSS {rss_start[k] / 1024:.1f} -> {rss_end.get(k, 0) / 1024:.1f} MiB "
              f"({result['rss_growth_pct'].get(k)} %; {result['rss_growth_after_1min_pct'].get(k)} % after "
              f"the first minute); every 30 s: {curve}")  # fmt: skip
    print("  goals: 0 dropped, largest gap <= 1000 ms, RSS growth < 5 % over 10 min:", "met" if ok else "NOT met")


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in and args_in[0] == "_caller":  # internal: one load-caller process
        uri, n, until, call_s, play = args_in[1:6]
        print(json.dumps(asyncio.run(caller_main(uri, int(n), float(until), float(call_s), play))), flush=True)
        return 0
    parser = argparse.ArgumentParser(prog="callbridge bench soak", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=8, help="concurrent calls (4 per worker)")
    parser.add_argument("--minutes", type=float, default=2.0, help="how long to run (default 2)")
    parser.add_argument("--call-s", type=float, default=30.0, help="length of each call before it redials")
    parser.add_argument("--drop-after", type=float, default=12.0, help="abort each Realtime socket after S s")
    parser.add_argument("--json", action="store_true", help="the result as one JSON object")
    args = parser.parse_args(args_in)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    return asyncio.run(run_soak(args.calls, args.minutes, args.call_s, args.drop_after, args.json))


if __name__ == "__main__":
    raise SystemExit(main())
