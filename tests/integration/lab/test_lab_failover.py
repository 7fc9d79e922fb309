"""The Redis primary fails over (a Sentinel, each Redis and the sentinel on a host of its own) while calls run on
two nodes: no call is dropped, every call's record ends on the new primary as its caller ended it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from _lab import call_state, lab_of, live_calls, marks, one_call_each, report_of, wait_for

from bridge.devkit.labstack import CallLab, Plan

pytestmark = marks
CALLER_HUNG_UP = "caller hung up (Normal call clearing)"


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Iterator[CallLab]:
    yield from lab_of(request, Plan(nodes=2, workers=1, sentinel=True))


async def test_a_sentinel_failover_drops_no_call_and_every_record_ends_on_the_new_primary(lab: CallLab) -> None:
    old = lab.primary()
    async with one_call_each(lab, 12.0) as (phones, calls):
        lab.sentinel("failover", "callbridge")  # planned: the replica is promoted, the old primary follows it
        new = await wait_for(lambda: (p := lab.primary()) != old and p, "the replica promoted", 30)
        results = await asyncio.gather(*phones)
    for result in results:  # no call dropped: each ran to its caller's own hang-up
        assert result["answered"] and result["hangup_by"] == "local" and result["duration_s"] >= 11.5, results

    async def every_node_up() -> bool:
        states = [((await asyncio.to_thread(lab.health, n)).get("redis") or {}).get("state") for n in calls]
        return states == ["up"] * len(calls)

    await wait_for(every_node_up, "every node writing to the new primary", 30)
    assert lab.redis_host == new
    for node, call_id in calls.items():  # the records are on the new primary, ended as the callers ended them

        def ended(c: str = call_id) -> bool:
            return call_state(lab, c).get("end_reason") == CALLER_HUNG_UP

        await wait_for(ended, f"{node}'s call ended by its caller, on the new primary", 20)
        state = call_state(lab, call_id)
        assert state["sip_call_id"] in {r["call_id"] for r in results}, state
        report = report_of(lab, node, state["sip_call_id"])
        assert report is not None and report["end_reason"] == CALLER_HUNG_UP, report
        assert live_calls(lab, node) == set()
