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

from _front import NODE_A, ROOT, Node, front_node, heavy, long_test, requirements, wait_for

from bridge.serve.front import RESTART_BACKOFF_S, FrontError, group_members, options_status, rpc_call

pytestmark = [*requirements, heavy]
CALLER_WAV = ROOT / "bridge" / "assets" / "caller_hours.wav"


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


async def answered(node: Node) -> list[dict[str, Any]]:
    return confirmed_dialogs(node)


async def new_front(node: Node, port: int, old_pid: int) -> int | None:
    """The pid of a front other than ``old_pid`` that answers OPTIONS on the address, or None."""
    front = (await node.health()).get("front") or {}
    if front.get("pid") in (None, old_pid) or not front.get("alive"):
        return None
    return int(front["pid"]) if await options_status(NODE_A, port, 0.5, local_host=NODE_A) == 200 else None


@long_test
async def test_a_sigkilled_kamailio_is_replaced_on_its_address_and_nothing_of_its_group_is_left(tmp_path: Path) -> None:
    async with front_node(tmp_path, workers=1) as (node, port, health):
        old_pid = int(health["front"]["pid"])
        assert os.getpgid(old_pid) == old_pid  # a session of its own: the group is the front
        phone = asyncio.create_task(softphone(port, 20.0))
        try:
            await wait_for(lambda: answered(node), "the call answered through the front", 30)
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
        finally:
            result = await phone
        assert result["answered"], result


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False
