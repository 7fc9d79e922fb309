"""The machine under the benchmark: CPU time from ``/proc``, and the child processes a step starts and stops."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT_S = 15.0  # from SIGTERM to SIGKILL
T = TypeVar("T")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (/proc/<pid>/stat fields 14 and 15), 0 if it is gone."""
    return cpu_by_pid([pid]).get(pid, 0.0)


def _per_pid(pids: list[int], name: str, parse: Callable[[str], T | None]) -> dict[int, T]:
    """``parse`` of ``/proc/<pid>/<name>`` for each process still there (a pid that is gone, or whose file says
    nothing, is absent)."""
    out: dict[int, T] = {}
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/{name}").read_text()
        except OSError:
            continue
        value = parse(text)
        if value is not None:
            out[pid] = value
    return out


def _cpu_of_stat(text: str) -> float:
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _pss_of_rollup(text: str) -> int | None:
    found = next((line.split()[1] for line in text.splitlines() if line.startswith("Pss:")), None)
    return None if found is None else int(found)


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """CPU seconds of each process still there (a pid that is gone is absent, not 0)."""
    return _per_pid(pids, "stat", _cpu_of_stat)


def cpu_by_thread(pids: list[int]) -> dict[tuple[int, int, str], float]:
    """CPU seconds of each thread of each process still there, by (pid, tid, thread name): the name is the
    thread's ``comm`` (pjsua's ``clock`` and ``media``, Python's main thread as ``python``)."""
    out: dict[tuple[int, int, str], float] = {}
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except OSError:
                continue
            out[(pid, tid, text[text.index("(") + 1 : text.rindex(")")])] = _cpu_of_stat(text)
    return out


def pss_kb_by_pid(pids: list[int]) -> dict[int, int]:
    """Proportional set size of each process still there, in kB (/proc/<pid>/smaps_rollup: every page counted
    once, shared pages split among the processes that map them, so the sum over processes is what they take)."""
    return _per_pid(pids, "smaps_rollup", _pss_of_rollup)


def preload_parents(pids: list[int]) -> list[int]:
    """The preloaded parents (``bridge.serve.zygote``) the workers ``pids`` were forked from: what they share pages
    with and what is there to fork the next one, so a worker's memory is counted with them "all in". A worker is
    forked through a short-lived middle process and adopted by the pool (a child subreaper), so the parent is found
    as the worker's parent or as a child of it."""
    pools = {ppid for ppid in map(_parent, pids) if ppid is not None}
    found = {pid for pid in pools if _is_zygote(pid)}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _parent(int(entry.name)) in pools and _is_zygote(int(entry.name)):
            found.add(int(entry.name))
    return sorted(found - set(pids))


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _is_zygote(pid: int) -> bool:
    try:
        return b"bridge.serve.zygote" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def run_time_s(pids: list[int]) -> float:
    """Time on a CPU of the processes still there, to the nanosecond (/proc/<pid>/schedstat, first field; the
    clock-tick resolution of /proc/<pid>/stat is far coarser than a proxy's work on a few calls)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    return total / 1e9


def machine_busy(stat: str | None = None) -> tuple[float, float, float]:
    """(busy, steal, total) jiffies of all CPUs from /proc/stat (or ``stat``, its text). Busy includes steal:
    time the hypervisor ran something else while this machine's virtual CPUs had work."""
    text = Path("/proc/stat").read_text() if stat is None else stat
    values = [int(v) for v in text.splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    steal = values[7] if len(values) > 7 else 0
    return float(sum(values) - idle), float(steal), float(sum(values))


def process_tree(root: int) -> list[int]:
    """``root`` and every descendant (Kamailio forks its workers from one main process)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        tree += children
        frontier = children
    return tree


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """Point fd 2 at ``path`` while child processes are spawned, so their logs go there, not into the table."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


async def spawn_role(*args: str, stdin: bool = False) -> asyncio.subprocess.Process:
    """This benchmark in another process (``python -m bench.calls ARGS``), its stdout piped to us."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.calls",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=None,
        env=child_env(),
        cwd=str(ROOT),
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
