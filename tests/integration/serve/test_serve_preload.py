"""Workers forked from serve's preloaded parent (``worker_start: preload``, bridge/serve/zygote.py): each one is
serve's own child, takes a real call, and shares the parent's anonymous pages (the interpreter's heap, numpy's,
pjsua2's) with the other workers, where an exec'd worker shares none. Once every worker is ready the parent is
released (serve's only children are its workers); a worker killed later, or replaced by a rolling restart, is forked
from a new parent, itself released once that worker is ready. The parent ignores the node's control signals. A parent
that cannot be had: one warning, and workers by exec."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from _serve_start import Started, clean_env, port_block
from test_serve_operable import ROOT, caller_wav
from test_serve_stop_drain import phone, summary, wait_for

from bridge.config import Settings
from bridge.devkit.ports import free_port
from bridge.emulator import EmulatorServer
from bridge.serve.pool import Pool
from bridge.serve.zygote import ForkedProcess, Unavailable, Zygote

pytestmark = pytest.mark.timeout(240)
SHARED_AT_LEAST_KB = 20_000  # anonymous pages a forked worker shares (about 70 MB idle; an exec'd worker: 0)


def _rollup(pid: int) -> dict[str, int]:
    """/proc/<pid>/smaps_rollup's kB figures."""
    lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
    return {line.split(":")[0]: int(line.split()[1]) for line in lines}


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _preloaded_parent(serve: int) -> int | None:
    """The child of ``serve`` that runs bridge.serve.zygote."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                if b"bridge.serve.zygote" in cmdline and _parent(int(entry.name)) == serve:
                    return int(entry.name)
            except (OSError, IndexError):
                continue
    return None


async def _health(http_port: int) -> list[dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{http_port}/healthz") as r:
        return list((await r.json(content_type=None))["workers"])


def _children(pid: int) -> set[int]:
    """``pid``'s child processes (every thread's)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


async def test_preloaded_workers_take_a_call_share_pages_and_the_parent_is_released(tmp_path: Path) -> None:
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        sip_port, http_port = port_block(2), free_port()
        args = ["--workers", "2", "--sip-port", str(sip_port), "--realtime-url", emulator.base_url,
                "--dialplans", str(ROOT / "dialplans")]  # fmt: skip
        env = clean_env(CALLBRIDGE_CONTROL_SOCKET=str(tmp_path / "ctl.sock"))
        serve = Started(tmp_path, "serve", [*args, "--http-port", str(http_port)], env, ROOT)
        started = "workers start from a preloaded parent (worker_start: preload)"

        async def released(workers: set[int]) -> bool:
            """No preloaded parent: serve's only children are ``workers``."""
            return _preloaded_parent(serve.proc.pid) is None and _children(serve.proc.pid) == workers

        try:
            health = await serve.ready("127.0.0.1", http_port, workers=2)
            assert serve.stderr(200_000).count(started) == 1
            pids = [int(str(w["pid"])) for w in health["workers"]]
            assert [_parent(pid) for pid in pids] == [serve.proc.pid] * 2  # serve's own children, as exec'd ones
            for i, pid in enumerate(pids):  # and `ps` names them as it names exec'd ones
                words = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
                assert words[1:] == [b"-m", b"bridge.serve.worker", b"--index", str(i).encode()], words
            # every worker ready: the parent is let go, the workers live on
            await wait_for(lambda: released(set(pids)), f"the preloaded parent lives on: {serve.stderr()}", 30)
            assert "the preloaded parent (pid " in serve.stderr(200_000)

            # a real call on each worker
            play = caller_wav(tmp_path / "caller.wav")
            phones = [await phone(sip_port + i, 4.0, play) for i in range(2)]
            for ended in [await summary(p) for p in phones]:
                assert ended["answered"] and ended["sip_status"] == 200 and ended["hangup_by"] == "local", ended

            # their pages: the preloaded ones shared between them (Shared_Dirty: anonymous pages mapped by more than
            # one process), the parent gone
            for pid in pids:
                rollup = _rollup(pid)
                assert rollup["Shared_Dirty"] > SHARED_AT_LEAST_KB, rollup

            # a worker killed: started again from a new parent, which is let go once it is ready; it takes calls
            os.kill(pids[0], signal.SIGKILL)

            async def respawned() -> bool:
                workers = await _health(http_port)
                return workers[0]["pid"] != pids[0] and bool(workers[0]["ready"])

            await wait_for(respawned, "worker 0 was not started again", 60)
            workers = await _health(http_port)
            assert workers[1]["pid"] == pids[1] and workers[1]["alive"]  # the other worker lived on
            assert _parent(int(str(workers[0]["pid"]))) == serve.proc.pid
            assert serve.stderr(200_000).count(started) == 2  # a new parent for it
            after_kill = {int(str(w["pid"])) for w in workers}
            await wait_for(lambda: released(after_kill), f"the new parent lives on: {serve.stderr()}", 30)
            phones = [await phone(sip_port + i, 2.0, play) for i in range(2)]
            assert all(s["answered"] for s in [await summary(p) for p in phones])

            # a rolling restart: the replaced workers come from a parent started for it, let go after
            restart = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bridge", "restart", "--rolling", *args, env=env, cwd=ROOT,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(restart.communicate(), 180)
            assert restart.returncode == 0 and out.decode().splitlines()[-1] == "ok", (out.decode(), err.decode())
            after = [int(str(w["pid"])) for w in await _health(http_port)]
            assert not set(after) & {*pids, *after_kill}
            assert [_parent(pid) for pid in after] == [serve.proc.pid] * 2
            assert serve.stderr(200_000).count(started) >= 3
            await wait_for(lambda: released(set(after)), f"the parent lives on: {serve.stderr()}", 30)
            phones = [await phone(sip_port + i, 2.0, play) for i in range(2)]
            assert all(s["answered"] for s in [await summary(p) for p in phones])
        finally:
            assert serve.stop(120) == 0, serve.stderr()
        assert _preloaded_parent(serve.proc.pid) is None


async def test_the_preloaded_parent_ignores_the_node_signals_and_is_released() -> None:
    zygote = Zygote()
    await zygote.start(clean_env(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"))  # as the pool's workers have it
    try:
        assert zygote.proc is not None
        pid = zygote.proc.pid
        for sig in (signal.SIGUSR1, signal.SIGHUP):  # the node's control signals are not for it
            os.kill(pid, sig)
        await zygote.release(lambda: False)  # not every worker ready: it stays
        assert zygote.alive
        await zygote.release(lambda: True)
        assert not zygote.alive and zygote.proc is None
        assert not Path(f"/proc/{pid}").exists()  # ended and collected
    finally:
        await zygote.close()


async def test_without_a_preloaded_parent_the_workers_start_by_exec(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def refuse(self: Zygote, env: dict[str, str]) -> str:
        raise Unavailable("2 threads (2 Python threads) after the imports")

    monkeypatch.setattr(Zygote, "start", refuse)
    caplog.set_level(logging.INFO)
    pool = Pool(Settings(workers=1, sip_port=0, dialplans=ROOT / "dialplans"))
    await pool.start()
    try:
        await asyncio.wait_for(pool.wait_ready(), 60)
        proc = pool.slots[0].proc
        assert proc is not None and not isinstance(proc, ForkedProcess)
    finally:
        await pool.stop()
    said = [r.getMessage() for r in caplog.records if r.name == "bridge.serve.pool" and r.levelno == logging.WARNING]
    assert said == ["worker_start preload: no preloaded parent (2 threads (2 Python threads) after the imports); "
                    "workers start by exec"], said  # fmt: skip
