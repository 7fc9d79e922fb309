"""A trunk's listed addresses are one peer for in-dialog requests (``sip_trunk_sources``): a carrier's SBC pair sends
the BYE from its other node. Through the front (Kamailio) and straight to a worker, the BYE from the trunk's second
address ends the call as the caller's hang-up, while a stranger's BYE of the same dialog is still refused 403 and
the call goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _front import NODE_A, front_node, requirements, wait_for
from test_front_dialogs import STRANGER, RawCall

pytestmark = requirements
TRUNK_A, TRUNK_B = "127.0.0.6", "127.0.0.7"  # one carrier's SBC pair, both listed


async def hung_up_by_the_trunks_other_node(call: RawCall) -> None:
    assert (await call.start()).status == 200
    stranger = await call.send_from(STRANGER, "BYE")
    assert (stranger.status, stranger.reason) == (403, "Forbidden (not the caller's address)"), stranger
    other = await call.send_from(TRUNK_B, "BYE")
    assert other.status == 200, (other.status, other.reason)


async def test_a_bye_from_the_trunks_other_address_ends_the_call_at_the_front_and_at_a_worker(tmp_path: Path) -> None:
    trunk = [f"{TRUNK_A}/32", f"{TRUNK_B}/32"]
    config = {"sip_trunk_sources": trunk, "sip_allowed_sources": trunk}
    async with front_node(tmp_path, workers=1, config=config) as (node, port, health):
        (worker,) = node.worker_addresses(health)
        for target in ((NODE_A, port), (NODE_A, int(worker.rpartition(":")[2]))):
            call = RawCall(TRUNK_A, target)
            try:
                await hung_up_by_the_trunks_other_node(call)
            finally:
                call.close()

        async def reported() -> list[dict[str, Any]]:
            calls = node.calls()
            return calls if len(calls) == 2 else []

        records = await wait_for(reported, "both calls' records", 20)
    for record in records:
        assert record["ended_by"] == "caller", record
        assert str(record["end_reason"]).startswith("caller hung up"), record
