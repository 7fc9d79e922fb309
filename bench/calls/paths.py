"""One step of each path: the bridge's workers (called on their own ports, or through Kamailio's one address)
and the ceiling's loopback apps, loaded by the same callers and measured over the same kind of window."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.calls.callers import CALLS_PER_PROCESS, SETUP_S, boot_callers, boot_loopbacks, collect
from bench.calls.machine import ROOT, process_tree, run_time_s, stderr_to, stop
from bench.calls.redis import measure as measure_redis
from bench.calls.report import Step
from bench.calls.score import (
    CpuSample,
    score_bridge,
    score_call_counts,
    score_callers,
    score_cpu,
    score_memory,
)
from bench.calls.sink import TONE_HZ, Sink, equal_work, heard_tone
from bridge.audio.frames import BEAT_FRAMES
from bridge.audio.wav import read_wav, write_wav
from bridge.devkit.ports import free_port_block, pool_rtp
from bridge.devkit.tlscert import self_signed
from bridge.runtime.callcount import COUNT_CALLS_ENV
from bridge.store.reportfile import read_reports

if TYPE_CHECKING:
    from bench.calls.otlp import OtlpSink
    from bridge.config import Settings
    from bridge.serve.front import KamailioFront
    from bridge.serve.pool import Pool

ASSETS = ROOT / "bridge" / "assets"
NUMBER = "4000"
CPU_CLOSE_EARLY_S = 0.5  # the CPU window closes this much before the callers hang up
POOL_READY_S = 60.0
NATIVE_DOWNLINK_ENV = "CALLBRIDGE_NATIVE_DOWNLINK"  # "0": the bench's workers decode the model's audio in the loop
REPORTS_WITHIN_S = 15.0  # for the workers' call reports once the callers have hung up
MODEL_SPEED = 2.0  # the emulator's pace for the workers, as a multiple of real time (and the equal-work floor's)
GREETING_TAIL_S = 8.0  # the agent's one greeting outlasts the set-up and the window by this much


def greeting_s(seconds: float) -> float:
    """How long the agent's one greeting is, for a window of ``seconds``."""
    return SETUP_S + seconds + GREETING_TAIL_S


def caller_wav(path: Path) -> Path:
    """The bundled caller recording, as 8 kHz mono PCM16 (the player loops it)."""
    write_wav(path, read_wav(ASSETS / "caller_hours.wav"))
    return path


def dialplan(directory: Path, echo_guard: bool = True) -> Path:
    """The bench's one plan; ``echo_guard`` False turns the plan's echo guard off (the ``echo_off`` path)."""
    directory.mkdir(parents=True, exist_ok=True)
    plan: dict[str, Any] = {
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
    if not echo_guard:
        plan["echo_guard"] = {"enabled": False}
    (directory / "bench.yaml").write_text(json.dumps(plan))
    return directory


def uri(port: int, scheme: str = "sip") -> str:
    return f"{scheme}:{NUMBER}@127.0.0.1:{port}"


@dataclass
class _BridgeSystem:
    """The bridge path's system under test: the pool, and Kamailio in front of it on the front path."""

    settings: Settings
    pool: Pool
    front: bool
    kamailio: KamailioFront | None = None

    def worker_pids(self) -> list[int]:
        return [s.proc.pid for s in self.pool.slots if s.proc is not None]

    def front_pids(self) -> list[int]:
        kamailio = self.kamailio
        return process_tree(kamailio.proc.pid) if kamailio is not None and kamailio.proc else []


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
        redis_url: str | None = None,
    ) -> None:
        # the bridge paths' workers count their loop's Python calls per beat per call (--count-calls)
        self.count_calls = False
        # the bridge path's workers keep their calls in this private redis-server (--redis; bench capacity)
        self.redis_url = redis_url
        # the bridge path: each load caller's calls to as many workers (True) or all to one (False); see the doc
        self.spread = spread
        # "loop": each call's audio back to itself; "play": a recording out, audio in; "stream": loop, and the
        # call's audio sent to a socket from C as a worker's uplink sends it; "duplex": sent so, and the model's
        # audio the socket brings back played to the call from C; "equal": duplex with a worker's work (the C echo
        # guard on each call, the model's audio at the workers' pace); "wss": equal over TLS (the native engine).
        # Comma-separated: the first is the "ceiling" path, each other a path of its own name.
        kinds = ceiling.split(",")
        self.ceiling = kinds[0]
        self.ceiling_kinds = {"ceiling": kinds[0]} | {k: k for k in kinds[1:]}  # path -> kind
        self.seconds = seconds
        self.priority = priority  # SCHED_RR priority of the system under test (workers, loopback apps); 0: none
        self.beat = beat  # the workers' media beat, in 20 ms ticks (Settings.media_beat_frames)
        self.work = work
        self.log_path = log_path
        self.play = caller_wav(work / "caller.wav")
        self._tls: tuple[Path, Path] | None = None  # the srtp path's certificate and key, made when first needed
        # called at the window's start and end with the time (bench capacity reads Redis and the sockets there)
        self.on_window: Callable[[float], None] | None = None
        self.otlp: OtlpSink | None = None  # the otel path's collector (--otel), started by the ladder

    def extra_env(self, path: str) -> dict[str, str] | None:
        """The workers' environment beyond the bench's own, for ``path``: the model_tls path trusts its model's
        self-signed certificate as a CA; the otel path exports every call's spans (sampling 100 %) to the bench's
        receiver."""
        if path == "model_tls":
            return {"SSL_CERT_FILE": str(self.tls_files()[0])}
        if path == "otel":
            if self.otlp is None:
                raise RuntimeError("the otel path needs the bench's OTLP receiver (bench.otlp)")
            return {
                "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp.endpoint,
                "OTEL_TRACES_SAMPLER": "always_on",
                "OTEL_SERVICE_NAME": "callbridge-bench",
            }
        return None

    def tls_files(self) -> tuple[Path, Path]:
        """The TLS certificate of the srtp path's workers and the model_tls path's emulator (for 127.0.0.1,
        self-signed: also the CA their clients trust) and its key."""
        if self._tls is None:
            self._tls = self_signed(self.work / "tls")
        return self._tls

    # -- both paths ----------------------------------------------------------------------------------------

    async def _measure(
        self,
        step: Step,
        uris: list[str],
        pids: list[int],
        srtp: str = "off",
        tls_ca: Path | None = None,
        record: Path | None = None,
    ) -> tuple[float, float]:
        """Load ``uris`` with the callers, measure the window, score the callers' rows; returns the window.
        ``record``: where the callers record what their calls hear (see :func:`boot_callers`)."""
        callers = await boot_callers(uris, self.play, self.seconds, self.log_path, srtp, tls_ca, record)
        redis = None
        if self.redis_url and step.path != "ceiling":
            end = callers.end_at - CPU_CLOSE_EARLY_S
            redis = asyncio.create_task(measure_redis(self.redis_url, step.calls, callers.start_at, end))
        await self._window(step, callers.start_at, callers.end_at, pids, callers.pids)
        if redis is not None:
            step.redis = await redis
        score_callers(step, await collect(step, callers.procs))
        return callers.start_at, callers.end_at

    async def _window(
        self, step: Step, start_at: float, end_at: float, pids: list[int], caller_pids: list[int]
    ) -> None:
        """CPU over the window. The load callers hang up at ``end_at`` and exit, so the CPU window closes
        ``CPU_CLOSE_EARLY_S`` before it. ``on_window`` (if set) is called at both ends, with the time now."""
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        first = CpuSample.now(pids, caller_pids)
        if self.on_window is not None:
            self.on_window(time.monotonic())
        await asyncio.sleep(max(0.0, end_at - CPU_CLOSE_EARLY_S - time.monotonic()))
        score_cpu(step, first, CpuSample.now(pids, caller_pids))
        if self.on_window is not None:
            self.on_window(time.monotonic())
        score_memory(step, pids)
        step.window_s = round(end_at - start_at, 3)

    def _note_scheduling(self, step: Step, reported: list[str]) -> None:
        step.scheduling = sorted(set(reported))
        if self.priority and any(not r.startswith("SCHED_") for r in reported):
            step.errors.append(f"--realtime-priority {self.priority} not applied everywhere: {step.scheduling}")

    # -- the bridge path, called directly or through the front -----------------------------------------------

    async def bridge_step(self, calls: int, emulator: Any, path: str = "bridge") -> Step:
        """The bridge's workers, called on their own ports (``bridge``, the plan's defaults); ``front``: through
        Kamailio's one address; ``srtp``: every call SRTP (the workers' ``srtp: mandatory``, the callers offering
        SDES in ``sips:`` calls over TLS, as the workers accept SDES keys over TLS only); ``echo_off``: the plan's
        echo guard off; ``model_tls``: the model reached over TLS (``wss://``); ``otel``: every call traced."""
        from bridge.serve.pool import Pool

        front = path == "front"
        name = path
        step = Step(name, calls, math.ceil(calls / CALLS_PER_PROCESS))
        reports = self.work / f"reports-{step.path}-{calls}.jsonl"
        settings = self._settings(step, emulator.base_url, reports, front)
        counts = self.work / f"calls-{step.path}-{calls}"
        env = self.extra_env(path)
        if self.count_calls:
            counts.mkdir(exist_ok=True)
            env = (env or {}) | {COUNT_CALLS_ENV: str(counts)}
        system = _BridgeSystem(settings, Pool(settings, env), front)
        try:
            await self._start_bridge(system)
            self._note_scheduling(step, [s.scheduling for s in system.pool.slots])
            first_session = len(emulator.sessions)
            front_pids = system.front_pids()
            front0 = run_time_s(front_pids)
            uris = self._bridge_uris(system, calls)
            tls_ca = settings.sip_tls_cert  # the srtp path's: self-signed, its own CA
            start_at, end_at = await self._measure(step, uris, system.worker_pids(), settings.srtp, tls_ca)
            found = await self._reports(reports, calls)
            if front_pids:  # every INVITE, ACK and BYE of the step, and the OPTIONS probes meanwhile
                step.front_cpu_ms_per_call = round(1000 * (run_time_s(front_pids) - front0) / calls, 3)
        finally:
            await self._stop_bridge(system, calls)
        score_bridge(step, found, emulator.sessions[first_session:], start_at, end_at)
        if self.count_calls:
            score_call_counts(step, counts, start_at, end_at - CPU_CLOSE_EARLY_S)
        if path == "otel" and self.otlp is not None:  # the step's spans, exported by its workers' end at the latest
            step.otlp_exports, sent, step.otlp_spans = self.otlp.taken()
            step.otlp_kb = round(sent / 1024, 1)
        return step

    def _settings(self, step: Step, realtime_url: str, reports: Path, front: bool) -> Settings:
        """The step's pool. The srtp path's workers listen on TLS too, each on ``sip_tls_port + i``, in the same
        block of free ports as their SIP ports, after them (the TLS ports are TCP ports too)."""
        from bridge.config import Settings

        srtp = step.path == "srtp"
        listeners = step.processes + (1 if front else 0)
        sip_port = free_port_block(2 * listeners if srtp else listeners)
        cert, key = self.tls_files() if srtp else (None, None)
        return Settings(
            front="kamailio" if front else "none",
            front_dir=self.work / f"front-{step.calls}" if front else None,
            front_calls_per_source=0,  # every call of a step comes from the bench's one address, as a trunk's do
            sip_port=sip_port,
            sip_tls_port=sip_port + listeners if srtp else None,
            sip_tls_cert=cert,
            sip_tls_key=key,
            workers=step.processes,
            **pool_rtp(step.processes),  # in CALLBRIDGE_PORT_RANGE when it is set, as every port the bench takes
            realtime_url=realtime_url,
            dialplans=dialplan(self.work / f"dialplans-{step.path}", echo_guard=step.path != "echo_off"),
            report_file=reports,
            realtime_priority=self.priority,
            media_beat_frames=self.beat,
            srtp="mandatory" if srtp else "off",
            redis_url=self.redis_url,
            tracing="otlp" if step.path == "otel" else "off",  # the otel path: every call a trace
            # the bench's pool is built here, not read from the environment: CALLBRIDGE_NATIVE_DOWNLINK=0 compares the
            # workers with the model's audio decoded by the loop (docs/benchmarks.md, "The downlink in C")
            native_downlink=os.environ.get(NATIVE_DOWNLINK_ENV, "1") != "0",
        )

    async def _start_bridge(self, system: _BridgeSystem) -> None:
        from bridge.serve.front import KamailioFront, node_destinations

        with stderr_to(self.log_path):
            await system.pool.start()
            await asyncio.wait_for(system.pool.wait_ready(), POOL_READY_S)
            if system.front:
                caps = [(slot.sip_port, slot.max_calls) for slot in system.pool.slots]
                system.kamailio = KamailioFront(system.settings, node_destinations(system.settings, caps))
                await system.kamailio.start()

    def _bridge_uris(self, system: _BridgeSystem, calls: int) -> list[str]:
        if system.kamailio is not None:
            return [uri(system.settings.sip_port)] * calls  # the one address
        settings = system.settings
        slots = [i % settings.workers if self.spread else i // CALLS_PER_PROCESS for i in range(calls)]
        if settings.sip_tls_port:  # the srtp path: sips: calls to each worker's TLS port
            return [uri(settings.worker_tls_port(k) or 0, "sips") for k in slots]
        return [uri(system.pool.slots[k].sip_port) for k in slots]

    async def _stop_bridge(self, system: _BridgeSystem, calls: int) -> None:
        with stderr_to(self.log_path):
            await system.pool.stop()
            if system.kamailio is not None:
                await system.kamailio.stop()
                with contextlib.suppress(OSError):  # which worker it marked out, and why
                    shutil.copyfile(system.kamailio.log_file, self.front_log(calls))

    def front_log(self, calls: int) -> Path:
        """Where the front's Kamailio log of a step is kept (the step's run directory goes with the bench)."""
        return self.log_path.with_name(f"{self.log_path.stem}-front-{calls}.log")

    @staticmethod
    async def _reports(path: Path, count: int, within: float = REPORTS_WITHIN_S) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        lines: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            lines = read_reports(path)
            if len(lines) >= count:
                break
            await asyncio.sleep(0.1)
        return lines

    # -- the ceiling ---------------------------------------------------------------------------------------------

    def _sink_tls(self) -> ssl.SSLContext:
        """The ``wss`` floor's sink's TLS: the certificate the model_tls path's emulator has (its own CA)."""
        from bridge.emulator.server import server_tls

        return server_tls(*self.tls_files())

    async def ceiling_step(self, calls: int, path: str = "ceiling") -> Step:
        """The loopback apps carrying ``calls``, as ``path``'s kind of ceiling (``self.ceiling_kinds``). The
        ``duplex`` kind's callers record what they hear: each call must hear the sink's tone (:func:`heard_tone`)."""
        kind = self.ceiling_kinds[path]
        step = Step(path, calls, math.ceil(calls / CALLS_PER_PROCESS), ceiling=kind)
        loops: list[asyncio.subprocess.Process] = []
        play = self.play if kind == "play" else None
        duplex, equal, secure = kind in ("duplex", "equal", "wss"), kind in ("equal", "wss"), kind == "wss"
        # the equal-work floor's sink speaks the workers' greeting at the emulator's pace; its calls hold it all
        audio = (MODEL_SPEED, greeting_s(self.seconds)) if equal else (1.0, math.inf)
        tls = self._sink_tls() if secure else None
        sink = await Sink.start(TONE_HZ if duplex else None, *audio, tls) if kind not in ("loop", "play") else None
        heard = self.work / f"heard-{path}-{calls}" if duplex else None
        try:
            address = sink.address if sink is not None else ""
            ports, reported = await boot_loopbacks(
                loops,
                step.processes,
                play,
                self.priority,
                self.log_path,
                address,
                duplex,
                audio[1] if equal else 0.0,
                str(self.tls_files()[0]) if secure else "",
            )
            self._note_scheduling(step, reported)
            uris = [uri(ports[i // CALLS_PER_PROCESS]) for i in range(calls)]
            await self._measure(step, uris, [p.pid for p in loops], record=heard)
            # each call streams 50 appends of 20 ms (1280 bytes of base64 each) a second, at least over the window
            if sink is not None and sink.received < 0.9 * calls * step.window_s * 50 * 1280:
                step.errors.append(f"the {kind} ceiling's sink got only {sink.received} bytes: calls did not stream")
        finally:
            for proc in loops:
                await stop(proc)
            if equal:
                await equal_work(step, loops)
            if sink is not None:
                await sink.close()
            if heard is not None:
                step.errors += heard_tone(heard, calls, TONE_HZ)
                shutil.rmtree(heard, ignore_errors=True)
        return step
