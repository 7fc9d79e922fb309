"""Two `serve` nodes, the front, Redis, the model and the callers, each on a host of its own (network namespaces on
one machine, tests/integration/lab/_lab.py): a node cut off from Redis keeps its calls and its writes reach Redis
when the line is back; a front killed whole and started again carries every live call's BYE; a lost node's callers
get a BYE from the node left, whose calls go on, and new calls go to it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _lab import (
    call_state,
    lab_of,
    live_calls,
    marks,
    one_call_each,
    report_of,
    wait_for,
)

from bridge.devkit.labstack import DIALOG_DB, CallLab, Plan
from bridge.store import keys

pytestmark = marks
CALLER_HUNG_UP = "caller hung up (Normal call clearing)"
# the lost node's test: its caller's BYE comes about 5 s after the loss (a heartbeat's life, a reap, a SIP probe)
LOST_NODE_CALL_S = 18.0


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Iterator[CallLab]:
    yield from lab_of(request, Plan(nodes=2, workers=1))


async def health(lab: CallLab, node: str) -> dict[str, Any]:
    return await asyncio.to_thread(lab.health, node)


async def redis_state(lab: CallLab, node: str) -> dict[str, Any]:
    return dict((await health(lab, node)).get("redis") or {})


def heartbeats(lab: CallLab, node: str) -> list[str]:
    """The workers of ``node`` whose heartbeat Redis holds."""
    client = lab.redis(lab.redis_host)
    try:
        return [w for w in lab.workers(node) if client.exists(keys.worker_heartbeat(w))]
    finally:
        client.close()


def stored_dialogs(lab: CallLab) -> set[str]:
    """The Call-IDs of the dialogs the front keeps in Redis (``front_dialog_db``)."""
    stored = lab.redis("redis", db=DIALOG_DB)
    try:
        return {str(stored.hget(k, "callid")) for k in stored.scan_iter("dialog:entry::*")}
    finally:
        stored.close()


def ended_by_caller(lab: CallLab, call_id: str) -> bool:
    return call_state(lab, call_id).get("end_reason") == CALLER_HUNG_UP


async def test_a_node_cut_off_from_redis_keeps_its_calls_and_its_queued_writes_reach_redis_when_it_heals(
    lab: CallLab,
) -> None:
    """Node A is cut off from Redis while its call runs and ends, for longer than a heartbeat lives: node B's reaper
    finds node A's heartbeat expired, asks node A's worker over SIP, gets an answer and leaves its call alone. The call
    goes on to its caller's hang-up, its final state waits in node A's queue and reaches Redis once the line is back."""
    async with one_call_each(lab, 16.0) as (phones, calls):
        call_a = calls["node-a"]
        sip_a = await wait_for(lambda: call_state(lab, call_a).get("sip_call_id"), "node A's call's Call-ID", 10)
        redis_ip = lab.address("redis")
        lab.lab.cut("node-a", redis_ip)  # a blackhole route on node A: Redis unreachable, SIP and RTP untouched
        cut_at = time.time()
        try:
            await wait_for(lambda: not heartbeats(lab, "node-a"), "node A's heartbeats expired in Redis", 20)
            said = [f"worker {w} misses its heartbeat but answers SIP: not reaped" for w in lab.workers("node-a")]
            await wait_for(lambda: all(s in lab.log_tail("node-b", chars=200_000) for s in said),
                           "node B's reaper asking node A's workers and leaving them", 20)  # fmt: skip
            results = {r["call_id"]: r for r in await asyncio.gather(*phones)}
            for result in results.values():  # both calls ran to their callers' own hang-up
                assert result["answered"] and result["hangup_by"] == "local" and result["duration_s"] >= 15.5, result
            assert sip_a in results

            async def waiting() -> dict[str, float] | None:
                state = await redis_state(lab, "node-a")
                return state.get("writes_waiting_s") if state.get("state") == "degraded" else None

            waits = await wait_for(waiting, "node A's writes waiting for Redis", 10)
            assert set(waits) == {str(i) for i in range(lab.plan.workers)}, waits  # node A's workers, by number
            assert (await redis_state(lab, "node-b")).get("state") == "up"
            await wait_for(lambda: ended_by_caller(lab, calls["node-b"]), "node B's call ended, in Redis", 10)
            state = call_state(lab, call_a)
            assert not state.get("ended_at") and not state.get("end_reason"), state  # not reaped, its end not known
            assert call_a in live_calls(lab, "node-a")
        finally:
            heal_at = time.time()
            lab.lab.heal("node-a", redis_ip)
    print(f"node A cut off from Redis for {heal_at - cut_at:.1f} s (a heartbeat lives {keys.HEARTBEAT_TTL_S} s)")

    async def node_a_up() -> bool:
        return (await redis_state(lab, "node-a")).get("state") == "up"

    await wait_for(node_a_up, "node A's writes re-synced", 30)
    await wait_for(lambda: ended_by_caller(lab, call_a), "node A's call ended by its caller, in Redis", 20)
    state = call_state(lab, call_a)
    assert cut_at <= float(state["ended_at"]) <= heal_at, (cut_at, state, heal_at)  # as it was, not when written
    report = report_of(lab, "node-a", sip_a)
    assert report is not None and report["end_reason"] == CALLER_HUNG_UP, report
    assert live_calls(lab, "node-a") == set() and live_calls(lab, "node-b") == set()
    # the lab as it was found: the front forgets the ended dialogs (once their BYE transactions are over)
    await wait_for(lambda: not stored_dialogs(lab), "no dialog left in the front's Redis", 30)


async def test_a_front_killed_whole_and_started_again_carries_every_live_calls_bye(lab: CallLab) -> None:
    async with one_call_each(lab, 10.0) as (phones, calls):  # the front is back well within 1 s of the kill

        def confirmed() -> set[str] | None:
            found = {str(d["call-id"]) for d in lab.dialogs() if d.get("state") == 4}
            return found if len(found) == len(calls) else None

        before = await wait_for(confirmed, "both dialogs confirmed at the front", 20)
        assert stored_dialogs(lab) == before

        lab.kill_front()  # every process of it at once: nothing is left holding the address
        assert lab.lab.pids("front") == []
        lab.start_front()
        await asyncio.to_thread(lab.wait_front)
        assert await wait_for(confirmed, "the live dialogs loaded by the new front", 20) == before

        results = await asyncio.gather(*phones)
        for result in results:
            assert result["answered"] and result["hangup_by"] == "local", results
        for node, call_id in calls.items():  # each caller's BYE reached its worker through the new front
            await wait_for(lambda c=call_id: ended_by_caller(lab, c), f"{node}'s call ended by its caller's BYE", 20)
            sip_call_id = call_state(lab, call_id)["sip_call_id"]
            assert sip_call_id in {r["call_id"] for r in results}
            report = await wait_for(lambda n=node, s=sip_call_id: report_of(lab, n, s), f"{node}'s report", 20)
            assert report["end_reason"] == CALLER_HUNG_UP, report
        await wait_for(lambda: not lab.dialogs(), "no dialog left at the front", 30)
        log = lab.front_log(20000)
        assert "Not Here" not in log and "dialog timeout" not in log.lower(), log


async def test_a_lost_nodes_callers_get_a_bye_from_the_node_left_whose_calls_go_on(lab: CallLab) -> None:
    """Runs last in the module: node B is lost (started again at the end, for the lab's next user). Node A's reaper
    finds node B's heartbeat expired, asks node B's worker over SIP, gets no answer and sends its caller a BYE."""
    async with one_call_each(lab, LOST_NODE_CALL_S) as (phones, calls):
        victim = calls["node-b"]
        await wait_for(lambda: call_state(lab, victim).get("sip_dialog"), "node B's call's dialog in Redis", 10)
        hung_up: dict[str, float] = {}  # Call-ID -> when the softphone's call ended (monotonic)

        def ended(phone: asyncio.Task[dict[str, Any]]) -> None:
            if not phone.cancelled() and phone.exception() is None:
                hung_up.setdefault(phone.result()["call_id"], time.monotonic())

        for phone in phones:
            phone.add_done_callback(ended)

        lab.lab.kill_host("node-b")  # serve and its workers at once, as a machine lost: no one hangs up cleanly
        killed_at = time.monotonic()

        def node_b_out() -> bool:
            states = lab.front_states()
            return all(states[w].state != "A" for w in lab.workers("node-b"))

        await wait_for(node_b_out, "node B's workers out of the front's dispatcher", 15, every_s=0.1)
        out_after_s = time.monotonic() - killed_at

        # new calls: every one answered, by node A
        fresh = await asyncio.gather(*(lab.call(2.0) for _ in range(2)))
        for result in fresh:
            assert result["answered"] and result["hangup_by"] == "local", fresh
        for result in fresh:
            report = await wait_for(lambda r=result: report_of(lab, "node-a", r["call_id"]), "a new call on node A", 20)
            assert report["end_reason"] == CALLER_HUNG_UP, report

        # node B's caller: hung up on (node A's reaper, once B's heartbeat expired and B did not answer, from the
        # dialog kept in Redis)
        victim_sip = call_state(lab, victim)["sip_call_id"]
        by_id = {r["call_id"]: r for r in await asyncio.gather(*phones)}
        lost = by_id.pop(victim_sip)
        assert lost["answered"] and lost["hangup_by"] == "remote" and lost["duration_s"] < LOST_NODE_CALL_S - 1, lost
        assert call_state(lab, victim)["end_reason"] == "worker died"
        assert f"worker {lab.workers('node-b')[0]} is dead" in lab.log_tail("node-a", chars=200_000)
        # node A's caller: untouched, to its own hang-up
        (kept,) = by_id.values()
        assert kept["answered"] and kept["hangup_by"] == "local" and kept["duration_s"] >= LOST_NODE_CALL_S - 0.5, kept
        assert await wait_for(lambda: ended_by_caller(lab, calls["node-a"]), "node A's call ended by its caller", 20)
        assert live_calls(lab, "node-a") == set()
        print(f"node B out of the dispatcher after {out_after_s:.1f} s; its caller's BYE "
              f"{hung_up[victim_sip] - killed_at:.1f} s after the loss")  # fmt: skip

        lab.start_node("node-b")
        await asyncio.to_thread(lab.wait_node, "node-b")
        await asyncio.to_thread(lab.wait_front)
