"""``callbridge bench calls [--json] [--max-calls N] [--seconds S]``: concurrent real calls, against a ceiling.

Two paths carry the same load, step by step (4, 8, ... ``--max-calls`` concurrent calls, ``--seconds`` each):

- ``bridge``: ``Pool`` workers (``ceil(calls / 4)`` processes, 4 calls each: the wheel's cap) bridging every call
  to the in-process Realtime emulator (GA, PCM 24 kHz, no turn detection so both directions run all the time:
  the caller talks without pause, the agent speaks one long greeting, delivered at twice real time).
- ``ceiling``: pjsua2's own C path. A tiny pjsua2 app per 4 calls answers and loops each call's audio back to
  itself in the conference bridge (``AudioMedia.startTransmit`` to itself): no Python media port at all.
  ``--ceiling play`` instead plays a looped recording (C) to each call and sends the call's audio to the null
  sound device: what a loopback sends is what it received, so a stall on the caller's side reaches the caller's
  jitter buffer twice, while the bridge's reply does not depend on the caller's packets; ``play`` removes that
  difference.

The load callers are the same for both: ``ceil(calls / 4)`` pjsua2 processes, each placing 4 calls that play a
looped speech WAV through an ``AudioMediaPlayer`` (C, no Python on the media path). Every process involved runs on
this machine, loaded together.

A step boots the load callers first and waits until every one is up (a Python + pjsua2 process costs about a
CPU-second to boot); then all of them place their calls at once, and the window opens ``SETUP_S`` later, for both
paths alike (the same window for every process: CLOCK_MONOTONIC is system-wide). A call not up by then is
missing for the whole window: answering a burst of calls in time is part of the capacity. Measured over it:

- ``late or missing`` (outbound, at the callers): per call, the frames that were not there when the caller's
  20 ms clock wanted them, from its jitter buffer (``Call.getStreamStat``): a late packet counts once although it
  moves both the ``empty`` and the ``lost`` counter (calibrated by stopping the sender: 15 late frames moved them by
  12 and 18), plus discarded frames, plus every frame of a call that was not up. For ``bridge``, plus the
  workers' playout underruns inside the window: dead air inside an answer reaches the caller as a frame on time,
  but a silent one, so it is a missing frame too (the ``underrun`` column: whole calls / in the window; most
  fall while a reply's first deltas arrive, before the window).
- ``in missing`` (bridge only, at the model): 50 appends per second and call are expected in the window; the ones
  that did not reach the emulator are missing.
- The pass mark is < 0.1 % of the expected frames in each direction, every call answered.
- ``cpu/call``: user + system CPU of the worker (or loopback) processes over the window (``/proc/<pid>/stat``),
  per call, in % of one core. ``callers``: all load callers together; ``bench``: this process, i.e. the emulator
  (bridge path only); ``machine``: every process, in % of all cores. The bridge path also carries the
  emulator on the same cores; the ceiling path has nothing in place of it.
- Bridge-added latency from the worker reports (sampled once a second per call): inbound = ``capture`` (clock
  thread -> event loop, conversion, queued for the socket; with the uplink offload, all on the clock thread:
  its callback -> the socket write) + ``uplink`` (socket write); outbound = ``downlink``
  (decode + resample of a reply's first delta) + ``playback`` (queued -> handed to the clock thread). Also the
  spread of append arrival times at the emulator (arrival minus the frame's 20 ms slot, above the call's best).

``--front kamailio`` adds a third path, ``front``: the bridge path's workers behind Kamailio (``serve --front
kamailio``, bridge/serve/front.py), every call placed to the front's one address instead of a worker's port. It
runs in the same ladder as the bridge path, against the same kind of workers, and reports what the front costs:
``front cpu/call``, the CPU time all Kamailio's processes used over the step (every INVITE, ACK and BYE, and the
OPTIONS probes meanwhile) per call, and every path's ``setup``, from the caller's INVITE to its call being up
(p50/p99). The summary compares the front's capacity with the bridge
path's (goal: >= 90 %) and the set-up time it adds (front minus bridge at the same step). With ``--front`` the
bridge path gives the calls of each load caller (four, on one pjmedia clock) to four different workers, as the
front's dispatcher does: a worker's calls then come on four clock phases, as a trunk's calls would, which costs
the workers and the callers more than four calls on one phase (docs/benchmarks.md, "Through the front"). Without
it each load caller's calls go to one worker.

``--realtime-priority N`` runs the system under test of both paths (the bridge's workers, the loopback apps)
``SCHED_RR`` at N, as ``callbridge serve --realtime-priority N`` does (see bridge/runtime/sched.py); the load
callers and the emulator stay ordinary. Each step's ``scheduling`` says what the processes really got (it needs root or
CAP_SYS_NICE; a step where it was not applied says so).

A path stops at its first failing step (its capacity is known then); a failing step is run once more, and fails
only if that run fails too (both paths alike: one stall of 200 ms fails a small step). ``--json`` steps carry
``late_by_target``: late frames per callee port (the answering Contact's: a worker, also behind the front, or a
loopback app), which tells one stalled process from a machine-wide stall, and ``unanswered_why``: the calls a
caller did not have up when the window opened or closed, by SIP status and what was missing (not answered yet,
ended, no audio stream yet).

The summary line gives the most calls with every step up to it passing, for each path, and their ratio (goal:
bridge >= 75 % of the ceiling), and the inbound p99 at that load (goal: <= 10 ms). If the ceiling passes the
largest step, its real capacity is higher and the ratio shown is an upper bound; raise ``--max-calls``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bridge import events as ev
from bridge.audio.frames import BEAT_FRAMES, MAX_BEAT_FRAMES
from bridge.runtime.sched import MAX_PRIORITY, describe, use_realtime
from bridge.store.server import free_port_block

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "bridge" / "assets"
CALLS_PER_PROCESS = 4  # the pjsua2 wheel's cap per process (bridge/sip/endpoint.py reads it back at run time)
FRAME_MS = 20
FRAMES_PER_S = 1000 // FRAME_MS
CONTACT_HOSTPORT = re.compile(r"sips?:(?:[^@>;]*@)?([^;>]+)")  # a Contact's host:port, e.g. <sip:127.0.0.1:5061;ob>
PASS_MARK = 0.001  # < 0.1 % late or missing frames
# A step that fails is run once more, for both paths alike, and fails only if that fails too: at 16 calls the mark
# is 10 frames in 12 s, so one 200 ms stall anywhere on the machine failed the ceiling at 16 calls in one ladder.
ATTEMPTS = 2
# From placing the calls to the window's start: calls answered (the bridge answers once its Realtime session is
# ready), agent audio playing, jitter buffers settled. The load callers boot first and place their calls together
# only once every one of them is up: booting a Python + pjsua2 process costs about a CPU-second, and 40 of them
# booting inside this time on 2 cores would measure the phones' boot against the
# system under test's load, not the system's capacity.
SETUP_S = 4.5
BOOT_TIMEOUT_S = 180.0  # for every load caller to be up (they boot together, about a CPU-second each)
CPU_CLOSE_EARLY_S = 0.5  # the CPU window closes this much before the callers hang up


NUMBER = "4000"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class Step:
    path: str  # "bridge" | "front" | "ceiling"
    calls: int
    processes: int  # workers or loopback apps
    window_s: float = 0.0
    answered: int = 0
    expected_frames: int = 0  # per direction
    out_late_or_missing: int = 0  # at the callers: late frames (jitter buffer lost/empty, once each) + discarded
    jb_lost: int = 0
    jb_empty: int = 0
    jb_discard: int = 0
    underruns: int = 0  # bridge: playout underruns over whole calls (worker reports)
    underruns_in_window: int = 0  # bridge: those inside the window: dead air the caller heard (scored as missing)
    port_late: int = 0  # bridge, native ports: ticks the loop had not queued a frame by (whole calls, not scored)
    clock_gaps: int = 0  # bridge, native ports: clock ticks > 30 ms apart in the workers (whole calls, not scored)
    in_missing: int | None = None  # bridge: appends that did not reach the model in the window
    cpu_per_call_pct: float = 0.0
    front_cpu_ms_per_call: float | None = None  # front path: Kamailio's CPU time per call, set-up to hang-up
    setup_ms: dict[str, float | None] = field(default_factory=dict)  # INVITE -> call up, at the callers
    cpu_callers_pct: float = 0.0  # all load callers together, % of one core
    cpu_machine_pct: float = 0.0  # the whole machine, % of all cores
    # ... of which stolen by the hypervisor: a noisy host stalls both paths' media clocks
    cpu_steal_pct: float = 0.0
    cpu_bench_pct: float = 0.0  # this process (the emulator and the orchestrator), % of one core
    inbound_ms: dict[str, float | None] = field(default_factory=dict)  # p50/p99 of capture + uplink
    outbound_ms: dict[str, float | None] = field(default_factory=dict)  # p50/p99 of downlink + playback
    capture_ms: dict[str, float | None] = field(default_factory=dict)
    arrival_spread_ms: dict[str, float | None] = field(default_factory=dict)
    latency_samples: dict[str, int] = field(default_factory=dict)
    late_by_target: dict[str, int] = field(default_factory=dict)  # where late frames came from: the callee's port
    # calls not up at the caller when the window opened or closed: "SIP status: what was missing" -> count
    unanswered_why: dict[str, int] = field(default_factory=dict)
    scheduling: list[str] = field(default_factory=list)  # as the workers / loopback apps reported it
    errors: list[str] = field(default_factory=list)
    attempt: int = 1  # 2: the first run of this step failed and this is the re-run (which decides)

    @property
    def out_rate(self) -> float:
        return self.out_late_or_missing / self.expected_frames if self.expected_frames else 1.0

    @property
    def in_rate(self) -> float | None:
        if self.in_missing is None:
            return None
        return self.in_missing / self.expected_frames if self.expected_frames else 1.0

    @property
    def passed(self) -> bool:
        ok = self.answered == self.calls and self.out_rate < PASS_MARK
        rate_in = self.in_rate
        return ok and (rate_in is None or rate_in < PASS_MARK)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            kind="step",
            out_rate_pct=round(100 * self.out_rate, 4),
            in_rate_pct=None if self.in_rate is None else round(100 * self.in_rate, 4),
            passed=self.passed,
        )
        return out


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 2)

    return {"p50": pick(0.50), "p99": pick(0.99), "max": round(ordered[-1], 2)}


# ------------------------------------------------------------------------------------------------------------
# Processes, ports, CPU


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (/proc/<pid>/stat fields 14 and 15), 0 if it is gone."""
    return _cpu_by_pid([pid]).get(pid, 0.0)


def _cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """CPU seconds of each process still there (a pid that is gone is absent, not 0)."""
    out: dict[int, float] = {}
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        out[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def _run_time_s(pids: list[int]) -> float:
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


def _process_tree(root: int) -> list[int]:
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


# ------------------------------------------------------------------------------------------------------------
# Role: load caller (a subprocess; one pjsua2 endpoint, up to 4 calls, C media only)


async def run_caller(uris: list[str], play: Path) -> dict[str, Any]:
    """One load caller: boot, say ``{"ready": true}``, read ``{"start_at", "end_at"}`` from stdin, place the calls,
    snapshot their stream stats at both ends of the window, hang up, print the rows."""
    import gc

    import pjsua2 as pj

    from bridge.sip.endpoint import SipConfig, SipEndpoint
    from bridge.sip.gateway import call_op, first_audio

    class LoadCall(pj.Call):  # type: ignore[misc]  # pjsua2 has no stubs
        def __init__(self, account: Any, uri: str, on_media: Callable[[LoadCall], None]) -> None:
            super().__init__(account)
            self.uri = uri
            self.on_media = on_media
            self.status: int | None = None
            self.answered = False
            self.ended = False
            self.media: Any = None
            self.index = -1
            self.why = ""  # why a snapshot found it not up (the step's unanswered_why)
            self.placed_at = 0.0
            self.answered_at = 0.0
            self.worker = ""  # HOST:PORT of the callee that answered (its Contact): behind the front, a worker

        def onCallState(self, prm: Any) -> None:
            try:
                info = self.getInfo()
                if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
                    self.answered, self.status = True, int(info.lastStatusCode) or 200
                    self.answered_at = self.answered_at or time.monotonic()
                    found = CONTACT_HOSTPORT.search(info.remoteContact or "")
                    self.worker = self.worker or (found.group(1) if found else "")
                elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                    self.ended = True
                    self.status = self.status or int(info.lastStatusCode)
            except BaseException:
                pass

        def onCallMediaState(self, prm: Any) -> None:
            try:
                found = first_audio(self)
                if found is not None and self.media is None:
                    self.media, self.index = found
                    self.on_media(self)
            except BaseException:
                pass

    endpoint = SipEndpoint(
        SipConfig(port=0, transports=("udp",), user="load", user_agent="callbridge-bench", pjsua_log_level=0)
    )
    endpoint.start()
    # Every pjsua2 object lives in ``held`` only (no local variable may hold one at libDestroy: it would abort).
    held: dict[str, Any] = {"calls": [], "player": pj.AudioMediaPlayer(), "account": endpoint.create_account(None)}
    held["player"].createPlayer(str(play), 0)  # 0: loop
    # What the caller hears goes to the (null) sound device: the conference bridge then pulls every call's stream
    # each 20 ms, as a phone's speaker would, so its jitter buffer plays out (no listener: it only fills up).
    held["speaker"] = endpoint.native.audDevManager().getPlaybackDevMedia()

    def release() -> None:
        for call in held["calls"]:
            call.media = None
        held.clear()

    endpoint.on_release(release)

    def connect(call: LoadCall) -> None:
        held["player"].startTransmit(call.media)
        call.media.startTransmit(held["speaker"])

    def place(uri: str) -> None:
        call = LoadCall(held["account"], uri, connect)
        held["calls"].append(call)
        call.placed_at = time.monotonic()
        try:
            call.makeCall(uri, call_op())
        except pj.Error as exc:
            call.ended, call.status = True, 0
            print(f"makeCall {uri}: {exc}", file=sys.stderr)

    def snap(index: int) -> dict[str, float] | None:
        call = held["calls"][index]
        if not call.answered or call.ended or call.media is None:
            call.why = "ended" if call.ended else "not answered" if not call.answered else "no audio stream yet"
            return None
        try:
            st = call.getStreamStat(call.index)
        except pj.Error as exc:
            call.why = f"stat: {exc}"
            return None
        rx, jb = st.rtcp.rxStat, st.jbuf
        return {
            "t": time.monotonic(),
            "rx_pkt": rx.pkt,
            "rx_loss": rx.loss,
            "tx_pkt": st.rtcp.txStat.pkt,
            "jb_lost": jb.lost,
            "jb_empty": jb.empty,
            "jb_discard": jb.discard,
            "jb_avg_delay_ms": jb.avgDelayMsec,
            "jb_max_delay_ms": jb.maxDelayMsec,
            "jitter_max_us": rx.jitterUsec.max,
        }

    def hangup_all() -> None:
        for call in held["calls"]:
            if not call.ended:
                with contextlib.suppress(pj.Error):
                    call.hangup(call_op())

    def summary(index: int, a: dict[str, float] | None, b: dict[str, float] | None) -> dict[str, Any]:
        call = held["calls"][index]
        row: dict[str, Any] = {"uri": call.uri, "answered": a is not None and b is not None, "status": call.status}
        row["why"] = call.why
        row["worker"] = call.worker
        if call.answered_at and call.placed_at:
            row["setup_ms"] = round(1000 * (call.answered_at - call.placed_at), 1)
        if a is not None and b is not None:
            row.update({k: b[k] - a[k] for k in COUNTERS})
            row.update(jb_avg_delay_ms=b["jb_avg_delay_ms"], jb_max_delay_ms=b["jb_max_delay_ms"])
            row.update(jitter_max_us=b["jitter_max_us"])
        return row

    # Booted: say so, and place the calls when the orchestrator says when the window is (every caller is up then).
    print(json.dumps({"ready": True}), flush=True)
    go = json.loads(await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline))
    start_at, end_at = float(go["start_at"]), float(go["end_at"])
    for uri in uris:
        place(uri)
    count = len(uris)
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    first = [snap(i) for i in range(count)]
    await asyncio.sleep(max(0.0, end_at - time.monotonic()))
    last = [snap(i) for i in range(count)]
    rows = [summary(i, first[i], last[i]) for i in range(count)]
    hangup_all()
    for _ in range(150):  # up to 3 s for the BYEs to complete
        if all(call.ended for call in held["calls"]):
            break
        await asyncio.sleep(0.02)
    gc.collect()
    await endpoint.close()
    return {"calls": rows}


COUNTERS = ("t", "rx_pkt", "rx_loss", "tx_pkt", "jb_lost", "jb_empty", "jb_discard")


# ------------------------------------------------------------------------------------------------------------
# Role: the ceiling, pjsua2's C path (answer, loop the call's audio back to itself, no Python media port)


async def run_loopback(port: int, play: Path | None = None) -> int:
    """The ceiling's callee: answer up to 4 calls in C media only. Each call's audio is looped back to itself in the
    conference bridge, or with ``play`` (``--ceiling play``), the call hears that recording, looped, and its own
    audio goes to the null sound device: what it sends no longer depends on what it receives, as in the bridge."""
    import pjsua2 as pj

    from bridge.sip.endpoint import SipConfig, SipEndpoint
    from bridge.sip.gateway import call_op, first_audio

    class LoopCall(pj.Call):  # type: ignore[misc]  # pjsua2 has no stubs
        def __init__(self, account: Any, call_id: int) -> None:
            super().__init__(account, call_id)
            self.media: Any = None

        def onCallMediaState(self, prm: Any) -> None:
            try:
                found = first_audio(self)
                if found is not None and self.media is None:
                    self.media = found[0]
                    if holder.get("player") is None:
                        self.media.startTransmit(self.media)  # the call's audio back to itself, in the conf bridge
                    else:
                        holder["player"].startTransmit(self.media)
                        self.media.startTransmit(holder["speaker"])
            except BaseException:
                pass

    endpoint = SipEndpoint(
        SipConfig(port=port, transports=("udp",), user="loop", user_agent="callbridge-loopback", pjsua_log_level=0)
    )
    endpoint.start()
    calls: list[Any] = []

    def incoming(prm: Any) -> None:
        c = LoopCall(holder["account"], prm.callId)
        calls.append(c)
        with contextlib.suppress(pj.Error):
            c.answer(call_op(200))

    holder: dict[str, Any] = {"account": None}
    holder["account"] = endpoint.create_account(incoming)
    if play is not None:  # --ceiling play: send a looped recording, take in the caller's audio (as a phone does)
        holder["player"] = pj.AudioMediaPlayer()
        holder["player"].createPlayer(str(play), 0)
        holder["speaker"] = endpoint.native.audDevManager().getPlaybackDevMedia()

    def release() -> None:
        for c in calls:
            c.media = None
        calls.clear()
        holder.clear()

    endpoint.on_release(release)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready = {"loopback": endpoint.sip_port, "max_calls": endpoint.max_calls, "scheduling": describe()}
    print(json.dumps(ready), flush=True)
    await stop.wait()
    await endpoint.close()
    return 0


# ------------------------------------------------------------------------------------------------------------
# The orchestrator


def _caller_wav(path: Path) -> Path:
    """The bundled caller recording, as 8 kHz mono PCM16 (the player loops it)."""
    with wave.open(str(ASSETS / "caller_hours.wav"), "rb") as src:
        pcm = src.readframes(src.getnframes())
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(pcm)
    return path


def _dialplan(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    plan = {
        "name": "bench",
        "match": [NUMBER, "*"],
        "dialect": "ga",
        "greeting": "Say 'benchmark' for as long as the benchmark runs.",
        "answer_timeout_s": 5,
        "profile": {
            "instructions": "Benchmark load.",
            "audio_format": "pcm16",
            "turn_detection": None,  # the caller never pauses; the agent's greeting plays throughout
            "input_transcription": None,
        },
    }
    (directory / "bench.yaml").write_text(json.dumps(plan))
    return directory


async def _spawn(*args: str, stdin: bool = False) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=None,
        env=child_env(),
        cwd=str(ROOT),
    )


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 15)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


_UNDERRUNS = re.compile(r"(\d+) underruns")


def _slot_phase_s(arrivals: list[float], t0: float) -> float:
    """Where, in each 20 ms slot after ``t0``, this call's frames typically arrive, minus half a slot (seconds).

    Shifting the counting window by it puts its edges between two frames' arrivals, so that the count is exact
    unless a frame is more than 10 ms off its usual time right at an edge (a circular mean of the phases).
    """
    if not arrivals:
        return 0.0
    period = FRAME_MS / 1000
    angles = [2 * math.pi * ((t - t0) % period) / period for t in arrivals]
    mean = math.atan2(sum(map(math.sin, angles)), sum(map(math.cos, angles)))
    phase = (mean / (2 * math.pi)) % 1.0 * period
    return phase - period / 2


class Bench:
    def __init__(
        self,
        seconds: float,
        work: Path,
        log_path: Path,
        priority: int = 0,
        beat: int = BEAT_FRAMES,
        ceiling: str = "loop",
        spread: bool = False,
    ) -> None:
        # the bridge path: each load caller's calls to as many workers (True) or all to one (False); see the doc
        self.spread = spread
        self.ceiling = ceiling  # "loop": each call's audio back to itself; "play": a recording out, audio in
        self.seconds = seconds
        self.priority = priority  # SCHED_RR priority of the system under test (workers, loopback apps); 0: none
        self.beat = beat  # the workers' media beat, in 20 ms ticks (Settings.media_beat_frames)
        self.work = work
        self.log_path = log_path
        self.play = _caller_wav(work / "caller.wav")
        self.greeting_ms = (SETUP_S + seconds + 8.0) * 1000

    async def _callers(self, uris: list[str]) -> tuple[list[asyncio.subprocess.Process], list[int], float, float]:
        """Boot the load callers, wait until every one is up, then have them all place their calls now: the
        window opens ``SETUP_S`` later and lasts ``self.seconds``. Returns the processes, their pids and the
        window (start, end)."""
        procs = []
        with stderr_to(self.log_path):
            for i in range(0, len(uris), CALLS_PER_PROCESS):
                group = ",".join(uris[i : i + CALLS_PER_PROCESS])
                args = ["--role", "caller", "--uris", group, "--play", str(self.play)]
                procs.append(await _spawn(sys.executable, "-m", "bench.calls", *args, stdin=True))
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        try:
            for proc in procs:
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), max(1.0, deadline - time.monotonic()))
                if not line.startswith(b"{"):
                    raise RuntimeError(f"load caller {proc.pid} did not boot (exit {proc.returncode}): {line[:200]!r}")
        except BaseException:
            for proc in procs:
                await _stop(proc)
            raise
        start_at = time.monotonic() + SETUP_S
        end_at = start_at + self.seconds
        go = json.dumps({"start_at": start_at, "end_at": end_at}).encode() + b"\n"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(go)
        for proc in procs:
            assert proc.stdin is not None
            await proc.stdin.drain()
            proc.stdin.close()
        return procs, [p.pid for p in procs], start_at, end_at

    async def _window(
        self, step: Step, start_at: float, end_at: float, pids: list[int], caller_pids: list[int]
    ) -> None:
        """CPU over the window. The load callers hang up at ``end_at`` and exit, so the CPU window closes
        ``CPU_CLOSE_EARLY_S`` before it; a process gone by then is left out of both samples and named."""
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        own0, m0, t0 = cpu_seconds(os.getpid()), machine_busy(), time.monotonic()
        sut0, callers0 = _cpu_by_pid(pids), _cpu_by_pid(caller_pids)
        await asyncio.sleep(max(0.0, end_at - CPU_CLOSE_EARLY_S - time.monotonic()))
        own1, m1, t1 = cpu_seconds(os.getpid()), machine_busy(), time.monotonic()
        sut1, callers1 = _cpu_by_pid(pids), _cpu_by_pid(caller_pids)
        gone = sorted(set(sut0) - set(sut1) | set(callers0) - set(callers1))
        if gone:
            step.errors.append(f"CPU of {len(gone)} processes not measured (exited inside the window): {gone}")
        span = t1 - t0
        step.cpu_bench_pct = round(100 * (own1 - own0) / span, 1)
        step.window_s = round(end_at - start_at, 3)
        step.cpu_per_call_pct = round(100 * sum(sut1[p] - sut0[p] for p in sut1 if p in sut0) / span / step.calls, 2)
        step.cpu_callers_pct = round(100 * sum(callers1[p] - callers0[p] for p in callers1 if p in callers0) / span, 1)
        step.cpu_machine_pct = round(100 * (m1[0] - m0[0]) / max(1.0, m1[2] - m0[2]), 1)
        step.cpu_steal_pct = round(100 * (m1[1] - m0[1]) / max(1.0, m1[2] - m0[2]), 1)

    @staticmethod
    async def _collect(step: Step, procs: list[asyncio.subprocess.Process]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for proc in procs:
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), 30)
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

    @staticmethod
    def _score_callers(step: Step, rows: list[dict[str, Any]]) -> None:
        expected_per_call = round(step.window_s * FRAMES_PER_S)
        step.expected_frames = expected_per_call * step.calls
        answered = [r for r in rows if r.get("answered")]
        for r in rows:
            if not r.get("answered"):
                why = f"{r.get('status')}: {r.get('why') or 'no stream'}"
                step.unanswered_why[why] = step.unanswered_why.get(why, 0) + 1
        step.answered = len(answered)
        step.setup_ms = percentiles([float(r["setup_ms"]) for r in rows if r.get("setup_ms") is not None])
        step.jb_lost = sum(int(r["jb_lost"]) for r in answered)
        step.jb_empty = sum(int(r["jb_empty"]) for r in answered)
        step.jb_discard = sum(int(r["jb_discard"]) for r in answered)
        unanswered = step.calls - len(answered)
        # A late packet moves two counters: "empty" when its frame was due, "lost" when it turns up too late
        # (calibrated: the sender stopped for 100 + 200 ms = 15 frames -> lost +18, empty +12). Count it once.
        late = 0
        for r in answered:
            one = math.ceil((int(r["jb_lost"]) + int(r["jb_empty"])) / 2)
            late += one
            if one:
                port = str(r.get("worker") or r["uri"]).rsplit(":", 1)[-1]
                step.late_by_target[port] = step.late_by_target.get(port, 0) + one
        step.out_late_or_missing = late + step.jb_discard + unanswered * expected_per_call

    async def bridge_step(self, calls: int, emulator: Any, front: bool = False) -> Step:
        """The bridge's workers, called on their own ports; with ``front``, through Kamailio's one address."""
        from bridge.config import Settings
        from bridge.serve.front import KamailioFront, node_destinations
        from bridge.serve.pool import Pool

        workers = math.ceil(calls / CALLS_PER_PROCESS)
        step = Step("front" if front else "bridge", calls, workers)
        reports = self.work / f"reports-{step.path}-{calls}.jsonl"
        settings = Settings(
            front="kamailio" if front else "none",
            front_dir=self.work / f"front-{calls}" if front else None,
            sip_port=free_port_block(workers + (1 if front else 0)),
            workers=workers,
            rtp_port=0,
            realtime_url=emulator.base_url,
            dialplans=_dialplan(self.work / "dialplans"),
            report_file=reports,
            realtime_priority=self.priority,
            media_beat_frames=self.beat,
        )
        pool = Pool(settings)
        kamailio: KamailioFront | None = None
        try:
            with stderr_to(self.log_path):
                await pool.start()
                await asyncio.wait_for(pool.wait_ready(), 60)
                if front:
                    caps = [(slot.sip_port, slot.max_calls) for slot in pool.slots]
                    kamailio = KamailioFront(settings, node_destinations(settings, caps))
                    await kamailio.start()
            pids = [s.proc.pid for s in pool.slots if s.proc is not None]
            self._note_scheduling(step, [s.scheduling for s in pool.slots])
            if kamailio is not None:
                uris = [f"sip:{NUMBER}@127.0.0.1:{settings.sip_port}"] * calls  # the one address
            else:
                slots = [i % workers if self.spread else i // CALLS_PER_PROCESS for i in range(calls)]
                uris = [f"sip:{NUMBER}@127.0.0.1:{pool.slots[k].sip_port}" for k in slots]
            first_session = len(emulator.sessions)
            front_pids = _process_tree(kamailio.proc.pid) if kamailio is not None and kamailio.proc else []
            front0 = _run_time_s(front_pids)
            procs, caller_pids, start_at, end_at = await self._callers(uris)
            await self._window(step, start_at, end_at, pids, caller_pids)
            self._score_callers(step, await self._collect(step, procs))
            found = await self._reports(reports, calls)
            if front_pids:  # every INVITE, ACK and BYE of the step, and the OPTIONS probes meanwhile
                step.front_cpu_ms_per_call = round(1000 * (_run_time_s(front_pids) - front0) / calls, 3)
        finally:
            with stderr_to(self.log_path):
                await pool.stop()
                if kamailio is not None:
                    await kamailio.stop()
                    with contextlib.suppress(OSError):  # which worker it marked out, and why
                        shutil.copyfile(kamailio.log_file, self.front_log(calls))
        self._score_bridge(step, found, emulator.sessions[first_session:], start_at, end_at)
        return step

    def front_log(self, calls: int) -> Path:
        """Where the front's Kamailio log of a step is kept (the step's run directory goes with the bench)."""
        return self.log_path.with_name(f"{self.log_path.stem}-front-{calls}.log")

    def _note_scheduling(self, step: Step, reported: list[str]) -> None:
        step.scheduling = sorted(set(reported))
        if self.priority and any(not r.startswith("SCHED_") for r in reported):
            step.errors.append(f"--realtime-priority {self.priority} not applied everywhere: {step.scheduling}")

    @staticmethod
    async def _reports(path: Path, count: int, within: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        lines: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            if path.exists():
                lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
                if len(lines) >= count:
                    break
            await asyncio.sleep(0.1)
        return lines

    @staticmethod
    def _score_bridge(step: Step, reports: list[dict[str, Any]], sessions: list[Any], t0: float, t1: float) -> None:
        if len(reports) < step.calls:
            step.errors.append(f"{len(reports)} of {step.calls} worker reports")
        inbound: list[float] = []
        outbound: list[float] = []
        capture: list[float] = []
        for r in reports:
            lat = r.get("latency_ms", {})
            cap, up = lat.get("capture", []), lat.get("uplink", [])
            capture += cap
            inbound += [c + u for c, u in zip(cap[len(cap) - len(up) :], up, strict=True)]
            down, play = lat.get("downlink", []), lat.get("playback", [])
            n = min(len(down), len(play))
            outbound += [d + p for d, p in zip(down[:n], play[:n], strict=True)]
            step.port_late += int(r.get("media", {}).get("late_out", 0))
            step.clock_gaps += int(r.get("media", {}).get("clock_gaps", 0))
            step.underruns_in_window += sum(1 for t in r.get("media", {}).get("underrun_at", []) if t0 <= t < t1)
            for _t, kind, summary in r.get("timeline", []):
                if kind == ev.PlayoutTotals.kind and (m := _UNDERRUNS.search(summary)):
                    step.underruns += int(m.group(1))
        step.inbound_ms = percentiles(inbound)
        step.outbound_ms = percentiles(outbound)
        step.capture_ms = percentiles(capture)
        step.latency_samples = {"inbound": len(inbound), "outbound": len(outbound)}
        # Inbound at the model: appends per call in the window, and how late each arrived against its 20 ms slot.
        expected_per_call = round((t1 - t0) * FRAMES_PER_S)
        missing = 0
        spread: list[float] = []
        for record in sessions:
            arrivals = [t for t, d, k in list(record.timeline) if d == "in" and k == "input_audio_buffer.append"]
            shift = _slot_phase_s([t for t in arrivals if t0 <= t < t1], t0)
            inside = [t for t in arrivals if t0 + shift <= t < t1 + shift]
            missing += max(0, expected_per_call - len(inside))
            if len(inside) > 2:
                offsets = [(t - t0) * 1000 - FRAME_MS * k for k, t in enumerate(inside)]
                best = min(offsets)
                spread += [o - best for o in offsets]
        missing += max(0, step.calls - len(sessions)) * expected_per_call
        step.in_missing = missing
        step.arrival_spread_ms = percentiles(spread)
        step.out_late_or_missing += step.underruns_in_window  # a silent frame inside an answer is a missing one

    async def ceiling_step(self, calls: int) -> Step:
        apps = math.ceil(calls / CALLS_PER_PROCESS)
        step = Step("ceiling", calls, apps)
        loops: list[asyncio.subprocess.Process] = []
        ports: list[int] = []
        reported: list[str] = []
        try:
            with stderr_to(self.log_path):
                for _ in range(apps):
                    port = free_port_block(1)
                    proc = await _spawn(
                        sys.executable,
                        "-m",
                        "bench.calls",
                        "--role",
                        "loopback",
                        "--port",
                        str(port),
                        "--realtime-priority",
                        str(self.priority),
                        *(("--play", str(self.play)) if self.ceiling == "play" else ()),
                    )
                    loops.append(proc)
                    assert proc.stdout is not None
                    ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
                    ports.append(int(ready["loopback"]))
                    reported.append(str(ready.get("scheduling", "")))
            self._note_scheduling(step, reported)
            uris = [f"sip:{NUMBER}@127.0.0.1:{ports[i // CALLS_PER_PROCESS]}" for i in range(calls)]
            procs, caller_pids, start_at, end_at = await self._callers(uris)
            await self._window(step, start_at, end_at, [p.pid for p in loops], caller_pids)
            self._score_callers(step, await self._collect(step, procs))
        finally:
            for proc in loops:
                await _stop(proc)
        return step


def _fmt_ms(p: dict[str, float | None]) -> str:
    if not p or p.get("p50") is None:
        return "-"
    return f"{p['p50']:.1f}/{p['p99']:.1f}"


HEADER = (
    f"{'path':<8} {'calls':>5} {'procs':>5} {'answered':>8} {'late/missing out':>18} {'jb l/e/d':>9} "
    f"{'underrun':>8} {'in missing':>11} {'cpu/call':>8} {'callers':>7} {'bench':>6} {'machine':>7} {'steal':>5} "
    f"{'in p50/p99':>11} {'out p50/p99':>12} {'setup p50/p99':>14} {'front cpu/call':>14} {'pass':>5}"
)


def _row(s: Step) -> str:
    rate_in = s.in_rate
    inbound = "-" if rate_in is None else f"{s.in_missing} ({100 * rate_in:.2f}%)"
    underruns = f"{s.underruns}/{s.underruns_in_window}" if s.path != "ceiling" else "-"
    front = "-" if s.front_cpu_ms_per_call is None else f"{s.front_cpu_ms_per_call:.2f} ms"
    return (
        f"{s.path:<8} {s.calls:>5} {s.processes:>5} {f'{s.answered}/{s.calls}':>8} "
        f"{f'{s.out_late_or_missing} ({100 * s.out_rate:.3f}%)':>18} {f'{s.jb_lost}/{s.jb_empty}/{s.jb_discard}':>9} "
        f"{underruns:>8} {inbound:>11} {s.cpu_per_call_pct:>7.2f}% {s.cpu_callers_pct:>6.0f}% {s.cpu_bench_pct:>5.0f}% "
        f"{s.cpu_machine_pct:>6.0f}% {s.cpu_steal_pct:>4.0f}% {_fmt_ms(s.inbound_ms):>11} {_fmt_ms(s.outbound_ms):>12} "
        f"{_fmt_ms(s.setup_ms):>14} {front:>14} {'yes' if s.passed else 'NO':>5}"
        + (" (re-run)" if s.attempt > 1 else "")
    )


def max_clean(steps: list[Step]) -> int:
    """The most calls such that this step and every smaller one passed."""
    best = 0
    for s in sorted(steps, key=lambda s: s.calls):
        if not s.passed:
            break
        best = s.calls
    return best


def summarize(steps: list[Step], largest: int) -> dict[str, Any]:
    ran = {s.path for s in steps}
    ours = max_clean([s for s in steps if s.path == "bridge"]) if "bridge" in ran else None
    ceiling = max_clean([s for s in steps if s.path == "ceiling"]) if "ceiling" in ran else None
    at = next((s for s in steps if s.path == "bridge" and s.calls == ours), None)
    inbound_p99 = at.inbound_ms.get("p99") if at is not None else None
    ratio = ours / ceiling if ours is not None and ceiling else None
    return {
        "kind": "summary",
        "cores": os.cpu_count(),
        "bridge_max_calls": ours,
        "ceiling_max_calls": ceiling,
        "ratio": None if ratio is None else round(ratio, 3),
        "ratio_is_upper_bound": ceiling == largest,  # the ceiling never failed: its real capacity is higher
        "inbound_p99_ms_at_max": inbound_p99,
        # An upper bound below the goal settles it; one above it does not (the ceiling may be far higher).
        "goal_ratio_met": None if ratio is None or (ceiling == largest and ratio >= 0.75) else ratio >= 0.75,
        "goal_inbound_p99_met": None if inbound_p99 is None else inbound_p99 <= 10.0,
    } | (_front_summary(steps, ours, largest) if "front" in ran else {})


def _front_summary(steps: list[Step], direct: int | None, largest: int) -> dict[str, Any]:
    """The front path against the bridge path (the same workers called directly) in the same run."""
    through = max_clean([s for s in steps if s.path == "front"])
    at = next((s for s in steps if s.path == "front" and s.calls == through), None)
    same = next((s for s in steps if s.path == "bridge" and s.calls == through), None)
    ratio = through / direct if direct else None
    added = None
    if at is not None and same is not None and at.setup_ms.get("p50") is not None and same.setup_ms.get("p50"):
        added = round(float(at.setup_ms["p50"] or 0) - float(same.setup_ms["p50"] or 0), 1)
    # only the direct path passed every step: its real capacity is higher, the ratio at most this
    upper = direct == largest and through != largest
    return {
        "front_max_calls": through,
        "front_ratio": None if ratio is None else round(ratio, 3),
        # both passed every step: the front's real ratio is unknown above the ladder, at least this
        "front_ratio_is_lower_bound": through == largest and direct == largest,
        "front_ratio_is_upper_bound": upper,
        "goal_front_ratio_met": None if ratio is None or (upper and ratio >= 0.9) else ratio >= 0.9,
        "front_cpu_ms_per_call_at_max": None if at is None else at.front_cpu_ms_per_call,
        "front_setup_ms_at_max": None if at is None else at.setup_ms,
        "front_added_setup_p50_ms_at_max": added,
    }


@contextlib.contextmanager
def _collect_between_steps() -> Iterator[None]:
    """No garbage collection in this process during a step, one full collection after it.

    This process is the emulator, the model's stand-in, and it keeps every event of every session for scoring:
    at 96 calls a full collection paused it for up to 0.3 s, i.e. the model stalled and the calls it was
    feeding got dead air. A remote model does not stall with the bridge's load; the records are freed by
    reference counting, and the collection after the step takes what cycles there are."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def _goal(met: bool | None) -> str:
    return "undetermined" if met is None else "met" if met else "NOT met"


async def run_bench(
    steps: list[int],
    seconds: float,
    as_json: bool,
    paths: Sequence[str],
    priority: int = 0,
    beat: int = BEAT_FRAMES,
    ceiling: str = "loop",
) -> int:
    from bridge.emulator import EmulatorServer

    results: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="callbridge-bench-calls-") as tmp:
        work = Path(tmp)
        log_path = Path(tempfile.gettempdir()) / "callbridge-bench-calls.log"
        log_path.write_text("")
        bench = Bench(seconds, work, log_path, priority, beat, ceiling, spread="front" in paths)
        if not as_json:
            print(
                f"callbridge bench calls: {os.cpu_count()} cores, steps {steps}, {seconds:g} s window per step, "
                f"pass mark < {100 * PASS_MARK:g}% late or missing frames, system under test "
                f"{f'SCHED_RR {priority}' if priority else 'ordinary scheduling'}, media beat {beat} ticks, "
                f"ceiling: {'loopback' if ceiling == 'loop' else 'a played recording'} (process logs: {log_path})",
                flush=True,
            )
            print(HEADER, flush=True)
        greeting = {"text": "benchmark", "tone_hz": 440.0, "duration_ms": bench.greeting_ms}
        async with EmulatorServer(
            "127.0.0.1", 0, speed=2.0, ping_interval_s=0, annotations={"greeting": greeting}
        ) as emu:
            failed: set[str] = set()  # a path stops at its first failing step: its capacity is known then
            for calls in steps:
                for path in paths:
                    if path in failed:
                        continue
                    for attempt in range(1, ATTEMPTS + 1):
                        with _collect_between_steps():
                            step = await (
                                bench.ceiling_step(calls)
                                if path == "ceiling"
                                else bench.bridge_step(calls, emu, front=path == "front")
                            )
                        step.attempt = attempt
                        print(json.dumps(step.to_json()) if as_json else _row(step), flush=True)
                        for error in step.errors:
                            if not as_json:
                                print(f"    ! {error}", flush=True)
                        emu.sessions.clear()  # their recordings are scored; keep the memory flat
                        if step.passed:
                            break
                    results.append(step)
                    if not step.passed:
                        failed.add(path)
    summary = summarize(results, max(steps)) | {
        "realtime_priority": priority,
        "media_beat_frames": beat,
        "ceiling": ceiling,
    }
    if as_json:
        print(json.dumps(summary), flush=True)
    else:
        ratio = "n/a" if summary["ratio"] is None else f"{100 * summary['ratio']:.0f}%"
        bound = ""
        if summary["ratio"] is not None and summary["ratio_is_upper_bound"]:
            bound = " (an upper bound: the ceiling passed every step; raise --max-calls to find its limit)"
        ours, ceiling = summary["bridge_max_calls"], summary["ceiling_max_calls"]
        print(
            f"\nmost clean calls: bridge {'-' if ours is None else ours}, pjsua2 C loopback "
            f"{'-' if ceiling is None else ceiling} -> {ratio} of the ceiling{bound} "
            f"(goal >= 75%: {_goal(summary['goal_ratio_met'])})"
        )
        if ours is not None:
            p99 = summary["inbound_p99_ms_at_max"]
            print(
                f"inbound p99 (capture + uplink) at {ours} calls: {'-' if p99 is None else f'{p99:.1f} ms'} "
                f"(goal <= 10 ms: {_goal(summary['goal_inbound_p99_met'])})"
            )
        if "front_max_calls" in summary:
            through, front_ratio = summary["front_max_calls"], summary["front_ratio"]
            cpu, added = summary["front_cpu_ms_per_call_at_max"], summary["front_added_setup_p50_ms_at_max"]
            print(
                f"through the front (Kamailio): {through} clean calls -> "
                f"{'n/a' if front_ratio is None else f'{100 * front_ratio:.0f}%'} of the same workers called directly"
                f"{' (both passed every step)' if summary['front_ratio_is_lower_bound'] else ''}"
                f"{' (at most: the direct path passed every step)' if summary['front_ratio_is_upper_bound'] else ''} "
                f"(goal >= 90%: {_goal(summary['goal_front_ratio_met'])}); Kamailio "
                f"{'-' if cpu is None else f'{cpu:.2f} ms'} of CPU per call, set-up "
                f"{'-' if added is None else f'{added:+.1f} ms'} (p50, front minus direct)"
            )
        sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callbridge bench calls", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per step and line, then a summary")
    parser.add_argument("--max-calls", type=int, default=16, help="largest step (default 16)")
    parser.add_argument("--step", type=int, default=4, help="calls added per step (default 4)")
    parser.add_argument("--seconds", type=float, default=12.0, help="measured window per step (default 12)")
    parser.add_argument(
        "--steps",
        help="comma-separated call counts to run instead of --step/--max-calls, e.g. 112,128,144 (to probe near "
        "the limits a full ladder found; the summary then counts only these steps)",
    )
    parser.add_argument(
        "--only", choices=("bridge", "ceiling"), help="run one path only (with --front: bridge and front)"
    )
    parser.add_argument(
        "--front",
        choices=("kamailio",),
        help="also run the bridge's workers behind Kamailio, every call to its one address (the front path), and "
        "compare: capacity, Kamailio's CPU per call, added set-up time",
    )
    parser.add_argument(
        "--ceiling",
        choices=("loop", "play"),
        default="loop",
        help="the ceiling's callee: loop each call's audio back to itself in the conference bridge (default, as "
        "the issue defines it), or play a looped recording to it and take its audio in (what it sends then does "
        "not depend on what it receives, as in the bridge)",
    )
    parser.add_argument(
        "--realtime-priority",
        type=int,
        default=0,
        help="run the system under test (bridge workers, loopback apps) SCHED_RR at this priority, as "
        "`serve --realtime-priority` does; the load callers and the emulator stay ordinary (default 0: none)",
    )
    parser.add_argument(
        "--media-beat",
        type=int,
        default=BEAT_FRAMES,
        help=f"the bridge workers' media beat in 20 ms ticks, as `serve`'s media_beat_frames (default {BEAT_FRAMES})",
    )
    # internal roles (subprocesses of the benchmark)
    parser.add_argument("--role", choices=("bench", "caller", "loopback"), default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--uris", help=argparse.SUPPRESS)
    parser.add_argument("--play", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "caller":
        result = asyncio.run(run_caller(args.uris.split(","), Path(args.play)))
        print(json.dumps(result), flush=True)
        return 0
    if args.role == "loopback":
        use_realtime(args.realtime_priority)  # before pjsua starts, as a worker does
        return asyncio.run(run_loopback(args.port, Path(args.play) if args.play else None))
    if args.max_calls < 1 or args.step < 1 or args.seconds <= 0:
        parser.error("--max-calls, --step and --seconds must be positive")
    if not 0 <= args.realtime_priority <= MAX_PRIORITY:
        parser.error(f"--realtime-priority must be 0..{MAX_PRIORITY}")
    if not 1 <= args.media_beat <= MAX_BEAT_FRAMES:
        parser.error(f"--media-beat must be 1..{MAX_BEAT_FRAMES}")
    steps = list(range(args.step, args.max_calls + 1, args.step)) or [args.max_calls]
    if args.steps:
        try:
            steps = sorted({int(x) for x in args.steps.split(",") if x.strip()})
        except ValueError:
            parser.error(f"--steps must be comma-separated positive integers, not {args.steps!r}")
        if not steps or steps[0] < 1:
            parser.error("--steps must be comma-separated positive integers")
    paths = [args.only] if args.only else ["bridge", "ceiling"]
    if args.front:
        from bridge.serve.front import FrontError, require_kamailio

        try:
            require_kamailio()
        except FrontError as exc:
            parser.error(str(exc))
        paths = ["bridge", "front"] + [p for p in paths if p == "ceiling"]
    return asyncio.run(
        run_bench(steps, args.seconds, args.json, paths, args.realtime_priority, args.media_beat, args.ceiling)
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
