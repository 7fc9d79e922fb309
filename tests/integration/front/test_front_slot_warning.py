"""The front says why a source's call got 486 (issue 62, item 5): with the shipped settings (front_calls_per_source 2
for every source outside front_allowed_sources) a trunk left out of the allow-list gets 486 on its third concurrent
call. Kamailio's log (beside serve's in the journal, else kamailio.log in the run directory) names the source and the
setting, once per source per 10 minutes however many calls it refuses (kamailio.cfg, route[SLOTWARN]), and logs no
ERROR doing so; every refusal is counted in ``callbridge_front_refused_total{reason="calls_per_source"}``.

The sources are loopback addresses of their own (Linux answers all of 127.0.0.0/8)."""

from __future__ import annotations

from pathlib import Path

from _front import NODE_A, front_node, invite, requirements, wait_for
from test_front_dialogs import RawCall
from test_front_edge import exported, polled

from bridge.config import Settings

pytestmark = requirements
TRUNK, OTHER = "127.0.0.6", "127.0.0.7"
SHIPPED = Settings.model_fields["front_calls_per_source"].default
BUSY = (486, "Busy Here (calls per source limit)")
SETTING = "front_calls_per_source"


def _warnings(node_dir: Path, source: str) -> list[str]:
    log = (node_dir / "kamailio.log").read_text(errors="replace")
    return [line for line in log.splitlines() if f"{source} holds" in line and SETTING in line]


async def test_a_refused_source_is_named_once_with_the_setting(tmp_path: Path) -> None:
    assert SHIPPED == 2
    async with front_node(tmp_path, workers=2, config={SETTING: SHIPPED}) as (node, port, _):
        # no trunk is listed: serve's start says what that means for an SBC, and which setting lists one
        started = node.stderr_tail(20000)
        assert (
            f"trunks: none listed (sip_trunk_sources is empty): each source address holds at most {SHIPPED}" in started
        )
        assert "gets 486 on its third concurrent call; list each trunk's SBC addresses in sip_trunk_sources" in started
        held = [RawCall(source, (NODE_A, port)) for source in (TRUNK, TRUNK, OTHER, OTHER)]
        try:
            for call in held:
                assert (await call.start()).status == 200
            # the trunk's third and fourth calls, the other source's third: three 486s, one warning per source
            for source in (TRUNK, TRUNK, OTHER):
                refused = await invite(NODE_A, port, local_host=source)
                assert (refused.status, refused.reason) == BUSY, refused
            await wait_for(polled(lambda: _warnings(node.front_dir, OTHER)), "the other source's warning logged")
            trunk, other = _warnings(node.front_dir, TRUNK), _warnings(node.front_dir, OTHER)
            for call in held:
                assert (await call.send("BYE")).status == 200
        finally:
            for call in held:
                call.close()
        expected = {("callbridge_front_refused_total", "calls_per_source"): 3.0}
        assert await exported(node, expected) == expected
    assert len(trunk) == 1, trunk
    assert len(other) == 1, other
    assert " WARNING: " in trunk[0], trunk
    assert f"{TRUNK} holds 2 calls through the front: its new calls get 486 ({SETTING}" in trunk[0], trunk
    assert "sip_trunk_sources or front_allowed_sources" in trunk[0], trunk
    # the warning's bookkeeping logs no ERROR of Kamailio's core (a front's errors page whoever alerts on them)
    errors = [line for line in (node.front_dir / "kamailio.log").read_text().splitlines() if " ERROR: " in line]
    assert errors == [], errors
