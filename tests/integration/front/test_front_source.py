"""Behind the front, a worker's source allowlist acts on the caller's real address: the front reports it in
X-Callbridge-Source, and the worker believes that header from the front's address only. A caller that sends its own
copy (to the front, or straight to a worker) is judged by where its packets come from."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from _front import CALLER, NODE_A, NODE_B, ROOT, Node, invite, port_block, requirements, sipp, sipp_dir

from bridge.emulator import EmulatorServer
from bridge.serve.front import kamailio_binary, template_path
from bridge.serve.front_edge import Edge, address_file, front_users
from bridge.serve.front_files import Listen, front_defs
from bridge.sip.access import FORBIDDEN_LOCKED_OUT

pytestmark = requirements
SIP_SCENARIOS = ROOT / "tests" / "integration" / "sip" / "scenarios"  # the digest-auth ones
USER, PASSWORD, REALM = "trunk1", "s3cret:with-colon", "trunks.example"


def test_the_routing_script_passes_kamailios_own_check(tmp_path: Path) -> None:
    kamailio = kamailio_binary()
    assert kamailio is not None
    (tmp_path / "kamailio.cfg").write_text(template_path().read_text())
    (tmp_path / "front.defs").write_text(front_defs(Listen("127.0.0.1", port_block(1)), tmp_path, retry_after_s=5))
    (tmp_path / "dispatcher.list").write_text("1 sip:127.0.0.1:5999 8 0 duid=127.0.0.1:5999;maxload=4\n")
    (tmp_path / "front.users").write_text(front_users(Edge(), "nonce-key", "mask-key"))
    check = subprocess.run(
        [kamailio, "-c", "-f", str(tmp_path / "kamailio.cfg")], cwd=tmp_path, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr[-3000:]
    assert "config file ok" in check.stdout + check.stderr


def test_the_routing_script_with_every_guard_on_passes_kamailios_own_check(tmp_path: Path) -> None:
    kamailio = kamailio_binary()
    assert kamailio is not None
    edge = Edge(
        allowed_sources=("192.0.2.0/24", "2001:db8::/32"), auth_users={USER: PASSWORD}, auth_realm=REALM,
        topology_hiding=True, server_header="lab-edge/1.0", refusal_limit=5,
    )  # fmt: skip
    (tmp_path / "kamailio.cfg").write_text(template_path().read_text())
    (tmp_path / "front.defs").write_text(
        front_defs(Listen("127.0.0.1", port_block(1)), tmp_path, retry_after_s=5, edge=edge)
    )
    (tmp_path / "dispatcher.list").write_text("1 sip:127.0.0.1:5999 8 0 duid=127.0.0.1:5999;maxload=4\n")
    (tmp_path / "front.sources").write_text(address_file(edge.allowed_sources))
    (tmp_path / "front.users").write_text(front_users(edge, "nonce-key", "mask-key"))
    assert PASSWORD not in (tmp_path / "front.users").read_text()  # its HA1 only
    check = subprocess.run(
        [kamailio, "-c", "-f", str(tmp_path / "kamailio.cfg")], cwd=tmp_path, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr[-3000:]
    assert "config file ok" in check.stdout + check.stderr


async def test_a_spoofed_source_header_is_ignored_and_the_fronts_is_believed(tmp_path: Path) -> None:
    work = sipp_dir(tmp_path)
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        port = port_block(2)
        # Only the caller's own address may call. The front (NODE_A) is not in the list: a worker that judged by
        # the packet's source would refuse every call coming through the front.
        node = Node(
            tmp_path, "a", host=NODE_A, sip_port=port, workers=1, realtime_url=emulator.base_url, front=True,
            config={"sip_allowed_sources": [f"{CALLER}/32"]},
        )  # fmt: skip
        try:
            (worker,) = node.worker_addresses(await node.up())
            worker_port = int(worker.rpartition(":")[2])
            spoof = [f"X-Callbridge-Source: {CALLER}:5060"]

            # through the front from the allowed address: the worker sees the caller, not the front; answered
            run = await sipp(work, f"{NODE_A}:{port}", calls=1, scenario="uac_short.xml")
            assert (run.successful, run.failed) == (1, 0), run.output[-3000:]
            assert (await invite(NODE_A, port, local_host=CALLER)).status == 200

            # from another address, claiming the allowed one: the front replaces the header with the truth
            assert (await invite(NODE_A, port, local_host=NODE_B, headers=spoof)).status == 403
            # straight to the worker with the claim: not from the front, so the header is ignored
            assert (await invite(NODE_A, worker_port, local_host=NODE_B, headers=spoof)).status == 403
            # (and the allowed caller straight to the worker is still judged by its packets: allowed)
            assert (await invite(NODE_A, worker_port, local_host=CALLER)).status == 200
        finally:
            rc = node.stop()
        assert rc == 0, node.stderr_tail()


async def test_digest_auth_through_the_front_and_the_lockout_hits_the_guesser_not_the_front(tmp_path: Path) -> None:
    work = sipp_dir(tmp_path)
    for name in ("uac_digest_auth.xml", "uac_digest_wrong_password.xml"):
        shutil.copy(SIP_SCENARIOS / name, work / name)
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        port = port_block(2)
        node = Node(
            tmp_path, "a", host=NODE_A, sip_port=port, workers=1, realtime_url=emulator.base_url, front=True,
            # the worker's lockout, not the front's ban of an address refused front_refusal_limit times
            config={"sip_auth_users": {USER: PASSWORD}, "sip_auth_realm": REALM, "front_refusal_limit": 1000},
        )  # fmt: skip
        try:
            await node.up()
            target = f"{NODE_A}:{port}"
            good = await sipp(
                work, target, calls=1, scenario="uac_digest_auth.xml", extra=["-au", USER, "-ap", PASSWORD]
            )
            assert (good.successful, good.failed) == (1, 0), good.output[-3000:]

            # a password guesser on NODE_B: ten wrong answers (401, then 403 each) lock out its address ...
            guesses = await sipp(
                work, target, calls=10, rate=5, local_host=NODE_B, scenario="uac_digest_wrong_password.xml",
                extra=["-au", USER, "-ap", "wrong"],
            )  # fmt: skip
            assert (guesses.successful, guesses.failed) == (10, 0), guesses.output[-3000:]
            locked = await invite(NODE_A, port, local_host=NODE_B)
            assert (locked.status, locked.reason) == (403, FORBIDDEN_LOCKED_OUT)
            # ... and only its address: the front's is not the one locked, so another caller is still challenged
            assert (await invite(NODE_A, port, local_host=CALLER)).status == 401
        finally:
            rc = node.stop()
        assert rc == 0, node.stderr_tail()
