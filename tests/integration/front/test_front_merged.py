"""Copies of one INVITE at the front (kamailio.cfg, route[MERGED]; RFC 3261 §8.2.2.2): a serial re-route upstream or
an SBC's two paths bring the same INVITE (Call-ID, From-tag, CSeq) on another top Via branch, often from another
address. The front keeps the first copy and answers every other 482 itself, so exactly one worker answers one call
and opens one model session; a retransmission (the same branch) stays its transaction's. Each 482 is counted in
``callbridge_front_refused_total{reason="merged"}``.

Two workers stand behind the front, so that a copy let through would go to the idle one and be answered there."""

from __future__ import annotations

import asyncio
from pathlib import Path

from _front import CALLER, NODE_A, front_node, no_dialog_left, requirements, wait_for
from _rawsip import Dialog, Leg
from test_front_edge import counters, exported, polled, sessions

pytestmark = requirements
SECOND_PATH = "127.0.0.9"  # the other SBC path: the same INVITE from another address
LOOP = (482, "Loop Detected")


async def test_a_copy_of_an_invite_on_another_branch_gets_482_and_reaches_no_worker(tmp_path: Path) -> None:
    async with front_node(tmp_path, workers=2) as (node, port, _):
        with Leg(CALLER, (NODE_A, port)) as first, Leg(SECOND_PATH, (NODE_A, port)) as second:
            # the first copy is being handled (the front's 100 Trying) when the second arrives on another branch
            call = Dialog()
            branch = first.invite(call)
            assert (await first.answer(call, "INVITE", final=False)).status == 100
            copy_branch = second.invite(call)
            refused = await second.answer(call, "INVITE")
            assert (refused.status, refused.reason) == LOOP, refused
            assert copy_branch in refused.headers.get("via", "")
            second.ack(call, refused, copy_branch)
            first.invite(call, branch)  # a retransmission of the first copy: its transaction's, not a copy
            answered = await first.answer(call, "INVITE")
            assert answered.status == 200, answered
            first.ack(call, answered, branch)
            assert (await first.hang_up(call)).status == 200

            # two copies at once, from both paths: one call, whichever copy the front took first
            both = Dialog()
            branches = {first: first.invite(both), second: second.invite(both)}
            finals = await asyncio.gather(*(leg.answer(both, "INVITE") for leg in branches))
            answers = dict(zip(branches, finals, strict=True))
            assert sorted(a.status for a in answers.values()) == [200, 482], answers
            for leg, answer in answers.items():
                leg.ack(both, answer, branches[leg])
            (winner,) = [leg for leg, answer in answers.items() if answer.status == 200]
            assert (await winner.hang_up(both)).status == 200

        await wait_for(polled(lambda: len(node.calls()) >= 2), "both calls' reports")
        assert len(node.calls()) == 2 and sessions(node) == 2  # one worker's call, one model session each
        assert counters(node)["refused_merged"] == 2
        await no_dialog_left(node)  # a refused copy opened no dialog at the front
        log = (node.front_dir / "kamailio.log").read_text(errors="replace")
        assert f"INVITE {call.call_id} from {SECOND_PATH}: a copy of a new INVITE the front already has" in log
        expected = {("callbridge_front_refused_total", "merged"): 2.0}
        assert await exported(node, expected) == expected
