"""One address for two nodes: Kamailio (started by node A's `serve --front kamailio`) spreads 16 concurrent SIPp
calls 4 per worker over node A's and node B's workers, SIPp's route-less BYE reaches the worker that holds each call,
and a 17th caller gets 503 from the front (no Retry-After: front_retry_after_s is 0)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _front import (
    CALLER,
    NODE_A,
    front_node,
    heavy,
    invite,
    long_test,
    requirements,
    sipp,
    sipp_dir,
    two_nodes,
    wait_for,
)

from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.emulator import EmulatorServer

pytestmark = [*requirements, heavy, pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary")]


@long_test
async def test_sixteen_calls_spread_four_per_worker_over_two_nodes_and_the_17th_gets_503(tmp_path: Path) -> None:
    work = sipp_dir(tmp_path)
    with EmbeddedRedis() as redis:
        async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
            node_a, node_b, a_port = two_nodes(tmp_path, emulator.base_url, redis.url)
            try:
                workers_b = node_b.worker_addresses(await node_b.up())
                workers_a = node_a.worker_addresses(await node_a.up())
                everyone = workers_a + workers_b
                assert workers_a == [f"{NODE_A}:{a_port + 1}", f"{NODE_A}:{a_port + 2}"]  # the front took a_port
                states = node_a.states()
                assert sorted(states) == sorted(everyone)
                assert {d.max_calls for d in states.values()} == {4}  # the cap each worker reported at start

                # 16 calls at once through the one address
                run = asyncio.create_task(sipp(work, f"{NODE_A}:{a_port}", calls=16, rate=16))

                seen: list[dict[str, int]] = []

                async def all_loaded() -> dict[str, int] | None:
                    seen.append({a: d.load for a, d in node_a.states().items()})
                    return seen[-1] if sum(seen[-1].values()) == 16 or run.done() else None

                loads = await wait_for(all_loaded, "16 calls placed", 30)
                assert not run.done(), ((await run).output[-3000:], seen[-5:])
                assert loads == dict.fromkeys(everyone, 4)

                # the 17th: every worker is full, the front answers for them
                seventeenth = await invite(NODE_A, a_port, local_host=CALLER)
                assert seventeenth.status == 503
                assert "retry-after" not in seventeenth.headers  # an SBC would take the node out of route
                assert "server" not in seventeenth.headers  # by default nothing names the product

                result = await run
                assert (result.successful, result.failed) == (16, 0), result.output[-3000:]

                # each worker held 4 of them, and each call's BYE (sent without a Route header) ended it at its worker
                async def sixteen_reports() -> list[tuple[str, dict[str, Any]]] | None:
                    found = [("a", r) for r in node_a.calls()] + [("b", r) for r in node_b.calls()]
                    return found if len(found) >= 16 else None

                reports = await wait_for(sixteen_reports, "every call reported by its worker", 15)
                assert Counter((node, r["worker"]) for node, r in reports) == {
                    ("a", 0): 4, ("a", 1): 4, ("b", 0): 4, ("b", 1): 4,
                }  # fmt: skip
                assert all(r["end_reason"].startswith("caller hung up") for _, r in reports), reports
                assert sorted(r["sip_call_id"] for _, r in reports) == result.call_ids  # the 17th reached no worker

                # and the load came off with each BYE
                assert {a: d.load for a, d in node_a.states().items()} == dict.fromkeys(everyone, 0)
            finally:
                rc_a, rc_b = node_a.stop(), node_b.stop()
            assert (rc_a, rc_b) == (0, 0), node_a.stderr_tail() + node_b.stderr_tail()


@long_test
async def test_a_retransmitted_bye_releases_its_calls_load_once(tmp_path: Path) -> None:
    """Retransmissions belong to their transaction: routed again, each copy of a BYE would try to release the
    call's load once more, and Kamailio logs an error for each (under load, at the end of a burst of calls, one
    for nearly every call)."""
    async with front_node(tmp_path, workers=1) as (node, port, health):
        (worker,) = node.worker_addresses(health)
        for _ in range(2):
            answer = await invite(NODE_A, port, local_host=CALLER, bye_copies=3)
            assert answer.status == 200, answer

        async def unloaded() -> bool:
            return node.states()[worker].load == 0

        await wait_for(unloaded, "the load released", 10)

        async def two_reports() -> bool:
            return len(node.calls()) == 2

        await wait_for(two_reports, "both calls reported by the worker", 15)
        log = (node.front_dir / "kamailio.log").read_text(errors="replace")
        assert " ERROR: " not in log, log[-3000:]
