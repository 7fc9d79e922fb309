"""Several hosts on one machine: Linux network namespaces joined by veth pairs to one bridge, with real addresses
and no traffic leaving the machine (needs root: ``ip netns add``).

* A hub namespace holds the bridge ``br0`` and nothing else; each host is a namespace of its own whose ``eth0`` is
  a veth pair's end, the other end a port of the bridge. Hosts have ``SUBNET.N/24`` addresses and their loopback
  up; the root namespace is not touched (no interface, no route, no address of the lab in it).
* Names are unique per lab (``cblab-<pid><random>-<host>``), so labs started at once (pytest-xdist workers, a lab
  started by hand) never meet. A lab left behind by a process that died is deleted by the next lab's start.
* :meth:`Lab.spawn` starts a process in a host (``ip netns exec``) in a process group of its own; :meth:`Lab.close`
  ends every process in every namespace of the lab (``ip netns pids``, so a process's own children too) and deletes
  the namespaces, whatever happened before.
* Faults: :meth:`Lab.cut` / :meth:`Lab.heal` (a blackhole route inside a host: it cannot reach one address, the rest
  of the network is untouched), :meth:`Lab.link` (a host's link down or up), :meth:`Lab.kill_host` (every process
  of a host at once, as a machine lost).

The test process stays in the root namespace: it reaches a host's TCP services with :meth:`Lab.http_get` (a thread
that enters the host's namespace) and Unix sockets through the file system.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bridge.runtime.service import SyncService

PREFIX = "cblab-"
NETNS_DIR = Path("/run/netns")
SUBNET = "10.77.0"
CLONE_NEWNET = 0x40000000
STOP_GRACE_S = 5.0
T = TypeVar("T")


class LabError(RuntimeError):
    """A namespace, link or address the lab could not set up (the command and its error)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15, check=False)
    if check and done.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done


def unavailable() -> str | None:
    """Why this machine cannot run a lab (not root, no ``ip``, namespaces refused), or None when it can: one
    namespace is really added and deleted."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    name = f"{PREFIX}probe{os.getpid()}{secrets.token_hex(2)}"
    try:
        _ip("netns", "add", name)
    except (OSError, subprocess.SubprocessError, LabError) as exc:
        return f"network namespaces are not available here ({exc})"
    try:
        _ip("-n", name, "link", "set", "lo", "up")
    except LabError as exc:
        return f"network namespaces are not usable here ({exc})"
    finally:
        _ip("netns", "delete", name, check=False)
    return None


@dataclass(frozen=True, slots=True)
class Host:
    """One machine of the lab: its name in the lab, its namespace and its address on the lab's network."""

    name: str
    netns: str
    address: str


def _pids(netns: str) -> list[int]:
    done = _ip("netns", "pids", netns, check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def _kill_all(netns: Sequence[str]) -> None:
    """SIGKILL every process in these namespaces until none is left (a process may fork while it is killed)."""
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        pids = [pid for ns in netns for pid in _pids(ns) if pid != os.getpid()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _owner_alive(name: str) -> bool:
    """A lab namespace's creator (the pid in its name) still runs."""
    found = re.match(rf"{re.escape(PREFIX)}(\d+)x", name)
    if found is None:
        return True  # not a name this module makes: not ours to delete
    try:
        os.kill(int(found.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Delete the namespaces of labs whose process is gone (ended by a SIGKILL, say), their processes first.
    Returns the names deleted."""
    stale = sorted(p.name for p in NETNS_DIR.glob(f"{PREFIX}*")) if NETNS_DIR.is_dir() else []
    stale = [name for name in stale if not _owner_alive(name)]
    _kill_all(stale)
    for name in stale:
        _ip("netns", "delete", name, check=False)
    return stale


def _libc_setns() -> Callable[[int, int], int]:
    libc = ctypes.CDLL(None, use_errno=True)
    setns: Callable[[int, int], int] = libc.setns
    return setns


def in_netns(netns: str, work: Callable[[], T]) -> T:
    """Run ``work`` in a new thread that has entered ``netns`` (only that thread does: setns(2) with CLONE_NEWNET
    changes the calling thread's namespace); its result, or its exception raised here. Blocks until it is done."""
    outcome: Future[T] = Future()

    def target() -> None:
        try:
            fd = os.open(NETNS_DIR / netns, os.O_RDONLY)
            try:
                if _libc_setns()(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            outcome.set_result(work())
        except BaseException as exc:  # handed to the caller
            outcome.set_exception(exc)

    thread = threading.Thread(target=target, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    return outcome.result()


class Lab(SyncService):
    """``with Lab(["front", "node-a", "caller"]) as lab: lab.host("front").address`` -> ``10.77.0.2``. Hosts get
    ``SUBNET.2`` onwards in the order given, or the address of ``addresses[name]`` (a last octet)."""

    def __init__(self, hosts: Sequence[str], *, addresses: dict[str, int] | None = None, subnet: str = SUBNET) -> None:
        if len(set(hosts)) != len(hosts) or not hosts:
            raise ValueError(f"Lab: host names must be given and distinct: {list(hosts)}")
        self.tag = f"{os.getpid()}x{secrets.token_hex(2)}"
        self.hub = f"{PREFIX}{self.tag}-hub"
        self.subnet = subnet
        octets = addresses or {}
        self.hosts = {
            name: Host(name, f"{PREFIX}{self.tag}-{name}", f"{subnet}.{octets.get(name, 2 + i)}")
            for i, name in enumerate(hosts)
        }
        self._made: list[str] = []
        self._procs: list[subprocess.Popen[bytes]] = []

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise KeyError(f"no host {name!r} in this lab (hosts: {', '.join(self.hosts)})") from None

    def address(self, name: str) -> str:
        return self.host(name).address

    @property
    def namespaces(self) -> list[str]:
        return [self.hub, *(h.netns for h in self.hosts.values())]

    def start(self) -> Lab:
        """Create the hub, its bridge and every host on it; a failure deletes what was made and raises LabError."""
        sweep_stale()
        try:
            self._netns(self.hub)
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "br0", "up")
            for index, host in enumerate(self.hosts.values()):
                self._netns(host.netns)
                port = f"p{index}"  # the host's port on the bridge (interface names are at most 15 characters)
                _ip("link", "add", "eth0", "netns", host.netns, "type", "veth", "peer", "name", port, "netns", self.hub)
                _ip("-n", self.hub, "link", "set", port, "master", "br0", "up")
                _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
                _ip("-n", host.netns, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def _netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def spawn(
        self, host: str, args: Sequence[str], *, log: Path | None = None, env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:  # fmt: skip
        """Start ``args`` in ``host``'s namespace, in a process group of its own; output to ``log`` (appended), else
        discarded. :meth:`close` ends it with the rest."""
        out = log.open("ab") if log is not None else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.host(host).netns, *args], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True,
            )  # fmt: skip
        finally:
            if log is not None and not isinstance(out, int):
                out.close()
        self._procs.append(proc)
        return proc

    def command(self, host: str, args: Sequence[str]) -> list[str]:
        """``args`` as a command line that runs them in ``host`` (for asyncio's subprocesses)."""
        return ["ip", "netns", "exec", self.host(host).netns, *args]

    def run(self, host: str, args: Sequence[str], timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``args`` in ``host`` to its end; its output (never raises on a non-zero exit)."""
        return subprocess.run(self.command(host, args), capture_output=True, text=True, timeout=timeout_s, check=False)

    def http_get(self, host: str, url: str, timeout_s: float = 3.0) -> tuple[int, bytes]:
        """GET ``url`` from inside ``host``: (status, body); (0, b"") when nothing answers."""

        def get() -> tuple[int, bytes]:
            try:
                with urllib.request.urlopen(url, timeout=timeout_s) as answer:
                    return int(answer.status), bytes(answer.read())
            except urllib.error.HTTPError as exc:
                return int(exc.code), exc.read()
            except (OSError, ValueError):
                return 0, b""

        return in_netns(self.host(host).netns, get)

    def http_json(self, host: str, url: str) -> dict[str, Any]:
        """The JSON object at ``url`` from inside ``host``; {} when nothing (or no JSON object) answers."""
        _, body = self.http_get(host, url)
        try:
            found = json.loads(body) if body else {}
        except ValueError:
            return {}
        return dict(found) if isinstance(found, dict) else {}

    # -- faults -----------------------------------------------------------------------------------------------------

    def cut(self, host: str, address: str) -> None:
        """``host`` can no longer reach ``address`` (a blackhole route in its namespace); nothing else changes."""
        _ip("-n", self.host(host).netns, "route", "add", "blackhole", f"{address}/32")

    def heal(self, host: str, address: str) -> None:
        """Undo :meth:`cut`."""
        _ip("-n", self.host(host).netns, "route", "del", "blackhole", f"{address}/32")

    def link(self, host: str, up: bool) -> None:
        """``host``'s link to the lab's network down (unreachable, as a pulled cable) or up again."""
        _ip("-n", self.host(host).netns, "link", "set", "eth0", "up" if up else "down")

    def kill_host(self, host: str) -> list[int]:
        """SIGKILL every process in ``host`` at once, as a machine lost; the pids killed."""
        netns = self.host(host).netns
        pids = [pid for pid in _pids(netns) if pid != os.getpid()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _kill_all([netns])
        return pids

    def pids(self, host: str) -> list[int]:
        return _pids(self.host(host).netns)

    # -- teardown ---------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """End every process of the lab (SIGTERM to the ones it spawned, a grace, then SIGKILL to every process in
        its namespaces) and delete the namespaces (their veth pairs and routes go with them). Safe to call twice."""
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        _kill_all(self._made)
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # a child that left the namespace's process list (none should)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1.0)
        self._procs.clear()
        for name in reversed(self._made):
            _ip("netns", "delete", name, check=False)
        self._made.clear()
