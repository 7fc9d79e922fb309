"""Calls per source at the front (kamailio.cfg, route[SLOTS]): a source outside the allow-list holds at most
front_calls_per_source calls through the front, and the next gets 486 from Kamailio before any worker (or model
session) sees it, while another source's call is answered. A call's end frees its slot; an INVITE answered with a
digest challenge holds none; the allow-list's trunks and those of sip_trunk_sources have no limit.

The sources are loopback addresses of their own (Linux answers all of 127.0.0.0/8)."""

from __future__ import annotations

from pathlib import Path

from _front import CALLER, NODE_A, front_node, invite, no_dialog_left, requirements, sipp, sipp_dir, wait_for
from test_front_dialogs import RawCall
from test_front_edge import PASSWORD, REALM, USER, counters, exported, polled, sessions

from bridge.config import Settings

pytestmark = requirements
STRANGER, OTHER = "127.0.0.4", "127.0.0.5"
DEFAULT = Settings.model_fields["front_calls_per_source"].default
BUSY = (486, "Busy Here (calls per source limit)")


async def test_one_sources_calls_are_capped_while_another_sources_call_is_answered(tmp_path: Path) -> None:
    assert DEFAULT == 2
    config = {"front_calls_per_source": DEFAULT, "front_retry_after_s": 2}
    async with front_node(tmp_path, workers=2, config=config) as (node, port, _):
        assert "each source holds at most 2 calls (486 beyond)" in node.stderr_tail(20000)
        held = [RawCall(STRANGER, (NODE_A, port)) for _ in range(DEFAULT)]
        try:
            for call in held:
                assert (await call.start()).status == 200
            # the stranger's next call is refused by the front: no worker, no model session
            refused = await invite(NODE_A, port, local_host=STRANGER)
            assert (refused.status, refused.reason) == BUSY, refused
            assert refused.headers.get("retry-after") == "2"  # front_retry_after_s
            assert sessions(node) == DEFAULT
            # another source's call is answered meanwhile
            assert (await invite(NODE_A, port, local_host=OTHER)).status == 200
            # a call's end frees its slot: the stranger's next call is answered
            assert (await held[0].send("BYE")).status == 200
            assert (await invite(NODE_A, port, local_host=STRANGER)).status == 200
            assert (await held[1].send("BYE")).status == 200
        finally:
            for call in held:
                call.close()
        assert counters(node)["refused_slots"] == 1
        expected = {("callbridge_front_refused_total", "calls_per_source"): 1.0}
        assert await exported(node, expected) == expected
        assert [r for r in node.calls() if r["sip_call_id"] == refused.headers.get("call-id")] == []
        await wait_for(polled(lambda: len(node.calls()) == DEFAULT + 2), "every answered call reported")
        await no_dialog_left(node)


async def test_a_challenged_invite_holds_no_slot(tmp_path: Path) -> None:
    """One call per source, digest at the front: INVITEs answered 401 (a guesser's, a trunk's first try) take no
    slot, so the source's call with credentials is answered after them."""
    work = sipp_dir(tmp_path)
    config = {"sip_auth_users": {USER: PASSWORD}, "sip_auth_realm": REALM, "front_auth": True,
              "front_calls_per_source": 1}  # fmt: skip
    async with front_node(tmp_path, workers=1, config=config) as (node, port, _):
        for _ in range(3):
            assert (await invite(NODE_A, port, local_host=CALLER)).status == 401
        run = await sipp(
            work, f"{NODE_A}:{port}", calls=1, scenario="uac_front_digest.xml", extra=["-au", USER, "-ap", PASSWORD]
        )
        assert (run.successful, run.failed) == (1, 0), run.output[-3000:]
        assert counters(node)["challenged"] == 4 and counters(node)["refused_slots"] == 0
        assert sessions(node) == 1


async def test_the_allow_lists_trunk_has_no_limit(tmp_path: Path) -> None:
    work = sipp_dir(tmp_path)
    config = {"front_calls_per_source": 1, "front_allowed_sources": [f"{CALLER}/32"]}
    async with front_node(tmp_path, workers=1, config=config) as (node, port, _):
        assert "each source outside the allow-list holds at most 1 calls" in node.stderr_tail(20000)
        run = await sipp(work, f"{NODE_A}:{port}", calls=3, rate=3, scenario="uac", extra=["-d", "3000"])
        assert (run.returncode, run.successful, run.failed) == (0, 3, 0), run.output[-3000:]
        assert counters(node)["refused_slots"] == 0
        await wait_for(polled(lambda: len(node.calls()) == 3), "the trunk's 3 calls reported")


async def test_a_listed_trunk_has_no_limit_while_a_stranger_keeps_it(tmp_path: Path) -> None:
    """A trunk listed in sip_trunk_sources (not an allow-list: strangers still call) holds as many calls as it
    sends, while a stranger's second call gets 486."""
    work = sipp_dir(tmp_path)
    config = {"front_calls_per_source": 1, "sip_trunk_sources": [f"{CALLER}/32"]}
    async with front_node(tmp_path, workers=1, config=config) as (node, port, _):
        assert "each source outside the trunks holds at most 1 calls" in node.stderr_tail(20000)
        held = RawCall(STRANGER, (NODE_A, port))
        try:
            assert (await held.start()).status == 200
            run = await sipp(work, f"{NODE_A}:{port}", calls=3, rate=3, scenario="uac", extra=["-d", "3000"])
            assert (run.returncode, run.successful, run.failed) == (0, 3, 0), run.output[-3000:]
            refused = await invite(NODE_A, port, local_host=STRANGER)
            assert (refused.status, refused.reason) == BUSY, refused
            assert (await held.send("BYE")).status == 200
        finally:
            held.close()
        assert counters(node)["refused_slots"] == 1
        await wait_for(polled(lambda: len(node.calls()) == 4), "the trunk's 3 calls and the stranger's reported")
