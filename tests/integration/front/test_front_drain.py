"""Drain: `callbridge drain WORKER` stops new calls to that worker while its live call goes on and ends normally;
`--undo` takes it back; SIGUSR1 / SIGUSR2 to `serve` drain and resume the whole node (every worker drained: the
front answers 503 with Retry-After)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from _front import (
    CALLER,
    NODE_A,
    ROOT,
    Node,
    front_node,
    heavy,
    invite,
    long_test,
    requirements,
    sipp,
    sipp_dir,
    wait_for,
)

pytestmark = [*requirements, heavy]


def drain(node: Node, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "drain", *args, "--front-dir", str(node.front_dir), "--json"],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))


@long_test
async def test_a_drained_worker_takes_no_new_call_and_its_live_call_ends_normally(tmp_path: Path) -> None:
    work = sipp_dir(tmp_path)
    async with front_node(tmp_path) as (node, port, health):
        workers = node.worker_addresses(health)
        # one long call (the stock uac_pcap: about 9 s); find the worker that holds it
        long_call = asyncio.create_task(sipp(work, f"{NODE_A}:{port}", calls=1))

        async def busy_worker() -> str | None:
            loaded = [a for a, d in node.states().items() if d.load == 1]
            return loaded[0] if loaded else None

        busy = await wait_for(busy_worker, "the long call placed", 15)
        (idle,) = [w for w in workers if w != busy]

        after = drain(node, busy)
        assert [(d["address"], d["state"], d["load"]) for d in after] == [(busy, "D", 1)]
        assert node.states()[idle].state == "A"

        async def exported_as_drained() -> bool:  # /metrics shows what the front sees
            drained = await node.metric("callbridge_front_worker_state", worker=busy, state="drained")
            active = await node.metric("callbridge_front_worker_state", worker=idle, state="active")
            calls = await node.metric("callbridge_front_worker_calls", worker=busy)
            return (drained, active, calls) == (1.0, 1.0, 1.0)

        await wait_for(exported_as_drained, "the drained worker in /metrics", 10)

        # new calls while the long one goes on: all of them to the other worker
        short = await sipp(work, f"{NODE_A}:{port}", calls=3, scenario="uac_short.xml")
        assert (short.successful, short.failed) == (3, 0), short.output[-3000:]
        assert not long_call.done()  # the drained worker's call is still up

        first = await long_call
        assert (first.successful, first.failed) == (1, 0), first.output[-3000:]

        async def four_reports() -> list[dict[str, Any]] | None:
            calls = node.calls()
            return calls if len(calls) >= 4 else None

        by_id = {r["sip_call_id"]: r for r in await wait_for(four_reports, "every call reported", 15)}
        index = {w: i for i, w in enumerate(workers)}
        assert {by_id[c]["worker"] for c in short.call_ids} == {index[idle]}
        (held,) = first.call_ids
        assert by_id[held]["worker"] == index[busy]
        assert by_id[held]["end_reason"].startswith("caller hung up")  # it finished normally, on the caller's BYE

        # --undo: it takes calls again
        after = drain(node, busy, "--undo")
        assert [(d["address"], d["state"]) for d in after] == [(busy, "A")]

        # the whole node by signal: nothing can take a call, so the front says so itself
        node.signal(signal.SIGUSR1)

        async def all_drained() -> bool:
            return all(d.state == "D" for d in node.states().values())

        await wait_for(all_drained, "every worker drained after SIGUSR1", 10)
        refused = await invite(NODE_A, port, local_host=CALLER)
        assert (refused.status, refused.headers.get("retry-after")) == (503, None)
        node.signal(signal.SIGUSR2)

        async def all_active() -> bool:
            return all(d.state == "A" for d in node.states().values())

        await wait_for(all_active, "every worker active after SIGUSR2", 10)
        assert (await invite(NODE_A, port, local_host=CALLER)).status == 200
