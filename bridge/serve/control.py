"""How ``serve`` drains, stops, reloads and replaces its workers, and its local control socket.

* **Stop** (SIGTERM, SIGINT): the front takes the node's workers out, every worker refuses new calls (503) and exits
  once its calls are over; after ``drain_timeout_s`` the calls still up end with a spoken goodbye (ended by
  ``shutdown``); a call still up :data:`END_GRACE_S` after that is hung up. Each step is logged (``draining, N
  call(s)``, ``stopped``).
* **Drain** (SIGUSR1, ``callbridge drain node``) and **resume** (SIGUSR2, ``--undo``): new calls refused (503 at the
  workers, the front takes the node out) or taken again; live calls go on.
* **Reload** (SIGHUP, ``callbridge reload``): the users file (accounts and API tokens), the dialplans (every worker)
  and the HTTP certificate read again; a bad file is refused, named, and the old one stays; no call is touched.
* **Rolling restart** (``callbridge restart --rolling``): one worker at a time drains (the front takes it out),
  exits once its calls are over (after ``drain_timeout_s``: a goodbye, ended by ``drain``), starts again from the
  installed code and settings, and is taken back once ready.

The control socket (``control_socket``; default :func:`control_path`) takes one command a line (``drain``,
``resume``, ``reload``, ``restart``) and answers with progress lines, then ``ok`` or ``error: ...``. It is a Unix
socket of mode 0600: only serve's user (and root) may use it. The workers' side is ``bridge.serve.stopping``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from bridge import events as ev
from bridge.call.limit import GOODBYE_MAX_S
from bridge.config import Settings
from bridge.errors import ConfigError

log = logging.getLogger("bridge.serve.pool")

END_GRACE_S = GOODBYE_MAX_S + 25.0  # after "end": the goodbye's lead and the goodbye itself, then a margin
CLOSE_GRACE_S = 10.0  # after "close": the gateway's hang-ups and the store's last writes
READY_WITHIN_S = 90.0  # a replaced worker must be ready again within this
Say = Callable[[str], None]


class WorkerSlot(Protocol):
    """What this module reads and sets of a pool's slot (``bridge.serve.pool.WorkerSlot``)."""

    index: int
    proc: asyncio.subprocess.Process | None
    calls: int
    replacing: bool
    sip_port: int
    ready: asyncio.Event


class Pool(Protocol):
    """What this module uses of the pool (``bridge.serve.pool.Pool``)."""

    settings: Settings
    http_app: web.Application | None
    tls: ssl.SSLContext | None

    @property
    def slots(self) -> Sequence[WorkerSlot]: ...

    def tell(self, slot: Any, word: str) -> None: ...

    def at_front(self, slots: Sequence[Any], active: bool) -> Awaitable[None]: ...


def control_path(settings: Settings) -> Path:
    """serve's control socket: ``control_socket``, else one per SIP address in the temporary directory."""
    if settings.control_socket is not None:
        return settings.control_socket
    return Path(tempfile.gettempdir()) / f"callbridge-{settings.sip_host}-{settings.sip_port}.ctl"


def _alive(slot: WorkerSlot) -> bool:
    return slot.proc is not None and slot.proc.returncode is None


def _calls(slots: Sequence[WorkerSlot]) -> int:
    return sum(s.calls for s in slots if _alive(s))


async def _until_exited(slots: Sequence[WorkerSlot], within_s: float, say: Say) -> list[WorkerSlot]:
    """Wait until every slot's worker has exited or ``within_s`` passed (each change of the call count said);
    returns those still running."""
    deadline = time.monotonic() + within_s
    last = _calls(slots)
    while (left := [s for s in slots if _alive(s)]) and time.monotonic() < deadline:
        procs = [asyncio.ensure_future(s.proc.wait()) for s in left if s.proc is not None]
        await asyncio.wait(procs, timeout=min(1.0, max(0.0, deadline - time.monotonic())))
        for p in procs:
            p.cancel()
        if (now := _calls(slots)) != last:
            last = now
            say(f"draining, {now} call(s) left")
    return [s for s in slots if _alive(s)]


async def drain_out(pool: Pool, slots: Sequence[WorkerSlot], by: ev.EndedBy, say: Say) -> None:
    """Stop ``slots``' workers without dropping a call (the module docstring); returns once none is running."""
    live = [s for s in slots if _alive(s)]
    for slot in live:  # as the "stop" command (bridge/serve/stopping.py), and heard even on a broken channel
        if slot.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                slot.proc.send_signal(signal.SIGTERM)
    timeout = pool.settings.drain_timeout_s
    say(f"draining, {_calls(live)} call(s) on {len(live)} worker(s); drain_timeout_s {timeout:g}")
    left = await _until_exited(live, timeout, say)
    if left:
        say(f"drain_timeout_s passed: ending {_calls(left)} call(s) with a goodbye (ended by {by})")
        for slot in left:
            pool.tell(slot, f"end {by}")
        left = await _until_exited(left, END_GRACE_S, say)
    if left:
        say(f"{_calls(left)} call(s) still up after their goodbye: hanging up")
        for slot in left:
            pool.tell(slot, "close")
        for slot in await _until_exited(left, CLOSE_GRACE_S, say):
            if slot.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.kill()
                await slot.proc.wait()


async def set_draining(pool: Pool, draining: bool) -> None:
    """The node drained (no new call: 503 at the workers, out at the front) or taking calls again."""
    for slot in pool.slots:
        pool.tell(slot, "drain" if draining else "resume")
    await pool.at_front(pool.slots, not draining)
    log.warning("node %s: %d call(s) go on", "draining" if draining else "taking calls again", _calls(pool.slots))


async def replace_workers(pool: Pool, say: Say) -> None:
    """The rolling restart: each worker in turn drained, stopped, started again and taken back once ready."""
    for slot in pool.slots:
        say(f"worker {slot.index}: draining ({slot.calls} call(s))")
        await pool.at_front([slot], False)
        old = slot.proc
        slot.replacing = True
        await drain_out(pool, [slot], ev.EndedBy.DRAIN, _prefixed(say, f"worker {slot.index}: "))
        deadline = time.monotonic() + READY_WITHIN_S
        while slot.proc is old or not slot.ready.is_set() or not _alive(slot):
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {slot.index} was not ready again within {READY_WITHIN_S:.0f} s")
            await asyncio.sleep(0.1)
        await pool.at_front([slot], True)
        pid = slot.proc.pid if slot.proc is not None else 0
        say(f"worker {slot.index}: replaced (pid {pid}), ready on port {slot.sip_port}")


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The HTTP API's TLS context from ``http_tls_cert`` and ``http_tls_key`` (None without them); a file that
    cannot be loaded raises :class:`ConfigError` naming it."""
    if settings.http_tls_cert is None or settings.http_tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.http_tls_cert, settings.http_tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("settings", "http_tls_cert", f"cannot load {settings.http_tls_cert}: {exc}") from None
    return context


def _prefixed(say: Say, prefix: str) -> Say:
    return lambda line: say(prefix + line)


def reload_http(pool: Pool, say: Say) -> None:
    """The HTTP side of a reload: the users file (accounts, API tokens), the dialplans the console and the API
    know (a rollout plan added since start can be changed and killed at once), and the HTTP certificate."""
    settings = pool.settings
    if pool.http_app is not None:
        from bridge.dialplan import load_dialplans
        from bridge.supervisor.http import SUPERVISOR

        try:
            plans = load_dialplans(settings.dialplans)
        except ConfigError as exc:
            say(f"dialplans not reloaded in the API (the old ones stay): {exc}")
        else:
            pool.http_app[SUPERVISOR].reload_plans(plans)
            say(f"dialplans: the API knows {len(plans)} from {settings.dialplans}")
    if pool.http_app is not None and settings.users_file is not None:
        from bridge.supervisor.http import SUPERVISOR
        from bridge.supervisor.users_watch import reload

        sup = pool.http_app[SUPERVISOR]
        reload(settings.users_file, sup.credentials, sup.sessions)  # logs a refusal itself; the old accounts stay
        say(f"users file {settings.users_file} read")
    if pool.tls is not None and settings.http_tls_cert is not None and settings.http_tls_key is not None:
        try:
            tls_context(settings)  # a bad certificate or key is refused here, before the live context changes
        except ConfigError as exc:
            say(f"HTTP certificate not reloaded (the old one stays): {exc}")
            return
        pool.tls.load_cert_chain(settings.http_tls_cert, settings.http_tls_key)
        say(f"HTTP certificate {settings.http_tls_cert} read")


def reload_node(pool: Pool, say: Say) -> None:
    """SIGHUP: the users file, the HTTP certificate and (in every worker) the dialplans read again."""
    reload_http(pool, say)
    for slot in pool.slots:
        pool.tell(slot, "reload")
    say(f"dialplans: {len(pool.slots)} worker(s) told to read {pool.settings.dialplans} again")


def unlock_signins(pool: Pool, what: str) -> str:
    """``account=NAME source=ADDR`` (either or both): clear those sign-in failures of the console's limits."""
    from bridge.supervisor.console import unlock
    from bridge.supervisor.http import SUPERVISOR

    app = getattr(pool, "http_app", None)
    if app is None:
        raise RuntimeError("no console here (http_port is not set)")
    named = dict(part.partition("=")[::2] for part in what.split())
    who = f"{os.environ.get('USER') or os.getuid()} (control socket)"
    return unlock(app[SUPERVISOR].credentials.limits, named.get("account"), named.get("source"), who)


class ControlServer:
    """serve's control socket (the module docstring)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.path = control_path(pool.settings)
        self._server: asyncio.Server | None = None
        self._restarting = asyncio.Lock()

    async def start(self) -> None:
        if self.path.exists():
            if _answers(self.path):
                raise ConfigError("settings", "control_socket", f"{self.path} is in use by another serve")
            self.path.unlink()
        try:  # systemd's RuntimeDirectory= makes it; without systemd, serve does
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError("settings", "control_socket", f"cannot make {self.path.parent}: {exc}") from exc
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=str(self.path))
        finally:
            os.umask(old)
        log.info("control socket %s (callbridge reload, restart --rolling, drain node)", self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            with contextlib.suppress(OSError):
                self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            log.info("%s", line)
            if not writer.is_closing():
                writer.write(f"{line}\n".encode())

        try:
            word = (await reader.readline()).decode(errors="replace").strip()
            await self.run(word, say)
            say("ok")
        except (RuntimeError, ValueError) as exc:
            say(f"error: {exc}")
        except ConnectionError:
            pass
        finally:
            with contextlib.suppress(ConnectionError, OSError):
                await writer.drain()
                writer.close()

    async def run(self, word: str, say: Say) -> None:
        pool = self.pool
        if word in ("drain", "resume"):
            await set_draining(pool, word == "drain")
        elif word == "reload":
            reload_node(pool, say)
        elif word == "restart":
            if self._restarting.locked():
                raise RuntimeError("a rolling restart is already under way")
            async with self._restarting:
                say(f"rolling restart of {len(pool.slots)} worker(s)")
                await replace_workers(pool, say)
        elif word.startswith("unlock "):  # unlock account=NAME source=ADDR (callbridge users unlock)
            say(unlock_signins(pool, word.removeprefix("unlock ")))
        else:
            raise ValueError(f"unknown command {word!r} (drain, resume, reload, restart, unlock)")


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def ask(settings: Settings, word: str, timeout_s: float | None = None) -> int:
    """Send ``word`` to the serve of ``settings``, print its lines; 0 on ``ok``, 1 otherwise."""
    path = control_path(settings)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except OSError as exc:
            print(f"callbridge: no serve answers on {path} ({exc.strerror or exc}): is it running, with these "
                  "settings (control_socket)?", file=sys.stderr)  # fmt: skip
            return 1
        sock.sendall(f"{word}\n".encode())
        last = ""
        with sock.makefile("r", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                last = line.rstrip("\n")
                print(last, flush=True)
    return 0 if last == "ok" else 1
