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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CALLS_PER_CALLER = 4  # one pjsua2 process holds 4 calls


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def caller_main(uri: str, calls: int, until: float, call_s: float, play: str) -> dict[str, Any]:
    """One load-caller process: ``calls`` concurrent call loops until the wall clock reaches ``until``."""
    from bridge.sip.phone import Softphone

    results: list[dict[str, Any]] = []

    async def loop() -> None:
        while time.time() + call_s < until:
            summary = await phone.call(uri, play=play, loop_play=True, hangup_after=call_s)
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

    async with Softphone() as phone:
        await asyncio.gather(*(loop() for _ in range(calls)))
    return {"calls": results}


async def run_soak(calls: int, minutes: float, call_s: float, drop_after_s: float, as_json: bool) -> int:
    from bridge.devkit.stack import local_stack

    workers = max(1, math.ceil(calls / CALLS_PER_CALLER))
    play = str(ROOT / "bridge" / "assets" / "caller_hours.wav")
    samples: list[dict[int, int]] = []
    async with local_stack(
        workers=workers, realtime_query=f"drop_after_s={drop_after_s}", emulator_settings={"speed": 2}
    ) as stack:
        pool = stack.pool

        def rss_now() -> dict[int, int]:
            return {s.index: rss_kib(s.proc.pid) for s in pool.slots if s.proc}

        async def sample_rss() -> None:
            while True:
                samples.append(rss_now())
                await asyncio.sleep(30)

        await asyncio.sleep(2)  # let the workers settle before the first RSS reading
        rss_start = rss_now()
        until = time.time() + minutes * 60
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.soak",
                "_caller",
                f"sip:1000@127.0.0.1:{port}",
                str(min(CALLS_PER_CALLER, calls - first)),
                str(until),
                str(call_s),
                play,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            for first, port in zip(range(0, calls, CALLS_PER_CALLER), stack.sip_ports, strict=False)
        ]
        sampler = asyncio.create_task(sample_rss())
        outs = [await p.communicate() for p in procs]
        sampler.cancel()
        await asyncio.sleep(2)
        rss_end = rss_now()
        restarts = sum(s.restarts for s in pool.slots)
        lines = [json.loads(x) for x in stack.reports.read_text().splitlines()] if stack.reports.exists() else []
    phone_calls = [c for out, _ in outs if out.strip() for c in json.loads(out.decode())["calls"]]
    for c in phone_calls:
        if not (c["answered"] and c["hangup_by"] == "local"):
            print(f"  dropped: {c}", file=sys.stderr)
    completed = [c for c in phone_calls if c["answered"] and c["hangup_by"] == "local"]
    dropped = [c for c in phone_calls if not (c["answered"] and c["hangup_by"] == "local")]
    gaps = [g for r in lines for g in r.get("latency_ms", {}).get("recovery_gap", [])]
    result = {
        "calls_concurrent": calls,
        "minutes": minutes,
        "workers": workers,
        "calls_completed": len(completed),
        "calls_dropped": len(dropped),
        "bridge_reports": len(lines),
        "reconnects": sum(r.get("reconnects", 0) for r in lines),
        "largest_gap_ms": max(gaps) if gaps else None,
        "worker_restarts": restarts,
        "rss_kib_start": rss_start,
        "rss_kib_end": rss_end,
        "rss_growth_pct": {
            k: round(100.0 * (rss_end.get(k, 0) - v) / v, 1) for k, v in rss_start.items() if v and k in rss_end
        },
        # after the first minute (pools and caches warmed up): a leak keeps growing, warm-up does not
        "rss_growth_after_1min_pct": {
            k: round(100.0 * (rss_end.get(k, 0) - v) / v, 1)
            for k, v in (samples[2] if len(samples) > 2 else rss_start).items()
            if v and k in rss_end
        },
        "rss_kib_every_30s": samples,
    }
    rss_ok = all(g < 5.0 for g in result["rss_growth_pct"].values())
    ok = result["calls_dropped"] == 0 and (not gaps or max(gaps) <= 1000) and rss_ok
    if as_json:
        print(json.dumps(result))
    else:
        print(f"soak: {calls} concurrent calls for {minutes} min on {workers} worker(s), socket drop every "
              f"{drop_after_s} s of session")  # fmt: skip
        print(f"  calls completed {result['calls_completed']}, dropped {result['calls_dropped']}, "
              f"reconnects {result['reconnects']}, largest gap {result['largest_gap_ms']} ms, "
              f"worker restarts {restarts}")  # fmt: skip
        for k in sorted(rss_start):
            curve = " ".join(f"{x.get(k, 0) / 1024:.1f}" for x in samples)
            print(f"  worker {k}: RSS {rss_start[k] / 1024:.1f} -> {rss_end.get(k, 0) / 1024:.1f} MiB "
                  f"({result['rss_growth_pct'].get(k)} %; {result['rss_growth_after_1min_pct'].get(k)} % after "
                  f"the first minute); every 30 s: {curve}")  # fmt: skip
        print("  goals: 0 dropped, largest gap <= 1000 ms, RSS growth < 5 % over 10 min:", "met" if ok else "NOT met")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in and args_in[0] == "_caller":  # internal: one load-caller process
        uri, n, until, call_s, play = args_in[1:6]
        print(json.dumps(asyncio.run(caller_main(uri, int(n), float(until), float(call_s), play))), flush=True)
        return 0
    parser = argparse.ArgumentParser(prog="callbridge bench soak", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=8, help="concurrent calls (4 per worker)")
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--call-s", type=float, default=30.0, help="length of each call before it redials")
    parser.add_argument("--drop-after", type=float, default=12.0, help="abort each Realtime socket after S s")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(args_in)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    return asyncio.run(run_soak(args.calls, args.minutes, args.call_s, args.drop_after, args.json))


if __name__ == "__main__":
    raise SystemExit(main())
