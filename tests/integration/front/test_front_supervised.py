"""The front is supervised as one process group: when Kamailio's main process is SIGKILLed (as the OOM killer does),
its children, which outlive it holding the SIP port, are killed too and `serve` starts Kamailio again on the same
address; nothing of the dead front is left."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from _front import (
    CALLER,
    NODE_A,
    NODE_B,
    ROOT,
    Node,
    front_node,
    heavy,
    long_test,
    port_block,
    requirements,
    sipp,
    sipp_dir,
    wait_for,
)
from test_front_dialogs import RawCall

from bridge.config import load_settings
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.emulator import EmulatorServer
from bridge.serve.front import RESTART_BACKOFF_S, KamailioFront, node_destinations, template_path
from bridge.serve.front_dialogs import DEFAULT_DIALOG_DB, has_db_redis
from bridge.serve.front_files import FrontError
from bridge.serve.front_process import group_members, options_status
from bridge.serve.front_rpc import rpc_call

pytestmark = [
    *requirements,
    heavy,
    pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary"),
    pytest.mark.skipif(not has_db_redis(), reason="Kamailio's db_redis is not installed (kamailio-redis-modules)"),
]
CALLER_WAV = ROOT / "bridge" / "assets" / "caller_hours.wav"
DIALOG_DB = 5  # the front's dialogs (the bridge's own state is in database 0)
CALL_MS = 10_000  # each call's length: the front is killed and back well within it (back about 1 s after the kill)


async def softphone(port: int, seconds: float) -> dict[str, Any]:
    """A pjsua2 caller (``callbridge call``, which follows the Record-Route set) that hangs up after ``seconds``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "call", f"sip:1000@{NODE_A}:{port}", "--play", str(CALLER_WAV), "--loop",
        "--hangup-after", str(seconds), "--json", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


def confirmed_dialogs(node: Node) -> list[dict[str, Any]]:
    """The front's dialogs in state 4 (confirmed: answered and ACKed), over its control socket."""
    try:
        found = rpc_call(node.front_dir / "rpc.sock", "dlg.list", timeout_s=1.0) or []
    except FrontError:  # a front that is not up yet holds none
        return []
    return [d for d in found if d.get("state") == 4]


async def answered(node: Node, calls: int) -> list[dict[str, Any]] | None:
    found = confirmed_dialogs(node)
    return found if len(found) == calls else None


async def stored_dialogs(redis_url: str, db: int = DIALOG_DB) -> list[dict[str, str]]:
    """The dialogs the front keeps in Redis (db_redis: a hash "dialog:entry::HASH_ENTRY:HASH_ID" per dialog)."""
    client = aioredis.from_url(redis_url.rpartition("/")[0] + f"/{db}", decode_responses=True)
    try:
        return [
            {str(k): str(v) for k, v in (await client.hgetall(key)).items()}
            async for key in client.scan_iter("dialog:entry::*")
        ]
    finally:
        await client.aclose()


async def every_call_ended_by_its_caller(node: Node, calls: int) -> None:
    """Each call's report says its caller hung up (its BYE reached the worker); the front holds no dialog."""

    async def reported() -> list[dict[str, Any]] | None:
        found = node.calls()
        return found if len(found) >= calls else None

    reports = await wait_for(reported, f"{calls} calls reported", 60)
    assert [r["end_reason"] for r in reports] == ["caller hung up (Normal call clearing)"] * calls, reports

    async def no_dialog() -> bool:
        return not rpc_call(node.front_dir / "rpc.sock", "dlg.list")

    await wait_for(no_dialog, "the front's dialog table empty", 30)


async def new_front(node: Node, port: int, old_pid: int) -> int | None:
    """The pid of a front other than ``old_pid`` that answers OPTIONS on the address, or None."""
    front = (await node.health()).get("front") or {}
    if front.get("pid") in (None, old_pid) or not front.get("alive"):
        return None
    return int(front["pid"]) if await options_status(NODE_A, port, 0.5, local_host=NODE_A) == 200 else None


@long_test
async def test_a_sigkilled_kamailio_is_replaced_on_its_address_nothing_of_it_is_left_and_every_bye_ends_its_call(
    tmp_path: Path,
) -> None:
    """Three SIPp callers (BYE to the address they called, no Route) and a softphone (BYE along the Route set) are in
    calls when Kamailio's main process is SIGKILLed; their BYEs, after the restart, reach the workers."""
    work = sipp_dir(tmp_path)
    with EmbeddedRedis() as redis:
        config = {"redis_url": redis.url, "front_dialog_db": DIALOG_DB}
        async with front_node(tmp_path, workers=2, config=config) as (node, port, health):
            old_pid = int(health["front"]["pid"])
            assert os.getpgid(old_pid) == old_pid  # a session of its own: the group is the front
            sipp_run = asyncio.create_task(
                sipp(work, f"{NODE_A}:{port}", calls=3, rate=3, scenario="uac", extra=["-d", str(CALL_MS)])
            )
            phone = asyncio.create_task(softphone(port, CALL_MS / 1000))
            try:
                live = await wait_for(lambda: answered(node, 4), "4 calls answered through the front", 30)
                stored = await stored_dialogs(redis.url)
                assert {d["callid"] for d in stored} == {d["call-id"] for d in live}, stored
                old_group = group_members(old_pid)
                assert old_pid in old_group and len(old_group) > 1, old_group  # the main process and its children

                os.kill(old_pid, signal.SIGKILL)
                new_pid = await wait_for(lambda: new_front(node, port, old_pid), "a new front on the address", 30)
                assert os.getpgid(new_pid) == new_pid and new_pid not in old_group
                assert group_members(old_pid) == [], "processes of the killed front are left"
                assert [pid for pid in old_group if _alive(pid)] == [], old_group
                log = node.stderr_tail(20000)
                assert f"Kamailio (pid {old_pid}) exited with -9; " in log, log
                assert f"restarting on sip:{NODE_A}:{port} in {RESTART_BACKOFF_S[0]:.1f} s" in log, log
                assert "Address already in use" not in (node.front_dir / "kamailio.log").read_text(errors="replace")
                assert (await node.health())["front"]["restarts"] == 1
                # the restarted front loaded the live dialogs, with the worker and the caller of each
                reloaded = {d["call-id"] for d in confirmed_dialogs(node)}
                assert reloaded == {d["call-id"] for d in live}, reloaded
            finally:
                result, run = await phone, await sipp_run
            assert result["answered"] and result["hangup_by"] == "local", result
            assert (run.returncode, run.successful, run.failed) == (0, 3, 0), run.output[-3000:]
            await every_call_ended_by_its_caller(node, 4)
            assert await stored_dialogs(redis.url) == []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


class StandaloneFront:
    """Kamailio with the run directory `serve` writes (KamailioFront.write), started and killed by the test itself:
    one of two fronts that share an address. On one machine the two bind it side by side (UDP goes to the one bound
    last, TCP needs tcp_reuse_port) as two machines take turns holding a floating address."""

    def __init__(self, tmp: Path, name: str, port: int, peers: list[str], redis_url: str, dialog_id: int) -> None:
        settings = load_settings(
            None, sip_host=NODE_A, sip_port=port, front="kamailio", front_peers=tuple(peers),
            front_dir=tmp / name, redis_url=redis_url, front_dialog_db=DIALOG_DB, front_dialog_id=dialog_id,
            front_calls_per_source=0,  # the test's callers are one trunk's calls
        )  # fmt: skip
        self.front = KamailioFront(settings, node_destinations(settings, []))
        self.port, self.run_dir = port, tmp / name
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, script: Path) -> None:
        config = self.front.write()
        config.write_text(script.read_text())
        log = (self.run_dir / "kamailio.log").open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            self.front.binary, "-DD", "-E", "-f", str(config), "-Y", str(self.run_dir), "-w", str(self.run_dir),
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        log.close()

        async def ready() -> bool:
            try:
                self.dialogs()  # its own control socket answers (OPTIONS may be the other front's answer)
            except FrontError:
                return False
            return await options_status(NODE_A, self.port, 0.5, local_host=NODE_A) == 200

        await wait_for(ready, f"the front in {self.run_dir} up", 30)

    def dialogs(self) -> list[dict[str, Any]]:
        return list(rpc_call(self.run_dir / "rpc.sock", "dlg.list") or [])

    async def kill(self) -> None:
        """The machine is lost: every process of the front at once."""
        if self.proc is not None and self.proc.returncode is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
            await wait_for(lambda: _none_left(self.proc), "the front's processes gone", 30)


async def _none_left(proc: asyncio.subprocess.Process | None) -> bool:
    return proc is None or group_members(proc.pid) == []


@long_test
async def test_a_second_front_taking_over_the_address_carries_every_live_calls_bye(tmp_path: Path) -> None:
    """Front 2 is up before the calls (a hot standby: it never saw them set up); front 1 takes them, then its
    machine is lost. Front 2 loads each call's dialog from Redis at its first in-dialog request, and every caller's
    BYE reaches its worker (on another node). Redis with a password: db_redis authenticates."""
    work = sipp_dir(tmp_path)
    script = tmp_path / "kamailio.cfg"  # the package's script, sharing the address with a second front
    script.write_text(template_path().read_text().replace("tcp_children=1\n", "tcp_children=1\ntcp_reuse_port=yes\n"))
    with EmbeddedRedis(password="s3cret-dlg") as redis:
        async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
            port, b_port = port_block(1), port_block(2)
            node_b = Node(
                tmp_path, "b", host=NODE_B, sip_port=b_port, workers=2, realtime_url=emulator.base_url,
                redis_url=redis.url, trust=[NODE_A],
            )  # fmt: skip
            peers = [f"{NODE_B}:{b_port}/4", f"{NODE_B}:{b_port + 1}/4"]
            standby = StandaloneFront(tmp_path, "front2", port, peers, redis.url, dialog_id=2)
            active = StandaloneFront(tmp_path, "front1", port, peers, redis.url, dialog_id=1)
            try:
                await node_b.up()
                await standby.start(script)
                await active.start(script)  # bound last: the address's traffic is its own
                sipp_run = asyncio.create_task(
                    sipp(work, f"{NODE_A}:{port}", calls=3, rate=3, scenario="uac", extra=["-d", str(CALL_MS)])
                )
                phone = asyncio.create_task(softphone(port, CALL_MS / 1000))
                try:

                    async def four() -> list[dict[str, Any]] | None:
                        found = [d for d in active.dialogs() if d.get("state") == 4]
                        return found if len(found) == 4 else None

                    live = await wait_for(four, "4 calls answered through front 1", 30)
                    stored = await stored_dialogs(redis.url)
                    assert {d["callid"] for d in stored} == {d["call-id"] for d in live}, stored
                    assert all(int(d["hash_id"]) % 16 == 1 for d in stored), stored  # front 1's own ids
                    assert standby.dialogs() == []  # front 2 never saw them
                    await active.kill()
                finally:
                    result, run = await phone, await sipp_run
                assert result["answered"] and result["hangup_by"] == "local", result
                assert (run.returncode, run.successful, run.failed) == (0, 3, 0), run.output[-3000:]

                async def reported() -> list[dict[str, Any]] | None:
                    found = node_b.calls()
                    return found if len(found) >= 4 else None

                reports = await wait_for(reported, "4 calls reported by node B", 60)
                assert [r["end_reason"] for r in reports] == ["caller hung up (Normal call clearing)"] * 4, reports
                log = (standby.run_dir / "kamailio.log").read_text(errors="replace")
                assert "refused" not in log and "Not Here" not in log, log[-3000:]

                async def forgotten() -> bool:
                    return standby.dialogs() == [] and await stored_dialogs(redis.url) == []

                await wait_for(forgotten, "no dialog left at front 2 nor in Redis", 30)
            finally:
                await active.kill()
                await standby.kill()
                assert node_b.stop() == 0, node_b.stderr_tail()


@long_test
async def test_with_the_default_settings_a_restarted_front_carries_the_callers_bye(tmp_path: Path) -> None:
    """No front_dialog* setting, only a plain redis_url: the front keeps its dialogs in that Redis (database 15), so
    the Kamailio started after a SIGKILL knows the live call, and the caller's BYE (no Route, as SIPp's) ends it."""
    with EmbeddedRedis() as redis:
        async with front_node(tmp_path, workers=1, config={"redis_url": redis.url}) as (node, port, health):
            assert health["front"]["dialogs"] == {"store": "redis", "why": "the Redis of redis_url"}
            assert "dialogs in Redis (the Redis of redis_url, database 15)" in node.stderr_tail(20000)
            old_pid = int(health["front"]["pid"])
            call = RawCall(CALLER, (NODE_A, port))
            try:
                assert (await call.start()).status == 200
                (live,) = await wait_for(lambda: answered(node, 1), "the call confirmed at the front", 15)
                stored = await stored_dialogs(redis.url, db=DEFAULT_DIALOG_DB)
                assert [d["callid"] for d in stored] == [call.call_id] == [live["call-id"]]

                os.kill(old_pid, signal.SIGKILL)
                await wait_for(lambda: new_front(node, port, old_pid), "a new front on the address", 30)
                bye = await call.send("BYE")
                assert bye.status == 200, bye
            finally:
                call.close()

            async def reported() -> list[dict[str, Any]]:
                return node.calls()

            (report,) = await wait_for(reported, "the call's report", 15)
            assert report["sip_call_id"] == call.call_id
            assert report["end_reason"] == "caller hung up (Normal call clearing)", report

            async def forgotten() -> bool:
                return not rpc_call(node.front_dir / "rpc.sock", "dlg.list")

            await wait_for(forgotten, "the restarted front's dialog table empty", 30)
            assert await stored_dialogs(redis.url, db=DEFAULT_DIALOG_DB) == []


async def test_with_redis_behind_sentinel_the_front_says_its_dialogs_stay_in_memory_and_why(tmp_path: Path) -> None:
    """db_redis cannot follow a Sentinel: with no front_dialog_url the dialogs stay in Kamailio's memory, and the
    start-up line and /healthz say so, and why (the node starts all the same; its workers need no Redis to)."""
    config = {"redis_url": "redis+sentinel://127.0.0.1:1/nowhere"}
    async with front_node(tmp_path, workers=1, config=config) as (node, _port, health):
        dialogs = health["front"]["dialogs"]
        assert dialogs["store"] == "memory" and "not redis_url's redis+sentinel://" in dialogs["why"], dialogs
        assert f"dialogs in memory only: {dialogs['why']} (a restarted front forgets" in node.stderr_tail(20000)
