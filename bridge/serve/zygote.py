"""Workers forked from a preloaded parent, so that the pages of the interpreter, numpy, pjsua2 and the bridge are
shared between them (copy-on-write) instead of loaded again for every 4 calls (``worker_start: preload``).

The parent is one process, ``python -m bridge.serve.zygote``, started by the pool with the workers' environment.
It imports what every worker imports (:data:`MODULES`, :data:`PACKAGES`: the worker, the SIP gateway and so pjsua2's
module, numpy, websockets, redis), loads the native libraries and builds what every worker would build lazily at its
start (:func:`warm`), but creates no pjsua2 ``Endpoint`` and starts no thread; it checks that (one task in
``/proc/self/task``, pjsua's state ``NULL``) and refuses otherwise, since a fork copies the calling thread alone.
Then it freezes the garbage collector's objects (``gc.freeze``: a collection in a worker never writes to the shared
pages' headers) and waits for requests on a socket pair.

A request is the worker's argument list, its environment and its descriptors (``SCM_RIGHTS``: its stdout pipe, the
settings, ready and control descriptors of ``bridge.serve.pool``). The parent forks a short-lived child that forks
the worker and exits at once, so the worker is re-parented to the pool's process, a child subreaper
(``PR_SET_CHILD_SUBREAPER``): the worker is the pool's child as an exec'd one is, its parent-death signal follows
the pool, its exit status is the pool's to collect (through a pidfd, :class:`ForkedProcess`), and the preloaded
parent's own death touches no worker. The worker waits until the parent has collected the short-lived child (then it
has been re-parented), takes its stdout, environment and signal dispositions as an exec'd worker has them, and runs
``bridge.serve.worker.run`` with the same arguments. Python re-seeds ``random`` after a fork; numpy's global
generator is re-seeded here.

The parent holds no secret (the settings come through the worker's own descriptor), ignores the node's control
signals (``systemctl kill -s USR1`` reaches every process of the unit) and Ctrl-C, and dies with the pool
(parent-death signal, and the end of its socket).

The parent lives only while workers start: once every worker is ready the pool releases it (:meth:`Zygote.release`),
since the pages the workers share stay shared between them and the parent's own copy of the pages it wrote to (its
heap after the imports) is memory for nothing. A worker started later (one that died, a rolling restart's) starts a
new parent first, released again once every worker is ready.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import ctypes
import ctypes.util
import gc
import importlib
import json
import logging
import os
import pkgutil
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger("bridge.serve.pool")

# What a worker runs, imported ahead: the worker and the SIP gateway (pjsua2's module), its argument parser, numpy's
# parts a worker imports lazily (``random``: the re-seed after the fork; ``fft``: the echo guard's first correlation),
# then every module of the packages a call uses (some are imported lazily by the worker: recording, orphans, the
# dialects). A module first imported in a worker costs that worker its objects and the parent pages it writes to
MODULES = ("bridge.serve.worker", "bridge.sip.service", "bridge.cli", "numpy.random", "numpy.fft")
PACKAGES = ("audio", "call", "orchestrator", "privacy", "realtime", "rollout", "runtime", "sip", "store", "tools")
# ...but not the traces' (the OpenTelemetry SDK, an optional extra): loaded only where ``tracing: otlp`` asks for them
# (``also``), so with tracing off no process imports it, and without the extra the parent still starts
TRACING_MODULES = ("bridge.runtime.tracing", "bridge.runtime.calltrace")
READY_WITHIN_S = 60.0  # the parent's imports and checks
REPLY_WITHIN_S = 30.0  # a fork (the parent waits only for the short-lived child, which forks and exits)
REQUEST_MAX = 1 << 20  # bytes of one request (the environment is most of it)
FD_MAX = 8  # descriptors of one request
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
PR_GET_CHILD_SUBREAPER = 37
PJSUA_STATE_NULL = 0  # pjsua_state: the library not created
GO = b"g"  # to a forked worker: it is the pool's child now


class Unavailable(Exception):
    """The preloaded parent cannot be had (it refused, or it could not be started): the pool says why."""


class _Gone(Exception):
    """The parent did not answer a request (it died, or hangs): it is started again."""


# ------------------------------------------------------------------------------------------------ the pool's side
class ForkedProcess(asyncio.subprocess.Process):
    """A worker forked by the preloaded parent and re-parented to this process: what the pool uses of asyncio's
    ``Process`` (``pid``, ``stdout``, ``returncode``, ``wait``, ``send_signal``, ``terminate``, ``kill``). Its exit
    is seen on a pidfd (readable once it has exited) and collected with ``waitpid``; signals go through the pidfd,
    never to a pid that may have been reused."""

    def __init__(self, pid: int, stdout: asyncio.StreamReader, loop: asyncio.AbstractEventLoop) -> None:
        # no asyncio transport: this process was not started by the event loop
        self.pid = pid
        self.stdin = None
        self.stdout = stdout
        self.stderr = None
        self._returncode: int | None = None
        self._event_loop = loop
        self._exited: asyncio.Future[int] = loop.create_future()
        self._pidfd = os.pidfd_open(pid)
        loop.add_reader(self._pidfd, self._collect)

    def __repr__(self) -> str:
        return f"<ForkedProcess {self.pid}>"

    @property
    def returncode(self) -> int | None:  # asyncio's reads its transport
        return self._returncode

    def _collect(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # collected elsewhere: its status is lost (asyncio says 255 then as well)
            pid, status = self.pid, 255 << 8
        if pid == 0:
            return
        self._event_loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        self._returncode = os.waitstatus_to_exitcode(status)
        if not self._exited.done():
            self._exited.set_result(self._returncode)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def send_signal(self, sig: int) -> None:
        if self._pidfd < 0:
            raise ProcessLookupError(f"worker process {self.pid} has exited")
        signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _prctl(option: int, value: int = 0) -> int:
    """prctl(2), or -1 where there is none."""
    if not sys.platform.startswith("linux"):
        return -1
    name = ctypes.util.find_library("c")
    if name is None:
        return -1
    libc = ctypes.CDLL(name, use_errno=True)
    if option == PR_GET_CHILD_SUBREAPER:
        flag = ctypes.c_int(0)
        return int(flag.value) if libc.prctl(option, ctypes.byref(flag), 0, 0, 0) == 0 else -1
    return int(libc.prctl(option, value, 0, 0, 0))


class Zygote:
    """The pool's handle on the preloaded parent: :meth:`start` it, :meth:`fork` workers from it, :meth:`close` it.
    Requests go one at a time; a parent that has died is started again on the next :meth:`fork`."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0  # time.monotonic() of its start: a worker started before it runs older code
        self._sock: socket.socket | None = None
        self._lock = asyncio.Lock()
        self._subreaper_was: int | None = None  # PR_GET_CHILD_SUBREAPER before this process became one
        self._stale = False
        self.also: tuple[str, ...] = ()  # modules the running parent loaded besides its own (``--also``)

    def want(self, modules: Sequence[str]) -> None:
        """The workers need ``modules`` loaded too (the MCP SDK, when a plan has MCP servers): a parent without them
        is replaced at the next fork, so that its workers share them rather than import them each."""
        if tuple(modules) != self.also:
            self.also, self._stale = tuple(modules), True

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and self._sock is not None

    def renew_before(self, started_at: float) -> None:
        """A worker started at ``started_at`` is being replaced (a rolling restart, maybe after an upgrade): if the
        parent is not younger than that worker, the next fork starts a new parent that loads the installed code."""
        if self.started_at <= started_at:
            self._stale = True

    async def start(self, env: dict[str, str]) -> str:
        """Start the parent and wait for its report: a line for the log once it is ready; :class:`Unavailable` with
        the reason otherwise."""
        if not hasattr(os, "pidfd_open") or not hasattr(signal, "pidfd_send_signal"):
            raise Unavailable("this system has no pidfd (Linux 5.3 or later)")
        if self._subreaper_was is None:
            was = _prctl(PR_GET_CHILD_SUBREAPER)
            if was < 0 or _prctl(PR_SET_CHILD_SUBREAPER, 1) != 0:
                raise Unavailable("this process cannot be a child subreaper (prctl PR_SET_CHILD_SUBREAPER)")
            self._subreaper_was = was
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        started = time.monotonic()
        try:
            command = [sys.executable, "-m", "bridge.serve.zygote", "--socket-fd", str(theirs.fileno())]
            command += [arg for module in self.also for arg in ("--also", module)]
            self.proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,  # it prints nothing; each worker gets a stdout of its own
                env=env,
                pass_fds=(theirs.fileno(),),
            )
        except OSError as exc:
            ours.close()
            raise Unavailable(f"it could not be started: {exc}") from None
        finally:
            theirs.close()
        ours.setblocking(False)
        try:
            data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(ours, 65536), READY_WITHIN_S)
        except (TimeoutError, OSError) as exc:
            data = b""
            why = f"no report within {READY_WITHIN_S:.0f} s" if isinstance(exc, TimeoutError) else str(exc)
        else:
            why = f"it exited with {await self.proc.wait()} before its report" if not data else ""
        report = _report(data) if data else {"why": why}
        if not report.get("ready"):
            ours.close()
            await self._end(self.proc)
            raise Unavailable(str(report.get("why") or "it refused"))
        self._sock, self.started_at, self._stale = ours, started, False
        return (
            f"pid {self.proc.pid}: {report.get('modules')} modules and the native libraries loaded in "
            f"{time.monotonic() - started:.1f} s, one thread, pjsua not created"
        )

    async def fork(self, argv: Sequence[str], env: dict[str, str], pass_fds: Sequence[int]) -> ForkedProcess:
        """A worker forked with ``argv`` (its descriptor arguments are ``pass_fds``' numbers here) and ``env``; its
        stdout a pipe whose read end is the process's ``stdout``. A parent that is gone (or stops answering) is
        started again, once per fork; :class:`Unavailable` if that fails, ``OSError`` if the fork itself failed
        (out of processes: the pool backs off and tries again)."""
        async with self._lock:
            for attempt in (1, 2):
                if not self.alive or self._stale:
                    await self._restart(env)
                assert self._sock is not None and self.proc is not None
                try:
                    return await self._request(self._sock, argv, env, pass_fds)
                except _Gone as exc:
                    if attempt == 2:
                        raise Unavailable(f"the preloaded parent, started again, {exc}") from None
                    log.warning("the preloaded parent (pid %d) %s: starting it again", self.proc.pid, exc)
                    await self.close(keep_subreaper=True)
            raise AssertionError("unreachable")

    async def release(self, when: Callable[[], bool]) -> None:
        """End the parent if ``when()`` still holds once no fork is under way (every worker ready: its pages are
        theirs now, and the parent's own copy of the pages it wrote is memory for nothing). The next :meth:`fork`
        starts a new parent first."""
        async with self._lock:
            if self.proc is None or not when():
                return
            pid = self.proc.pid
            await self.close(keep_subreaper=True)
            self.proc = None
        later = "a worker started later starts a new parent first"
        log.info("the preloaded parent (pid %d) released: the workers are ready; %s", pid, later)

    async def _restart(self, env: dict[str, str]) -> None:
        if self.proc is not None:
            if self.proc.returncode is not None and not self._stale:
                parent, rc = self.proc.pid, self.proc.returncode
                log.warning("the preloaded parent (pid %d) exited with %s: starting it again", parent, rc)
            await self.close(keep_subreaper=True)
        line = await self.start(env)
        log.info("workers start from a preloaded parent (worker_start: preload): %s", line)

    async def _request(
        self, sock: socket.socket, argv: Sequence[str], env: dict[str, str], pass_fds: Sequence[int]
    ) -> ForkedProcess:
        loop = asyncio.get_running_loop()
        payload = json.dumps({"argv": list(argv), "env": env, "fds": list(pass_fds), "pool_pid": os.getpid()})
        out_r, out_w = os.pipe()
        try:
            socket.send_fds(sock, [payload.encode()], [out_w, *pass_fds])
            reply = await asyncio.wait_for(loop.sock_recv(sock, 65536), REPLY_WITHIN_S)
        except BaseException as exc:  # no reply, or one that will never be read: this socket is done with
            os.close(out_r)
            self._sock = None
            sock.close()
            if isinstance(exc, TimeoutError):
                raise _Gone(f"did not answer within {REPLY_WITHIN_S:.0f} s") from None
            if isinstance(exc, OSError):
                raise _Gone(f"did not answer ({exc})") from None
            raise
        finally:
            os.close(out_w)
        report = _report(reply) if reply else {}
        if "pid" not in report:
            os.close(out_r)
            if not reply:
                self._sock = None
                sock.close()
                raise _Gone("closed its socket")
            raise OSError(f"the preloaded parent could not fork the worker: {report.get('why')}")
        reader = asyncio.StreamReader(limit=_output_limit(), loop=loop)
        pipe = os.fdopen(out_r, "rb", buffering=0)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe)
        return ForkedProcess(int(str(report["pid"])), reader, loop)

    async def close(self, keep_subreaper: bool = False) -> None:
        """End the parent (the end of its socket; killed if it does not go within 5 s). The workers it started live
        on: they are this process's children."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.proc is not None:
            await self._end(self.proc)
        if not keep_subreaper and self._subreaper_was is not None:
            _prctl(PR_SET_CHILD_SUBREAPER, self._subreaper_was)
            self._subreaper_was = None

    @staticmethod
    async def _end(proc: asyncio.subprocess.Process) -> None:
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def _report(data: bytes) -> dict[str, object]:
    """A message of the parent's: ``ready`` and ``modules`` or ``why`` at start, ``pid`` or ``why`` per request."""
    try:
        report = json.loads(data)
    except ValueError:
        return {"why": f"it said {data[:200]!r}, not JSON"}
    return report if isinstance(report, dict) else {"why": f"it said {data[:200]!r}, not an object"}


def _output_limit() -> int:
    from bridge.serve.ready import OUTPUT_STREAM_LIMIT

    return OUTPUT_STREAM_LIMIT


def reap_orphans(seen: set[int], keep: set[int]) -> set[int]:
    """Collect the zombies among this process's children that were zombies at the last call as well and are not in
    ``keep``: processes re-parented here (this process is a child subreaper) that nobody waits for. Returns the
    zombies seen now, for the next call. A child the event loop waits for is collected at once, never seen twice."""
    zombies: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            for pid in map(int, (task / "children").read_text().split()):
                with contextlib.suppress(OSError, IndexError):
                    if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                        zombies.add(pid)
    for pid in (zombies & seen) - keep:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    return zombies


# ------------------------------------------------------------------------------------------------ the parent's side
def preload(also: Sequence[str] = ()) -> tuple[int, str]:
    """Import what the workers run (and ``also``) and load the native libraries; (modules imported, "" or why no
    fork is safe)."""
    names = [*MODULES, *also]
    for package in PACKAGES:
        module = importlib.import_module(f"bridge.{package}")
        walked = pkgutil.walk_packages(module.__path__, f"{module.__name__}.")
        names += [m.name for m in walked if m.name not in TRACING_MODULES or m.name in also]
    for name in names:
        importlib.import_module(name)
    from bridge.native import build

    for source in build.SOURCES:  # the libraries a worker loads (and checks) itself; mapped here once
        with contextlib.suppress(OSError):
            ctypes.CDLL(str(build.library(source)))
    from bridge.realtime.ws_fastpath import native_tls

    engine = native_tls("localhost")  # the TLS engine loaded and the trust store read (~15 ms) once, for every worker
    if engine is not None:
        engine.close()
    warm()
    return len(sys.modules), unsafe_to_fork()


def warm() -> None:
    """Build here, once, what every worker builds on first use at its start (caches and lazily made tables), so the
    workers share it instead of each making its own copy and writing to the pages around it: the settings'
    validation, a dialplan of every dialect and audio format with its sessions, a tool schema's check (jsonschema's
    meta-schemas and their registry), the packaged price and shutdown tables, the AEAD of the dialog seal (OpenSSL's
    cipher tables). Nothing here reads the environment, a file outside the package or a secret; a failure leaves
    that part to the workers."""
    from jsonschema import Draft202012Validator

    from bridge.config import Settings
    from bridge.rollout import catalog
    from bridge.store.dialogseal import DialogSeal

    schema = {"type": "object", "properties": {"n": {"type": "string", "enum": ["a"]}}, "required": ["n"]}
    steps = (
        lambda: Settings.model_validate({}),  # its arguments only: the environment and files are load_settings'
        _warm_dialplan,
        lambda: Draft202012Validator.check_schema(schema),
        lambda: list(Draft202012Validator(schema).iter_errors({"n": "b"})),
        catalog.load_prices,
        catalog.shutdown_dates,
        lambda: DialogSeal.under(None).seal("warm", "{}"),  # a random key, dropped at once
    )
    for step in steps:
        with contextlib.suppress(Exception):
            step()


def _warm_dialplan() -> None:
    """A rollout plan over every dialect and the audio formats each takes, validated, each variant's session built."""
    from bridge.dialplan import Dialplan
    from bridge.realtime.dialects import DIALECTS

    formats = {"live": ("pcm16_16k",)}
    variants = [
        {"name": f"{name}-{f}", "dialect": name, "model": dialect.default_model, "profile": {"audio_format": f}}
        for name, dialect in DIALECTS.items()
        for f in formats.get(name, ("pcm16", "g711_ulaw", "g711_alaw"))
    ]
    plan = Dialplan.model_validate(
        {
            "name": "warm",
            "match": ["*"],
            "dialect": "rollout",
            "transfer_target": "sip:agent@127.0.0.1",
            "profile": {"tools": ["transfer_to_human", "end_call"]},
            "rollout": {"safe": variants[0]["name"], "variants": variants},
        }
    )
    for variant in plan.rollout_spec.variants if plan.rollout_spec is not None else ():
        with contextlib.suppress(Exception):
            DIALECTS[variant.dialect].build_session(plan.variant_profile(variant))


def unsafe_to_fork() -> str:
    """Why this process must not fork workers ("" when it may): a thread besides this one (a fork copies the calling
    thread alone), or pjsua created."""
    tasks = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    if threading.active_count() != 1 or tasks != 1:
        return f"{tasks} threads ({threading.active_count()} Python threads) after the imports"
    extension = getattr(sys.modules.get("pjsua2._pjsua2"), "__file__", None)  # loaded by the SIP package's imports
    if extension is not None:
        lib = ctypes.CDLL(extension)  # dlopen returns the loaded extension's handle
        if (state := lib.pjsua_get_state()) != PJSUA_STATE_NULL:
            return f"pjsua's state is {state}, not NULL"
    return ""


def _forget_metrics_files() -> None:
    """The metric files the imports made for this process (multiprocess mode): a worker makes its own on first use,
    and this process never counts anything."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        for path in Path(directory).glob(f"*_{os.getpid()}.db"):
            with contextlib.suppress(OSError):
                path.unlink()


def serve_requests(sock: socket.socket) -> None:
    """Fork a worker per request until the pool closes its end."""
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, REQUEST_MAX, FD_MAX)
        except ConnectionError:
            return
        if not data:
            for fd in fds:
                os.close(fd)
            return
        try:
            reply: dict[str, object] = {"pid": _fork_worker(sock, json.loads(data), fds)}
        except Exception as exc:  # the request, or a fork that failed: said to the pool, which logs it
            reply = {"why": f"{type(exc).__name__}: {exc}"}
        finally:
            for fd in fds:
                os.close(fd)
        sock.send(json.dumps(reply).encode())


def _fork_worker(sock: socket.socket, request: dict[str, object], fds: list[int]) -> int:
    """Fork the worker through a short-lived child (the worker is re-parented to the pool); its pid."""
    argv, env, pool_pid = request["argv"], request["env"], request["pool_pid"]
    theirs = request["fds"]
    assert isinstance(argv, list) and isinstance(env, dict) and isinstance(pool_pid, int) and isinstance(theirs, list)
    if len(fds) != len(theirs) + 1:
        raise ValueError(f"{len(fds)} descriptors for {len(theirs)} + stdout")
    here = {str(t): str(f) for t, f in zip(theirs, fds[1:], strict=True)}
    # the descriptor arguments (--settings-fd N and the like) name this process's numbers for the same files
    args = [here.get(a, a) if i and argv[i - 1].endswith("-fd") else a for i, a in enumerate(map(str, argv))]
    go_r, go_w = os.pipe()
    pid_r, pid_w = os.pipe()
    middle = os.fork()
    if middle == 0:  # the short-lived child: fork the worker, say its pid, exit
        code = 1
        try:
            os.close(go_w)
            os.close(pid_r)
            worker = os.fork()
            if worker == 0:
                os.close(pid_w)
                _become_worker(sock, go_r, fds[0], args, {str(k): str(v) for k, v in env.items()}, pool_pid)
            os.write(pid_w, str(worker).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(go_r)
    os.close(pid_w)
    try:
        with os.fdopen(pid_r, "rb") as said:
            text = said.read()
        _, status = os.waitpid(middle, 0)
        if os.waitstatus_to_exitcode(status) != 0 or not text.isdigit():
            raise OSError(f"the fork failed (exit {os.waitstatus_to_exitcode(status)})")
        os.write(go_w, GO)  # the worker goes on: it has been re-parented by now
        return int(text)
    finally:
        os.close(go_w)


def _become_worker(sock: socket.socket, go: int, stdout: int, argv: list[str], env: dict[str, str], pool: int) -> None:
    """In the forked worker: wait until it is the pool's child, take an exec'd worker's state, run it; never
    returns."""
    code = 1
    try:
        sock.close()
        if os.read(go, 1) != GO:  # no word from the parent (it died): the pool never learns of this worker
            os._exit(1)
        os.close(go)
        if os.getppid() != pool:  # the pool is gone: there is nothing to serve
            os._exit(1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.dup2(stdout, 1)
        os.close(stdout)
        os.environ.clear()
        os.environ.update(env)
        _reseed()
        index = argv[argv.index("--index") + 1] if "--index" in argv[:-1] else "?"
        _retitle([sys.executable, "-m", "bridge.serve.worker", "--index", index])
        from bridge.serve.worker import run

        code = run(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _retitle(words: list[str]) -> None:
    """``/proc/<pid>/cmdline`` (``ps``, ``top``) says ``words``, an exec'd worker's command line without its
    descriptor arguments, written over the parent's own (``python -m bridge.serve.zygote --socket-fd N``: room enough;
    Python keeps its own copy of its arguments). Left as it is where it does not fit."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: the stat fields 48 and 49 (proc(5))
        title = "\0".join(words).encode() + b"\0"
        if 0 < start < end and len(title) <= end - start:
            ctypes.memmove(start, title.ljust(end - start, b"\0"), end - start)


def _reseed() -> None:
    """Random state of its own (``random`` re-seeds itself after a fork; numpy's global generator does not)."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.serve.zygote", description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket-fd", type=int, required=True, help="the pool's socket (SOCK_SEQPACKET)")
    parser.add_argument("--also", action="append", default=[], metavar="MODULE", help="a module to load as well")
    args = parser.parse_args(argv)
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGINT):  # the node's, and Ctrl-C: serve's
        signal.signal(sig, signal.SIG_IGN)
    from bridge.runtime.lifetime import die_with_parent

    die_with_parent()
    sock = socket.socket(fileno=args.socket_fd)
    try:
        modules, unsafe = preload(args.also)
    except Exception as exc:
        unsafe, modules = f"{type(exc).__name__} in the imports: {exc}", len(sys.modules)
    _forget_metrics_files()
    if unsafe:
        sock.send(json.dumps({"ready": False, "why": unsafe}).encode())
        return 1
    gc.collect()
    gc.freeze()  # a collection (here or in a worker) leaves the preloaded objects, and their pages, alone
    sock.send(json.dumps({"ready": True, "modules": modules}).encode())
    serve_requests(sock)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
