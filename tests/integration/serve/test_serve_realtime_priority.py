"""`callbridge serve --realtime-priority N`: every thread of every worker runs SCHED_RR, the event loop and
pjmedia's clock thread at N during a call, the serve process itself stays ordinary, /healthz says what each worker
got, and the worker carries calls. Where the privilege is missing, the worker says
why and carries calls with ordinary scheduling (no crash, no silent downgrade)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_serve_operable import ROOT, TOKEN, Serve, api, caller_wav, softphone, stop_serve, wait_healthy

from bridge.devkit.ports import free_port
from bridge.emulator import EmulatorServer


def _realtime_permitted(priority: int) -> bool:
    """Whether this machine lets a process take SCHED_RR at ``priority`` (root, CAP_SYS_NICE or an rtprio limit)."""
    code = f"import os; os.sched_setscheduler(0, os.SCHED_RR, os.sched_param({priority}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def _thread_policies(pid: int) -> dict[str, tuple[int, int]]:
    """``{"<tid> <name>": (policy, priority)}`` for every thread of ``pid``; the event loop's tid is the pid."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        out[f"{tid} {name}"] = (os.sched_getscheduler(int(tid)), os.sched_getparam(int(tid)).sched_priority)
    return out


async def _frames_flowing(emulator: EmulatorServer, call: asyncio.Task[object]) -> None:
    """Until the caller's audio reaches the model (the call answered, the media clock thread running), or the call
    is over (then the assertions say what was missing)."""
    while not call.done():
        sessions = list(emulator.sessions)
        timeline = list(sessions[0].timeline) if sessions else []
        if sum(1 for _t, d, k in timeline if d == "in" and k == "input_audio_buffer.append") >= 5:
            return
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("priority", [0, 7])
async def test_workers_take_the_realtime_priority_asked_for_and_carry_calls(tmp_path: Path, priority: int) -> None:
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        sip_port, http_port = free_port(), free_port()
        flag = ["--realtime-priority", str(priority)] if priority else []
        proc = subprocess.Popen(  # noqa: ASYNC220 (a long-lived server; stopped synchronously below)
            [sys.executable, "-m", "bridge", "serve", "--workers", "1", "--sip-port", str(sip_port),
             "--realtime-url", emulator.base_url, "--http-port", str(http_port),
             "--dialplans", str(ROOT / "dialplans"), *flag],
            env={**os.environ, "CALLBRIDGE_SUPERVISOR_TOKEN": TOKEN},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        serve = Serve(proc, sip_port, http_port, tmp_path / "unused.jsonl")
        try:
            await wait_healthy(serve)
            _, health = await api("/healthz", serve)
            (worker,) = health["workers"]
            assert os.sched_getscheduler(proc.pid) == os.SCHED_OTHER  # only the workers, never the supervisor
            idle = _thread_policies(worker["pid"])
            call = asyncio.create_task(softphone(serve, "1000", caller_wav(tmp_path / "c.wav"), seconds=4.0))
            await _frames_flowing(emulator, call)  # answered, its media clock ticking: it has set its priority
            during = _thread_policies(worker["pid"])
            phone = await call
            loop_thread = next(t for t in during if t.split()[0] == str(worker["pid"]))
            clock_thread = next(t for t in during if t.endswith(" clock"))  # pjmedia names its clock thread
            if priority == 0:
                assert worker["scheduling"] == "ordinary"
                assert {policy for policy, _ in idle.values()} == {os.SCHED_OTHER}, idle
                assert during[loop_thread] == (os.SCHED_OTHER, 0), during
                if _realtime_permitted(1):  # ordinary worker, real-time clock (lowest priority), as before
                    assert during[clock_thread] == (os.SCHED_RR, 1), during
            elif _realtime_permitted(priority):
                assert worker["scheduling"] == f"SCHED_RR {priority}"
                # every thread inherits it (pjmedia first raises its clock thread to the policy's top) ...
                assert all(policy == os.SCHED_RR and prio >= priority for policy, prio in idle.values()), idle
                # ... and in a call the loop and the clock that feeds it run at the same priority: neither can
                # delay the other, both come before every ordinary process
                assert during[loop_thread] == during[clock_thread] == (os.SCHED_RR, priority), during
            else:
                assert worker["scheduling"].startswith(f"ordinary (realtime priority {priority} asked for: not"), worker
                assert {policy for policy, _ in during.values()} == {os.SCHED_OTHER}, during

            assert phone["answered"] and phone["sip_status"] == 200, phone
            (session,) = emulator.sessions
            appended = [k for _t, d, k in list(session.timeline) if d == "in" and k == "input_audio_buffer.append"]
            assert len(appended) > 50, len(appended)  # > 1 s of the caller's audio reached the model
        finally:
            stop_serve(proc)
