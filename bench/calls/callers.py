"""The benchmark's other processes: load callers (both paths) and the ceiling's loopback apps.

Each runs ``python -m bench.calls --role caller|loopback``; the pjsua2 side of both is
:mod:`bridge.sip.loadcall`. What they say on stdout, a JSON object a line:

- a load caller: ``{"ready": true}`` once booted; it then reads ``{"start_at", "end_at"}`` (CLOCK_MONOTONIC,
  the same for every process) from stdin, places its calls at once, snapshots their stream stats at both ends of
  the window, hangs up and prints ``{"calls": [row, ...]}``;
- a loopback app: ``{"loopback": PORT, "max_calls": N, "scheduling": "..."}`` once it answers; it runs until
  SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.calls.machine import spawn_role, stderr_to, stop
from bench.calls.report import Step
from bridge.audio.echo import Guard
from bridge.devkit.ports import RTP_PORTS_PER_WORKER, free_port_block, listen_port, rtp_block
from bridge.runtime.sched import describe

CALLS_PER_PROCESS = 4  # the pjsua2 wheel's cap per process (bridge/sip/endpoint.py reads it back at run time)
# From placing the calls to the window's start: calls answered (the bridge answers once its Realtime session is
# ready), agent audio playing, jitter buffers settled. The load callers boot first and place their calls together
# only once every one of them is up: booting a Python + pjsua2 process costs about a CPU-second, and 40 of them
# booting inside this time on 2 cores would measure the phones' boot against the
# system under test's load, not the system's capacity.
SETUP_S = 4.5
BOOT_TIMEOUT_S = 180.0  # for every load caller to be up (they boot together, about a CPU-second each)
LOOPBACK_READY_S = 30.0  # for one loopback app to answer
RESULT_TIMEOUT_S = 30.0  # for a load caller's rows once the window has closed
AUDIO_DELTA = "response.output_audio.delta"  # the GA dialect's audio delta: what the duplex ceiling's sink sends


@dataclass(frozen=True)
class RolePorts:
    """Where a load caller or loopback app listens, as its ``--port``, ``--tls-port``, ``--rtp-port`` and
    ``--rtp-port-range`` say (:class:`bridge.sip.loadcall.LoadCaller`'s and ``LoopbackCallee``'s ports; 0: any)."""

    port: int = 0  # SIP over UDP
    tls_port: int = 0  # SIP over TLS (a load caller of sips: URIs)
    rtp_port: int = 0  # its calls' RTP: rtp_port_range ports from this one
    rtp_port_range: int = 0

    @classmethod
    def pick(cls, port: int = 0, tls: bool = False) -> RolePorts:
        """A role's ports from ``CALLBRIDGE_PORT_RANGE`` when that is set (bridge/devkit/ports.py): SIP ``port`` or
        one of the range, a TLS one if ``tls``, and :data:`RTP_PORTS_PER_WORKER` RTP ports (RTP and RTCP of the
        wheel's 4 calls, twice over, as a worker's; the pair after them kept too: pjsua may take it). Without it
        ``port`` and 0 for the rest: any free ports, pjsua's pick for RTP."""
        rtp = rtp_block(RTP_PORTS_PER_WORKER + 2)
        return cls(
            port=port or listen_port(),
            tls_port=listen_port() if tls else 0,
            rtp_port=rtp,
            rtp_port_range=RTP_PORTS_PER_WORKER if rtp else 0,
        )

    def args(self) -> list[str]:
        """As the role's command-line flags (``bench/calls/cli.py``)."""
        return [
            *("--port", str(self.port), "--tls-port", str(self.tls_port)),
            *("--rtp-port", str(self.rtp_port), "--rtp-port-range", str(self.rtp_port_range)),
        ]


# ------------------------------------------------------------------------------------------------------------
# In the subprocesses


async def run_caller(
    uris: list[str],
    play: Path,
    srtp: str = "off",
    tls_ca: str = "",
    record: Path | None = None,
    ports: RolePorts | None = None,
) -> dict[str, Any]:
    """One load caller: boot, say it is ready, read the window, place the calls, snapshot their stream stats at
    both ends of the window, hang up, return the rows. With ``tls_ca`` it calls ``sips:`` URIs over TLS; with
    ``record`` (a directory) each call's audio as heard is recorded there (``call-N.wav``, N in ``uris``' order).
    ``ports``: where it listens (None: any free ports)."""
    from bridge.sip.loadcall import LoadCaller

    p = ports or RolePorts()
    caller = LoadCaller(
        play,
        srtp,
        tls_ca,
        record,
        port=p.port,
        tls_port=p.tls_port,
        rtp_port=p.rtp_port,
        rtp_port_range=p.rtp_port_range,
    )
    caller.start()
    # Booted: say so, and place the calls when the orchestrator says when the window is (every caller is up then).
    print(json.dumps({"ready": True}), flush=True)
    go = json.loads(await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline))
    start_at, end_at = float(go["start_at"]), float(go["end_at"])
    caller.place(uris)
    await _sleep_until(start_at)
    first = caller.snapshot()
    await _sleep_until(end_at)
    rows = caller.rows(first, caller.snapshot())
    await caller.hang_up()
    await caller.close()
    return {"calls": rows}


async def run_loopback(
    ports: RolePorts,
    play: Path | None = None,
    sink: str = "",
    duplex: bool = False,
    equal_hold: float = 0.0,
    sink_ca: str = "",
) -> int:
    """The ceiling's callee (:class:`bridge.sip.loadcall.LoopbackCallee`) on ``ports`` (its SIP port, 0 any, and its
    RTP ports) until SIGTERM or SIGINT; with ``sink`` (host:port), each call's audio also goes to that socket as the
    bridge's uplink sends it (:class:`_Streams`); with ``duplex`` too, the call is not looped back: it hears the
    audio the sink sends back, played in C; with ``equal_hold`` (seconds) too, each call does a worker's work: the
    C echo guard on its frames, and up to that much of the model's audio held ahead. On its way out it prints
    ``{"echo_guard": [tempered, full searches, coarse looks], "dropped": samples}``, summed over its calls.
    ``sink_ca``: the sink speaks TLS with a certificate this CA signed (each call's socket through the native TLS
    engine, both ways, as a worker's over ``wss://``)."""
    from bridge.sip.loadcall import LoopbackCallee

    streams = _Streams(sink, duplex, equal_hold, sink_ca) if sink else None
    also = streams.add if streams is not None else None
    callee = LoopbackCallee(
        ports.port, play, also, loop=not duplex, rtp_port=ports.rtp_port, rtp_port_range=ports.rtp_port_range
    )
    callee.start()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    ready = {"loopback": callee.sip_port, "max_calls": callee.max_calls, "scheduling": describe()}
    print(json.dumps(ready), flush=True)
    await stopped.wait()
    if streams is not None:
        if equal_hold:
            print(json.dumps({"echo_guard": streams.guard_counts(), "dropped": streams.dropped()}), flush=True)
        streams.close()
    await callee.close()
    return 0


class _Streams:
    """The ``stream`` ceiling's model I/O, all in C: each call's audio, as it comes from the conference bridge, is
    upsampled, framed as a GA append and written to a TCP socket to ``sink`` on pjmedia's clock thread by the
    bridge's own native port and uplink (``bridge/native/cport.c``), as a worker sends it, with no Python per
    frame: what sending a call's audio to a model costs at least.

    ``duplex``: the model's audio comes back too, as a worker takes it: the sink sends GA audio deltas on the same
    socket, and the port's downlink (``cport.c``, "Downlink") reads, decodes and downsamples them on the clock
    thread into the playout the caller hears, again with no Python per delta or frame.

    ``equal_hold`` (the equal-work floor): each call also runs the plan's C echo guard where a worker's runs, on
    the clock thread (each caller frame heard and tempered before it is sent, each frame played fed as its
    reference), and its playout holds up to ``equal_hold`` seconds of the model's audio, which comes at the
    emulator's pace (twice real time) rather than dropped past 2 s."""

    def __init__(self, sink: str, duplex: bool = False, equal_hold: float = 0.0, sink_ca: str = "") -> None:
        host, _, port = sink.rpartition(":")
        self.sink = (host, int(port))
        self.duplex = duplex
        self.equal_hold = equal_hold
        self.sink_ca = sink_ca
        self.held: list[tuple[Any, ...]] = []
        self.guards: list[Guard] = []

    def add(self, endpoint: Any, media: Any) -> None:
        from bridge.audio import Downsampler, Upsampler
        from bridge.realtime.dialects import GA

        port = endpoint.acquire_port()
        port.attach(None, lambda pcm, t: None)
        sock = socket.create_connection(self.sink)
        tls, seal, opener = self._tls(sock) if self.sink_ca else (None, None, None)
        sock.setblocking(False)
        up, down = Upsampler(native=True), Downsampler(native=True)
        uplink = port.uplink(up)
        if self.equal_hold:
            self._guard(port, uplink)
        if not (uplink.set_append(GA.append) and uplink.bind(sock.fileno(), seal)):
            raise RuntimeError("the stream ceiling needs the native port and the C upsampler")
        downlink = port.downlink(down) if self.duplex else None
        if downlink is not None and not downlink.bind(sock.fileno(), AUDIO_DELTA, self.equal_hold, opener):
            raise RuntimeError("the duplex ceiling needs the native port and the C downsampler")
        port.route(media, send=self.duplex, receive=True)
        self.held.append((port, uplink, downlink, sock, up, down, tls))

    def _tls(self, sock: socket.socket) -> tuple[Any, tuple[int, int], tuple[int, int, int]]:
        """The call's TLS engine (``bridge/native/tls.c``) after its handshake over the (blocking) ``sock``, and
        what the C uplink seals with and the C downlink opens with: (``cbt_seal``, engine) and (``cbt_feed``,
        ``cbt_read``, engine)."""
        import ctypes

        from bridge.realtime.tls_native import NativeTls, load

        lib = load()
        if lib is None:
            raise RuntimeError("the wss:// floor needs the native TLS engine")
        tls = NativeTls(self.sink[0], verify=True, cafile=self.sink_ca)
        while not tls.handshake():
            sock.sendall(tls.take())
            data = sock.recv(1 << 16)
            if not data:
                raise RuntimeError("the sink closed the TLS handshake")
            tls.feed(data)
        sock.sendall(tls.take())
        feed, read = (ctypes.cast(f, ctypes.c_void_p).value or 0 for f in (lib.cdll.cbt_feed, lib.cdll.cbt_read))
        return tls, (tls.seal_fn, tls.handle), (feed, read, tls.handle)

    def _guard(self, port: Any, uplink: Any) -> None:
        """The call's echo guard as a worker's runs it (the plan's settings, on the clock thread), before the
        uplink is bound: it hears each caller frame first and is fed each frame the port plays."""
        from bridge.audio.echo_native import make_guard
        from bridge.dialplan import EchoGuardPlan

        plan = EchoGuardPlan()
        guard = make_guard(
            max_delay_ms=plan.max_delay_ms,
            speech_dbfs=plan.speech_dbfs,
            erle_db=plan.erle_db,
            suppress_db=plan.suppress_db,
        )
        if not (uplink.guard_with(guard, plan.temper) and port.reference_to(guard)):
            raise RuntimeError("the equal-work floor needs the C echo guard")
        self.guards.append(guard)

    def guard_counts(self) -> list[int]:
        """The calls' guards' counters (:meth:`bridge.audio.echo.Guard.counters`), summed."""
        return [sum(c) for c in zip(*(g.counters() for g in self.guards), strict=True)] if self.guards else [0, 0, 0]

    def dropped(self) -> int:
        """Samples of the model's audio the calls' playouts had no room for, summed."""
        return sum(downlink.counters().dropped for _, _, downlink, *_ in self.held if downlink is not None)

    def close(self) -> None:
        for port, uplink, downlink, sock, *_ in self.held:
            uplink.unbind()
            if downlink is not None:
                downlink.unbind()
            port.detach()
            sock.close()
        self.held.clear()


async def _sleep_until(at: float) -> None:
    await asyncio.sleep(max(0.0, at - time.monotonic()))


# ------------------------------------------------------------------------------------------------------------
# In the orchestrator


@dataclass
class Callers:
    """Load callers that have been told the window: they are placing their calls."""

    procs: list[asyncio.subprocess.Process]
    start_at: float
    end_at: float

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]


async def boot_callers(
    uris: list[str],
    play: Path,
    seconds: float,
    log_path: Path,
    srtp: str = "off",
    tls_ca: Path | None = None,
    record: Path | None = None,
) -> Callers:
    """Boot the load callers, wait until every one is up, then have them all place their calls now: the
    window opens ``SETUP_S`` later and lasts ``seconds``. ``tls_ca``: the CA that verifies the callees of
    ``sips:`` URIs (the callers speak TLS then); ``record``: a directory where each caller records what its calls
    hear, in ``caller-K/`` (K: the caller's index, its calls ``call-N.wav``)."""
    procs = []
    with stderr_to(log_path):
        for i in range(0, len(uris), CALLS_PER_PROCESS):
            group = ",".join(uris[i : i + CALLS_PER_PROCESS])
            role = ["--role", "caller", "--uris", group, "--play", str(play), "--srtp-mode", srtp]
            role += RolePorts.pick(tls=tls_ca is not None).args()  # in CALLBRIDGE_PORT_RANGE when that is set
            role += ["--tls-ca", str(tls_ca)] if tls_ca is not None else []
            if record is not None:
                (record / f"caller-{i // CALLS_PER_PROCESS}").mkdir(parents=True, exist_ok=True)
                role += ["--record", str(record / f"caller-{i // CALLS_PER_PROCESS}")]
            procs.append(await spawn_role(*role, stdin=True))
    try:
        await _wait_booted(procs)
    except BaseException:
        for proc in procs:
            await stop(proc)
        raise
    start_at = time.monotonic() + SETUP_S
    end_at = start_at + seconds
    go = json.dumps({"start_at": start_at, "end_at": end_at}).encode() + b"\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(go)
    for proc in procs:
        assert proc.stdin is not None
        await proc.stdin.drain()
        proc.stdin.close()
    return Callers(procs, start_at, end_at)


async def _wait_booted(procs: list[asyncio.subprocess.Process]) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    for proc in procs:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), max(1.0, deadline - time.monotonic()))
        if not line.startswith(b"{"):
            raise RuntimeError(f"load caller {proc.pid} did not boot (exit {proc.returncode}): {line[:200]!r}")


async def collect(step: Step, procs: list[asyncio.subprocess.Process]) -> list[dict[str, Any]]:
    """Every load caller's rows once it has hung up and exited; what went wrong goes to ``step.errors``."""
    rows: list[dict[str, Any]] = []
    for proc in procs:
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), RESULT_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
            step.errors.append(f"caller {proc.pid} timed out")
        lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("{")]
        if not lines:
            step.errors.append(f"caller {proc.pid} exited {proc.returncode} without a result")
            continue
        rows += json.loads(lines[-1])["calls"]
        if proc.returncode != 0:
            step.errors.append(f"caller {proc.pid} exited {proc.returncode}")
    return rows


async def boot_loopbacks(
    loops: list[asyncio.subprocess.Process],
    apps: int,
    play: Path | None,
    priority: int,
    log_path: Path,
    sink: str = "",
    duplex: bool = False,
    equal_hold: float = 0.0,
    sink_ca: str = "",
) -> tuple[list[int], list[str]]:
    """Start ``apps`` loopback apps one after another, each added to ``loops`` as it starts (the caller stops
    them, also those started before one failed). Returns their SIP ports and scheduling as they reported it."""
    ports: list[int] = []
    reported: list[str] = []
    with stderr_to(log_path):
        for _ in range(apps):
            args = ["--role", "loopback", *RolePorts.pick(free_port_block(1)).args()]  # in the range when it is set
            args += ["--realtime-priority", str(priority)]
            args += ["--play", str(play)] if play is not None else []
            args += ["--sink", sink] if sink else []
            args += ["--duplex"] if duplex else []
            args += ["--equal-hold", str(equal_hold)] if equal_hold else []
            args += ["--sink-ca", sink_ca] if sink_ca else []
            proc = await spawn_role(*args)
            loops.append(proc)
            assert proc.stdout is not None
            ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), LOOPBACK_READY_S))
            ports.append(int(ready["loopback"]))
            reported.append(str(ready.get("scheduling", "")))
    return ports, reported
