"""Losing a worker or a node behind the front: the callers of its calls get a BYE (through the front, which releases
their load), no new INVITE goes unanswered, and new calls go to the workers that are left. A dead node's workers are
out of the dispatcher within 5 s."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from _front import (
    NODE_A,
    ROOT,
    Node,
    front_node,
    heavy,
    long_test,
    port_block,
    requirements,
    sipp,
    sipp_dir,
    two_nodes,
    wait_for,
)

from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.emulator import EmulatorServer
from bridge.serve.front import FRONT_NICE
from bridge.serve.lost import END_REASON
from bridge.store import keys

pytestmark = [*requirements, heavy, pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary")]
CALLER_WAV = ROOT / "bridge" / "assets" / "caller_hours.wav"


async def softphone(host: str, port: int, seconds: float) -> dict[str, Any]:
    """A pjsua2 caller (``callbridge call``) that hangs up after ``seconds`` unless the other side does first."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "call", f"sip:1000@{host}:{port}", "--play", str(CALLER_WAV), "--loop",
        "--hangup-after", str(seconds), "--json", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


async def live_calls(redis: aioredis.Redis, worker: str) -> set[str]:
    return set(await redis.smembers(keys.worker_calls(worker)))


# the killed worker's test: its call's BYE comes within a second or two of the kill, a few seconds into the calls
KILLED_CALL_S = 12.0


@long_test
async def test_a_killed_workers_callers_get_a_bye_and_no_new_invite_goes_unanswered(tmp_path: Path) -> None:
    work = sipp_dir(tmp_path)
    with EmbeddedRedis() as server:
        client = aioredis.from_url(server.url, decode_responses=True)
        async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
            port = port_block(3)
            node = Node(
                tmp_path, "a", host=NODE_A, sip_port=port, workers=2, realtime_url=emulator.base_url,
                redis_url=server.url, front=True,
            )  # fmt: skip
            try:
                health = await node.up()
                workers = node.worker_addresses(health)
                # two calls, the second once the first is up: the call load puts it on the other worker
                phones = [asyncio.create_task(softphone(NODE_A, port, KILLED_CALL_S))]

                async def one_up() -> bool:
                    return sum([len(await live_calls(client, w)) for w in workers]) == 1

                await wait_for(one_up, "the first call up", 20)
                phones.append(asyncio.create_task(softphone(NODE_A, port, KILLED_CALL_S)))

                async def one_each() -> dict[str, set[str]] | None:
                    live = {w: await live_calls(client, w) for w in workers}
                    return live if all(len(c) == 1 for c in live.values()) else None

                live = await wait_for(one_each, "one live call per worker", 20)
                (victim_call,) = live[workers[1]]
                (survivor_call,) = live[workers[0]]
                await wait_for(lambda: _has_dialog(client, victim_call), "the victim call's dialog in Redis", 10)

                os.kill(health["workers"][1]["pid"], signal.SIGKILL)
                # new calls right away: none unanswered (one aimed at the dead worker fails over to the other)
                fresh = await sipp(work, f"{NODE_A}:{port}", calls=4, rate=4, scenario="uac_short.xml")
                assert (fresh.successful, fresh.failed) == (4, 0), fresh.output[-3000:]

                # one caller is hung up on (by the serve process, from the dialog kept in Redis), the other goes on
                # to its own end: told apart by how they ended, as the callers see it
                results = sorted(await asyncio.gather(*phones), key=lambda r: float(r["duration_s"]))
                victim, survivor = results
                # the node's log says what the pool did of the dead worker's calls when this does not hold
                assert victim["answered"] and victim["hangup_by"] == "remote", f"{results}\n{node.stderr_tail(8000)}"
                assert victim["duration_s"] < KILLED_CALL_S - 5, results
                assert survivor["hangup_by"] == "local" and survivor["duration_s"] >= KILLED_CALL_S - 1, results
                # ... and the call that ended early is the dead worker's, by its record
                assert await client.hget(keys.call(victim_call), "end_reason") == END_REASON
                assert await client.hget(keys.call(survivor_call), "end_reason") != END_REASON

                # that BYE went through the front: the dead worker's load is released too
                async def unloaded() -> bool:
                    return all(d.load == 0 for d in node.states().values())

                await wait_for(unloaded, "every load released", 10)
            finally:
                await client.aclose()
                rc = node.stop()
            assert rc == 0, node.stderr_tail()


@long_test
async def test_a_dead_node_is_out_within_5_s_and_its_callers_get_a_bye_from_the_other_node(tmp_path: Path) -> None:
    work = sipp_dir(tmp_path)
    with EmbeddedRedis() as server:
        client = aioredis.from_url(server.url, decode_responses=True)
        async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
            node_a, node_b, a_port = two_nodes(tmp_path, emulator.base_url, server.url)
            try:
                health_b = await node_b.up()
                workers_b = node_b.worker_addresses(health_b)
                workers_a = node_a.worker_addresses(await node_a.up())
                # put two calls on node B: drain node A meanwhile
                node_a.signal(signal.SIGUSR1)
                await wait_for(lambda: _states(node_a, workers_a, "D"), "node A drained", 10)
                phones = [asyncio.create_task(softphone(NODE_A, a_port, 90.0)) for _ in range(2)]

                async def on_b() -> set[str] | None:
                    calls = set().union(*[await live_calls(client, w) for w in workers_b])
                    return calls if len(calls) == 2 else None

                b_calls = await wait_for(on_b, "two live calls on node B", 20)
                for call_id in b_calls:
                    await wait_for(lambda c=call_id: _has_dialog(client, c), "the calls' dialogs in Redis", 10)
                node_a.signal(signal.SIGUSR2)
                await wait_for(lambda: _states(node_a, workers_a, "A"), "node A active again", 10)

                # node B dies at once, as a machine does: its serve process is frozen (so nothing restarts the
                # workers, and they get no parent-death signal to hang up cleanly), the workers are killed, then serve
                node_b.proc.send_signal(signal.SIGSTOP)
                for w in health_b["workers"]:
                    os.kill(w["pid"], signal.SIGKILL)
                node_b.proc.kill()
                killed_at = time.monotonic()
                fresh = asyncio.create_task(sipp(work, f"{NODE_A}:{a_port}", calls=4, rate=4, scenario="uac_short.xml"))
                await wait_for(lambda: _states(node_a, workers_b, "I"), "node B's workers out", 10, every_s=0.1)
                assert time.monotonic() - killed_at <= 5.0

                # no INVITE went unanswered, and node A took them all
                result = await fresh
                assert (result.successful, result.failed) == (4, 0), result.output[-3000:]

                async def four_on_a() -> list[dict[str, Any]] | None:
                    calls = [r for r in node_a.calls() if r["sip_call_id"] in result.call_ids]
                    return calls if len(calls) == 4 else None

                await wait_for(four_on_a, "the new calls reported by node A", 15)

                # node B's callers: hung up on by node A's reaper once B's heartbeat expired, through the front
                b_sip_ids = {await _sip_call_id(client, c) for c in b_calls}
                for phone in await asyncio.gather(*phones):
                    assert phone["call_id"] in b_sip_ids
                    assert phone["answered"] and phone["hangup_by"] == "remote", phone
                    assert phone["duration_s"] < 85, phone
                for call_id in b_calls:
                    assert await client.hget(keys.call(call_id), "end_reason") == "worker died"

                async def b_unloaded() -> bool:
                    states = node_a.states()
                    return all(states[w].load == 0 for w in workers_b)

                await wait_for(b_unloaded, "node B's load released by those BYEs", 10)
            finally:
                await client.aclose()
                rc_a = node_a.stop()
                node_b.stop()
            assert rc_a == 0, node_a.stderr_tail()


async def _sip_call_id(client: aioredis.Redis, call_id: str) -> str:
    """The caller's own Call-ID of the bridge's call ``call_id`` (what the softphone reports)."""
    return str(await client.hget(keys.call(call_id), "sip_call_id"))


async def _has_dialog(client: aioredis.Redis, call_id: str) -> bool:
    return bool(await client.hget(keys.call(call_id), "sip_dialog"))


async def _states(node: Node, workers: list[str], state: str) -> bool:
    states = node.states()
    return all(states[w].state == state for w in workers)


@long_test
async def test_a_worker_refusing_a_call_the_front_counted_room_for_is_out_and_the_call_goes_to_one_with_room(
    tmp_path: Path,
) -> None:
    """A worker's slots can hold calls the front did not count (another front's, or two of Kamailio's processes
    giving it its last slot at once): its 486 takes it out until it answers OPTIONS, and the call goes to the worker
    with room, chosen by the load as it is then."""
    work = sipp_dir(tmp_path)
    # the direct caller named: behind its front, a worker answers no local process it was not told of
    async with front_node(tmp_path, config={"sip_allowed_sources": ["127.0.0.1/32"]}) as (node, port, health):
        workers = node.worker_addresses(health)
        full, spare = workers
        # four calls straight to one worker, past the front: it is full, and the front counts it empty
        direct = asyncio.create_task(sipp(work, full, calls=4, rate=10))

        async def four_up() -> bool:
            assert not direct.done(), (await direct).output[-3000:]
            return await node.metric("callbridge_calls_active") == 4.0

        await wait_for(four_up, "four direct calls up on one worker", 20)
        assert {a: d.load for a, d in node.states().items()} == {full: 0, spare: 0}

        # two calls at once through the front (2 s each): the call load sends one of them to the full worker;
        # both are answered, both by the worker with room
        front = await sipp(work, f"{NODE_A}:{port}", calls=2, rate=10, scenario="uac_short.xml")
        assert (front.successful, front.failed) == (2, 0), front.output[-3000:]

        pattern = r"worker sip:(\S+) refused INVITE \S+ with (\d+): out until it answers OPTIONS"

        async def refusal_logged() -> bool:  # serve pumps Kamailio's log into the file a moment after the line
            return bool(re.search(pattern, (node.front_dir / "kamailio.log").read_text(errors="replace")))

        with contextlib.suppress(TimeoutError):  # the assertion below shows the log
            await wait_for(refusal_logged, "the worker's refusal logged", 10)
        log = (node.front_dir / "kamailio.log").read_text(errors="replace")
        refusals = re.findall(pattern, log)
        assert refusals and set(refusals) == {(full, "486")}, log[-3000:]

        async def two_reports() -> list[dict[str, Any]] | None:
            found = [r for r in node.calls() if r["end_reason"].startswith("caller hung up")]
            return found if len(found) >= 2 else None

        reports = await wait_for(two_reports, "both front calls reported", 15)
        assert sorted(r["sip_call_id"] for r in reports[:2]) == front.call_ids
        assert {r["worker"] for r in reports[:2]} == {workers.index(spare)}

        # the refuser is back as soon as it answers a probe
        async def back() -> bool:
            return node.states()[full].state == "A"

        await wait_for(back, "the refusing worker active again", 5)
        result = await direct
        assert (result.successful, result.failed) == (4, 0), result.output[-3000:]


def _process_group(pgid: int) -> dict[int, int]:
    """pid -> niceness of every process in the process group ``pgid`` (/proc/PID/stat: pgrp, nice)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid:  # after the name: state, ppid, pgrp, ... nice is the 17th
                found[int(entry.name)] = int(fields[16])
    return found


async def test_a_worker_that_answers_a_call_late_keeps_it_and_no_other_worker_gets_it(tmp_path: Path) -> None:
    """Workers stalled for 3 s (a burst of set-ups on a full machine, a long pause) answer a call late. The front
    waits for a worker's first answer to an INVITE longer than for a probe's (5 s against 2 s), so it neither takes
    the late worker out nor sends the call to another one meanwhile, which the late one could still answer too."""
    work = sipp_dir(tmp_path)
    pids: list[int] = []

    def resume() -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    async with front_node(tmp_path) as (node, port, health):
        try:
            # Kamailio's processes run ahead of the workers' fair share where the front may ask for it (root here)
            group = _process_group(int(health["front"]["pid"]))
            assert len(group) >= 3, group  # the main process and its SIP and timer processes
            expected = FRONT_NICE if os.geteuid() == 0 else os.getpriority(os.PRIO_PROCESS, 0)
            assert set(group.values()) == {expected}, group
            pids = [int(w["pid"]) for w in health["workers"]]
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            call = asyncio.create_task(sipp(work, f"{NODE_A}:{port}", calls=1, scenario="uac_short.xml"))
            await asyncio.sleep(3.0)  # the stall itself: the workers are stopped, there is nothing to wait for
            resume()
            result = await call
            assert (result.successful, result.failed) == (1, 0), result.output[-3000:]

            async def one_report() -> list[dict[str, Any]] | None:
                found = [r for r in node.calls() if r["end_reason"].startswith("caller hung up")]
                return found or None

            reports = await wait_for(one_report, "the call reported", 15)
            assert [r["sip_call_id"] for r in reports] == result.call_ids
            log = (node.front_dir / "kamailio.log").read_text(errors="replace")
            assert "did not answer INVITE" not in log, log[-3000:]
        finally:
            resume()
    # the other worker never saw the call: one report in all, and no call of another Call-ID
    assert len(node.calls()) == 1, node.calls()
