"""Which ports a process tree listens on: every TCP socket in LISTEN and every unconnected UDP socket (a socket that
receives from anyone: SIP, RTP, a Redis or HTTP server's) that a process of the tree holds, sampled from ``/proc``
while the tree runs. A test that gives a command ``CALLBRIDGE_PORT_RANGE`` asserts with it that nothing the command
started listened outside the range (client sockets, connected, take the kernel's ephemeral ports and are not
counted)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from bridge.devkit.ports import PORT_RANGE_ENV, port_range

PROC = Path("/proc")
TCP_LISTEN = "0A"  # /proc/net/tcp's st column


@dataclass(frozen=True, order=True)
class Listening:
    """One listening socket: its protocol (tcp, udp, tcp6, udp6), local port, and the command line and pid of the
    process holding it."""

    proto: str
    port: int
    command: str = field(compare=False)
    pid: int = field(compare=False, default=0)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def tree(root: int) -> list[int]:
    """``root`` and every process below it, now."""
    seen, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.append(pid)
            todo += _children(pid)
    return seen


def _inodes(pid: int) -> set[str]:
    out: set[str] = set()
    try:
        fds = list((PROC / str(pid) / "fd").iterdir())
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def _table(proto: str) -> dict[str, int]:
    """inode -> local port of the listening sockets in ``/proc/net/<proto>``."""
    out: dict[str, int] = {}
    try:
        lines = (PROC / "net" / proto).read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        cols = line.split()
        local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
        remote_port = int(remote.rsplit(":", 1)[1], 16)
        if (state == TCP_LISTEN) if proto.startswith("tcp") else remote_port == 0:
            out[inode] = int(local.rsplit(":", 1)[1], 16)
    return out


def listening(root: int) -> set[Listening]:
    """The listening sockets the tree under ``root`` holds now."""
    tables = {proto: _table(proto) for proto in ("tcp", "tcp6", "udp", "udp6")}
    found: set[Listening] = set()
    for pid in tree(root):
        inodes = _inodes(pid)
        if not inodes:
            continue
        try:
            command = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            command = "?"
        for proto, table in tables.items():
            found |= {Listening(proto, table[i], command.strip()[:200], pid) for i in inodes & table.keys()}
    return found


class Sampler:
    """``with Sampler(pid) as s: ...``: samples :func:`listening` every ``every_s`` until the block ends;
    ``s.seen`` holds every socket seen."""

    def __init__(self, root: int, every_s: float = 0.05) -> None:
        self.root = root
        self.every_s = every_s
        self.seen: set[Listening] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen |= listening(self.root)
            self.samples += 1
            self._stop.wait(self.every_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def outside(seen: set[Listening], low: int, high: int) -> list[Listening]:
    """The sockets in ``seen`` whose port is not within ``low``-``high``."""
    return sorted(s for s in seen if not low <= s.port <= high)


def worker_range() -> tuple[int, int]:
    """1000 ports: the first of this pytest worker's own range (``tests/conftest.py``), or 42000-42999 outside xdist."""
    low, high = port_range() or (42000, 42999)
    return low, min(high, low + 999)


def run_in_range(module_args: list[str], cwd: Path, timeout: float) -> tuple[subprocess.CompletedProcess[str], Sampler]:
    """``python -m`` ``module_args`` with ``CALLBRIDGE_PORT_RANGE`` set to :func:`worker_range`, to its end (killed
    after ``timeout``), every socket its process tree listened on sampled meanwhile."""
    low, high = worker_range()
    proc = subprocess.Popen(
        [sys.executable, "-m", *module_args],
        cwd=cwd,
        env={**os.environ, PORT_RANGE_ENV: f"{low}-{high}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    with Sampler(proc.pid) as sockets:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        finally:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), sockets
