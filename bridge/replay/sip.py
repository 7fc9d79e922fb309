"""``--via sip``: the same scripts as real phone calls into a running ``callbridge serve``.

By default this starts everything itself, as ``bridge/devkit/demo.py`` does: a private ``redis-server``, the Realtime
emulator (in this process) and a worker pool whose dialplans directory holds one copy of each script's dialplan per
dialect (``beta`` and ``ga`` on their own called numbers). With ``--bridge sip:HOST:PORT`` it calls a bridge that
is already running instead, and reads that bridge's ``--report-file`` (``--bridge-reports``).

Each call is placed by the pjsua2 softphone in its own process (``python -m bridge call``: one pjsua2 endpoint per
process). The softphone cannot react to what it hears, so the caller's side is planned ahead: the script is first
replayed ``--via direct`` in the same dialect, and the instants at which that virtual caller spoke, pressed keys and
hung up (counted from the answer) become one WAV with the turns placed at those instants, ``--dtmf DIGITS@S`` and
``--hangup-after S``. Waits and barge-ins are therefore approximated by the direct run's timing, which is close
because the emulator answers the same way; a real network adds a few milliseconds.

The comparison then reads the worker's own per-call report (``Settings.report_file``: one JSON line per call, the
session's ``CallReport``), matched to the softphone's call by SIP Call-ID. SIP runs have no decoded event stream,
so their event comparison uses the session's notes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from bridge import events as ev
from bridge.audio.frames import BYTES_PER_FRAME_PCM16, FRAME_MS, SAMPLE_RATE
from bridge.replay.compare import DialectRun, ScriptResult, check_expectations, judge, run_config
from bridge.replay.direct import SPAN_GAP_MS, VOICED_DBFS, DirectOptions, frame_dbfs, run_direct
from bridge.replay.emulation import EmulatorSets
from bridge.replay.orchestrator import OrchestratorServer
from bridge.replay.script import CallScript, LineSpec
from bridge.store.reportfile import read_reports

TAIL_S: Final = 4.0  # the softphone hangs up this long after the planned call end if the bridge has not
REPORT_WAIT_S: Final = 15.0  # for the worker's report line after the call ended
POOL_READY_S: Final = 40.0
LISTENER_START_S: Final = 1.5  # for a transfer target's softphone to bind its port

Progress = Callable[[str, str, DialectRun | None], None]
OnResult = Callable[[ScriptResult], None]
Plans = Mapping[tuple[str, str], "CallerPlan"]  # (script, dialect) -> the caller's plan


@dataclass
class SipOptions:
    bridge: str | None = None  # "sip:HOST:PORT" of a running bridge; None: start one here
    bridge_reports: Path | None = None  # that bridge's report file
    emulator_url: str | None = None  # that bridge's emulator (http://HOST:PORT), for annotations
    target: str = "emulator"  # or "openai": the started workers use the real service (OPENAI_API_KEY)
    workers: int = 1
    work_dir: Path | None = None  # keep the caller WAVs, recordings and dialplans here (default: a temp dir)
    emulator_settings: Mapping[str, Any] = field(default_factory=dict)  # defaults of the started emulator
    emulator_sets: EmulatorSets = field(default_factory=EmulatorSets)  # --emulator-set, per model or dialect
    tolerance_ms: float | None = None  # timing figures closer than this are alike, where a script does not say
    # > 0: every call's RTP both ways through an impairment relay (bridge/devkit/rtprelay.py) that holds each packet
    # a further 0..jitter_ms (started here only: not with ``bridge``)
    jitter_ms: float = 0.0


# --------------------------------------------------------------------------------------------------------------
# The caller's plan


@dataclass
class CallerPlan:
    """What the softphone does, timed from the answer."""

    audio: bytes  # PCM16 8 kHz, the turns at their instants, silence between
    dtmf: list[tuple[str, float]]
    hangup_after: float | None  # None: the bridge ends the call (transfer, end_call); the phone waits TAIL_S more
    caller_spans: list[tuple[float, float, str]]  # ms from the answer
    duration_s: float
    turns: int
    echo: str | None = None  # the softphone's --echo (DB@MS[/NOISE]): the script's line returns what it hears


def plan_caller(script: CallScript, dialect: str, reference: DialectRun | None = None) -> CallerPlan:
    """The softphone's plan from a direct replay of the same script and dialect (see the module docstring)."""
    ref = reference or run_direct(script, dialect)
    answered = next((t for t, _ in ref.noted(ev.Answered)), 0.0)
    spans = [(s - answered, e - answered, what) for s, e, what in ref.caller_spans]
    audio = bytearray()
    dtmf: list[tuple[str, float]] = []
    hangup: float | None = None
    speech = iter(sorted(i for i, t in enumerate(script.turns) if t.say is not None))
    for start, _end, what in spans:
        if what == "hangup":
            hangup = start / 1000.0
        elif what.startswith("DTMF "):
            dtmf.append((what.removeprefix("DTMF "), round(start / 1000.0, 3)))
        else:
            index = next(speech, None)
            if index is None:
                continue
            at = round(start / 1000.0 * SAMPLE_RATE) * 2
            if len(audio) < at:
                audio += bytes(at - len(audio))
            audio += script.caller_audio[index]
    pad = (-len(audio)) % BYTES_PER_FRAME_PCM16
    return CallerPlan(
        audio=bytes(audio) + bytes(pad),
        dtmf=dtmf,
        hangup_after=hangup,
        caller_spans=spans,
        duration_s=(ref.duration_ms - answered) / 1000.0,
        turns=ref.turns_done,
        echo=_echo_arg(script.model.line),
    )


def _echo_arg(line: LineSpec | None) -> str | None:
    """The softphone's ``--echo`` for a script's line (None: the line returns nothing)."""
    if line is None:
        return None
    return f"{line.echo_db:g}@{line.echo_delay_ms:g}" + ("" if line.noise_dbfs is None else f"/{line.noise_dbfs:g}")


def heard_spans(pcm: bytes, offset_ms: float = 0.0) -> list[tuple[float, float]]:
    """Agent audio spans in what the phone recorded (20 ms frames louder than the VAD floor)."""
    spans: list[tuple[float, float]] = []
    for i in range(0, len(pcm) - BYTES_PER_FRAME_PCM16 + 1, BYTES_PER_FRAME_PCM16):
        if frame_dbfs(pcm[i : i + BYTES_PER_FRAME_PCM16]) <= VOICED_DBFS:
            continue
        t = offset_ms + i // BYTES_PER_FRAME_PCM16 * FRAME_MS
        if spans and t - spans[-1][1] <= SPAN_GAP_MS:
            spans[-1] = (spans[-1][0], t + FRAME_MS)
        else:
            spans.append((t, t + FRAME_MS))
    return spans


def reply_gaps(caller: list[tuple[float, float, str]], agent: list[tuple[float, float]]) -> list[float]:
    gaps = []
    for _start, end, what in caller:
        if what == "hangup" or what.startswith("DTMF"):
            continue
        after = [s for s, _ in agent if s >= end]
        if after:
            gaps.append(round(after[0] - end, 1))
    return gaps


# --------------------------------------------------------------------------------------------------------------
# Infrastructure


_LOOPBACK_TARGET: Final = re.compile(r"^(sips?:(?:[^@]+@)?(?:127\.0\.0\.1|localhost))(?::(\d+))?(.*)$")


def _dialplan_yaml(
    script: CallScript,
    dialect: str,
    name: str,
    number: str,
    orchestrators: OrchestratorServer | None = None,
    moved: Mapping[int, int] | None = None,
) -> dict[str, Any]:
    data = script.plan(dialect).model_dump(mode="json", exclude={"source_file"})
    if data.get("orchestrator") and orchestrators is not None:  # the replay's scripted one answers
        data["orchestrator"] = {**data["orchestrator"], "url": orchestrators.url(script.name, dialect)}
    found = _LOOPBACK_TARGET.match(data.get("transfer_target") or "")
    if found and moved and (port := int(found.group(2) or 5060)) in moved:  # the listener answers elsewhere
        data["transfer_target"] = f"{found.group(1)}:{moved[port]}{found.group(3)}"
    return {**data, "name": name, "match": [number], "dialect": dialect}


def numbers(scripts: list[CallScript], dialects: list[str]) -> dict[tuple[str, str], str]:
    """A called number per (script, dialect): 7SSSD, D = the dialect's index."""
    return {(s.name, d): f"7{i:03d}{j}" for i, s in enumerate(scripts) for j, d in enumerate(dialects)}


def write_dialplans(
    directory: Path,
    scripts: list[CallScript],
    dialects: list[str],
    orchestrators: OrchestratorServer | None = None,
    moved: Mapping[int, int] | None = None,
) -> dict[tuple[str, str], str]:
    """One dialplan per script and dialect; ``moved``: loopback transfer targets' ports and where their listeners
    answer instead."""
    directory.mkdir(parents=True, exist_ok=True)
    table = numbers(scripts, dialects)
    for i, script in enumerate(scripts):
        for dialect in dialects:
            name = f"replay-{i:03d}-{dialect}"
            data = _dialplan_yaml(script, dialect, name, table[(script.name, dialect)], orchestrators, moved)
            (directory / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return table


async def place_call(uri: str, plan: CallerPlan, work: Path, tag: str) -> dict[str, Any]:
    """Run the softphone (``python -m bridge call``) and return its JSON summary plus what it heard."""
    from bridge.audio.wav import read_wav, write_wav
    from bridge.devkit.ports import softphone_port_args

    play, heard = work / f"{tag}.caller.wav", work / f"{tag}.heard.wav"
    write_wav(play, plan.audio, "ulaw")  # the script's G.711 bytes, as the phone line carries them
    limit = plan.hangup_after if plan.hangup_after is not None else plan.duration_s + TAIL_S
    args = [sys.executable, "-m", "bridge", "call", uri, "--play", str(play), "--record", str(heard)]
    args += ["--hangup-after", f"{limit:.3f}", "--json", *softphone_port_args()]
    for digits, at in plan.dtmf:
        args += ["--dtmf", f"{digits}@{at:.3f}"]
    if plan.echo is not None:
        # One word: the level starts with a minus. No concealment: the line returns what reached it, frame for
        # frame; a softphone starved of CPU would otherwise invent audio (PLC) that no line sends back.
        args += [f"--echo={plan.echo}", "--no-plc"]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ}
    )
    out, err = await proc.communicate()
    lines = [x for x in out.decode(errors="replace").splitlines() if x.strip().startswith("{")]
    if not lines:
        tail = err.decode(errors="replace")[-400:]
        return {"answered": False, "reason": f"softphone failed ({proc.returncode}): {tail}", "heard": b""}
    summary: dict[str, Any] = json.loads(lines[-1])
    summary["heard"] = read_wav(heard) if heard.exists() else b""
    return summary


async def wait_report(path: Path, sip_call_id: str, within_s: float = REPORT_WAIT_S) -> dict[str, Any] | None:
    """The worker's report of the call the softphone placed (it knows the call by its own SIP Call-ID)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        for record in read_reports(path):
            if record.get("sip_call_id") == sip_call_id:
                return record
        await asyncio.sleep(0.1)
    return None


class _Annotator:
    """Gives a reconnected emulator session the caller turns its lost predecessor had not consumed yet."""

    def __init__(self, emulator: Any) -> None:
        self.emulator = emulator
        self.known: set[int] = {id(r) for r in emulator.sessions}  # records, not ids: ids may repeat
        self.turns: list[dict[str, Any]] = []
        self.greeting: dict[str, Any] | None = None
        self.by_dialect: dict[str, list[Any]] = {}

    def start_script(self, annotations: Mapping[str, Any], reconnect_greeting: Mapping[str, Any] | None) -> None:
        self.turns = list(annotations.get("turns", []))
        self.greeting = dict(reconnect_greeting) if reconnect_greeting is not None else None
        self.by_dialect = {}

    def poll(self) -> None:
        for record in list(self.emulator.sessions):
            if id(record) in self.known:
                continue
            self.known.add(id(record))
            earlier = self.by_dialect.setdefault(record.dialect, [])
            if earlier:  # a reconnect of this script's call in that dialect
                consumed = sum(1 for r in earlier for t in r.transcripts if t.get("text"))
                more: dict[str, Any] = {"turns": self.turns[consumed:]}
                if self.greeting is not None:
                    more["greeting"] = self.greeting
                with contextlib.suppress(KeyError):  # already gone again
                    self.emulator.annotate(record.id, more)
            earlier.append(record)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)


def transfer_targets(scripts: list[CallScript], dialects: list[str]) -> dict[int, str]:
    """Loopback ports that the scripts' dialplans transfer to (a softphone must answer there)."""
    out: dict[int, str] = {}
    for script in scripts:
        for dialect in dialects:
            plan = script.plan(dialect)
            found = _LOOPBACK_TARGET.match(plan.transfer_target or "")
            # the model's tool transfers there, or the orchestrator's decision (or its failover)
            if found and ("transfer_to_human" in plan.tool_names or plan.orchestrator is not None):
                out[int(found.group(2) or 5060)] = str(plan.transfer_target)
    return out


async def start_listeners(ports: list[int], work: Path) -> list[asyncio.subprocess.Process]:
    """A softphone answering on each port: the human agent a transfer reaches (``callbridge phone listen``)."""
    from bridge.devkit.ports import rtp_block

    procs = []
    for port in ports:
        log = (work / f"agent-{port}.log").open("wb")
        argv = ["-m", "bridge.devkit.softphone", "listen", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--duration", "3600", "--json"]
        if rtp := rtp_block(2):  # its RTP pair in CALLBRIDGE_PORT_RANGE too
            argv += ["--rtp-port", str(rtp)]
        proc = await asyncio.create_subprocess_exec(sys.executable, *argv, stdout=log, stderr=log)
        log.close()
        procs.append(proc)
    if procs:
        await asyncio.sleep(LISTENER_START_S)
    return procs


async def stop_listeners(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:  # by our own child's pid, never by name
        if proc.returncode is None:
            proc.terminate()
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="callbridge-replay-") as tmp:
        yield Path(tmp)


# --------------------------------------------------------------------------------------------------------------
# Runs


def build_run(
    script: CallScript,
    dialect: str,
    plan: CallerPlan,
    phone: Mapping[str, Any],
    report: Mapping[str, Any] | None,
    target: str,
    wall_s: float,
    sets: EmulatorSets | None = None,
) -> DialectRun:
    model = _model(script, dialect)  # the plan the worker was given
    run = DialectRun(script=script.name, dialect=dialect, model=model, via="sip", target=target)
    more = (sets or EmulatorSets()).for_run(dialect, model)
    run.config = run_config(script.plan(dialect), dialect, model, script.emulator_settings(0, dialect, model, "", more))
    if report is not None:
        run.report = {k: v for k, v in report.items() if k != "worker"}
    answered = next((t for t, _ in run.noted(ev.Answered)), 0.0)
    heard: bytes = phone.get("heard", b"")
    run.agent_spans = heard_spans(heard, answered)
    end_ms = float(phone.get("duration_s") or 0.0) * 1000.0
    run.caller_spans = [(s + answered, e + answered, w) for s, e, w in plan.caller_spans if s <= end_ms + FRAME_MS]
    run.reply_gaps_ms = reply_gaps(run.caller_spans, run.agent_spans)
    run.turns_total = len(script.turns)
    run.turns_done = min(plan.turns, sum(1 for s, _, w in plan.caller_spans if s <= end_ms + FRAME_MS))
    if (phone.get("transfer") or {}).get("answered"):
        run.ended_by = "transfer"
    elif phone.get("hangup_by") == "local":
        run.ended_by = "caller"
    elif phone.get("hangup_by") == "remote":
        run.ended_by = "agent"
    run.duration_ms = round(answered + end_ms, 1)
    run.wall_s = round(wall_s, 3)
    if not phone.get("answered"):
        run.runner_failures.append(f"the call was not answered: {phone.get('sip_status')} {phone.get('reason')}")
    if report is None:
        run.runner_failures.append("the worker wrote no report for this call")
    run.checks = check_expectations(script.expect(dialect), run)
    return run


def _as_scripted(report: dict[str, Any] | None, moved: Mapping[int, str]) -> dict[str, Any] | None:
    """The report with each transfer to a moved listener's port named by the target its script gave."""
    if report is None or not moved:
        return report
    entries = []
    for t, entry in report.get("reports", []):
        found = (
            _LOOPBACK_TARGET.match(str(entry.get("target", "")))
            if entry.get("kind") == ev.TransferStarted.kind
            else None
        )
        if found and found.group(2) and int(found.group(2)) in moved:
            entry = {**entry, "target": moved[int(found.group(2))]}
        entries.append([t, entry])
    return {**report, "reports": entries}


@dataclass(frozen=True)
class _Bench:
    """What every script's calls in one run share: the dialects and callers' plans, where reports and files go, and
    how results are told."""

    dialects: list[str]
    plans: Plans
    reports: Path  # the worker's report file, read for each call's report line
    work: Path  # caller WAVs and recordings
    target: str  # "emulator" or "openai"
    progress: Progress | None = None
    on_result: OnResult | None = None
    orchestrators: OrchestratorServer | None = None  # the scripts' orchestrators (started pools only)
    tolerance_ms: float | None = None
    moved: Mapping[int, str] = field(default_factory=dict)  # a listener's port -> the transfer target it stands for
    emulator_sets: EmulatorSets = field(default_factory=EmulatorSets)


async def _replay_script(script: CallScript, uris: Mapping[str, str], bench: _Bench) -> ScriptResult:
    """One script's calls, a dialect each, side by side (``uris``: the called URI of each dialect), judged."""
    progress, orchestrators, dialects = bench.progress, bench.orchestrators, bench.dialects
    plans = {d: bench.plans[(script.name, d)] for d in dialects}

    async def one(dialect: str) -> DialectRun:
        if progress is not None:
            progress(script.name, dialect, None)
        t0 = time.perf_counter()
        answers = script.model.orchestrator.answers if script.model.orchestrator is not None else None
        scripted = orchestrators.add(script.name, dialect, answers) if orchestrators and answers else None
        phone = await place_call(uris[dialect], plans[dialect], bench.work, f"{script.name}-{dialect}")
        report = await wait_report(bench.reports, str(phone.get("call_id", ""))) if phone.get("call_id") else None
        report = _as_scripted(report, bench.moved)
        wall_s = time.perf_counter() - t0
        run = build_run(script, dialect, plans[dialect], phone, report, bench.target, wall_s, bench.emulator_sets)
        if scripted is not None:
            run.runner_failures += scripted.finish()
            run.checks = check_expectations(script.expect(dialect), run)
        if progress is not None:
            progress(script.name, dialect, run)
        return run

    runs = await asyncio.gather(*(one(d) for d in dialects))  # the dialects' calls run side by side
    result = judge(script, dict(zip(dialects, runs, strict=True)), tolerance_ms=bench.tolerance_ms)
    if bench.on_result is not None:
        bench.on_result(result)
    return result


def _model(script: CallScript, dialect: str) -> str:
    from bridge.realtime.dialects import DIALECTS

    return script.plan(dialect).profile.model or DIALECTS[dialect].default_model


def _first_settings(
    script: CallScript, dialects: Sequence[str], sets: EmulatorSets
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The emulator's settings for a script's first sessions: those of every dialect's, and per model those of the
    dialect's run on it (its dialect's, model's and ``--emulator-set``'s; the server tells the sessions apart by
    their model). No seed: the dialects' calls run side by side, and seeded ids would be the same in both."""
    common = {k: v for k, v in script.emulator_settings(0).items() if k != "seed"}
    models: dict[str, dict[str, Any]] = {}
    for dialect in dialects:
        model = _model(script, dialect)
        own = script.emulator_settings(0, dialect, model, "", sets.for_run(dialect, model))
        models[model] = {k: v for k, v in own.items() if k != "seed"}
    return common, models


async def replay_sip_async(
    scripts: list[CallScript],
    dialects: list[str],
    options: SipOptions,
    plans: Plans,
    progress: Progress | None = None,
    on_result: OnResult | None = None,
) -> list[ScriptResult]:
    if options.bridge is not None:
        return await _replay_running(scripts, dialects, options, plans, progress, on_result)
    from bridge.config import OPENAI_URL, Settings
    from bridge.devkit.ports import free_port, free_port_block, listen_port, pool_rtp, port_range
    from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
    from bridge.emulator import EmulatorServer
    from bridge.serve.pool import Pool

    results: list[ScriptResult] = []
    with _workdir(options.work_dir) as work, contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(EmbeddedRedis()).url if redis_server_binary() else None
        orchestrators = OrchestratorServer()  # the scripts' orchestrators (those of orchestrated plans)
        await orchestrators.start()
        # with CALLBRIDGE_PORT_RANGE, the transfer targets' listeners answer on ports of the range too
        targets = transfer_targets(scripts, dialects)
        moved = {port: free_port() if port_range() else port for port in targets}
        table = write_dialplans(work / "dialplans", scripts, dialects, orchestrators, moved)
        reports = work / "calls.jsonl"
        async with (
            EmulatorServer("127.0.0.1", listen_port(), **dict(options.emulator_settings)) as emulator,
            contextlib.AsyncExitStack() as cleanup,
        ):
            cleanup.push_async_callback(orchestrators.stop)
            settings = Settings(
                sip_port=free_port_block(options.workers),  # worker i listens on sip_port + i
                workers=options.workers,
                **pool_rtp(options.workers),  # every port in CALLBRIDGE_PORT_RANGE when it is set
                realtime_url=OPENAI_URL if options.target == "openai" else emulator.base_url,
                # the workers get the key through their settings pipe, never their environment
                api_key=(os.environ.get("OPENAI_API_KEY") or None) if options.target == "openai" else None,
                redis_url=redis_url,
                dialplans=work / "dialplans",
                report_file=reports,
            )
            pool = Pool(settings)
            await pool.start()
            listeners = await start_listeners(sorted(moved.values()), work)
            annotator = _Annotator(emulator)
            stop = asyncio.Event()
            watcher = asyncio.create_task(annotator.run(stop))
            try:
                await asyncio.wait_for(pool.wait_ready(), POOL_READY_S)
                ports = [slot.sip_port for slot in pool.slots]
                if options.jitter_ms > 0:
                    ports = [await _jittered(cleanup, port, options.jitter_ms) for port in ports]
                bench = _Bench(
                    dialects,
                    plans,
                    reports,
                    work,
                    options.target,
                    progress,
                    on_result,
                    orchestrators,
                    options.tolerance_ms,
                    {moved[port]: target for port, target in targets.items() if moved[port] != port},
                    options.emulator_sets,
                )
                for i, script in enumerate(scripts):
                    annotations = script.annotations_json()
                    annotator.start_script(annotations, script.reconnect_greeting())
                    common, models = _first_settings(script, dialects, options.emulator_sets)
                    emulator.queue_next(len(dialects), common, annotations, models)
                    port = ports[i % len(ports)]
                    uris = {d: f"sip:{table[(script.name, d)]}@127.0.0.1:{port}" for d in dialects}
                    results.append(await _replay_script(script, uris, bench))
            finally:
                stop.set()
                await watcher
                await pool.stop()
                await stop_listeners(listeners)
    return results


async def _jittered(stack: contextlib.AsyncExitStack, port: int, jitter_ms: float) -> int:
    """The SIP port of a relay to the worker on ``port`` whose calls' packets come each 0..``jitter_ms`` late,
    both ways (seeded by the port), closed with ``stack``."""
    from bridge.devkit.netem import Impairment
    from bridge.devkit.rtprelay import RtpRelay

    relay = RtpRelay(("127.0.0.1", port), Impairment(jitter_ms=jitter_ms, seed=port), Impairment(jitter_ms=jitter_ms))
    await relay.start()
    stack.push_async_callback(relay.close)
    return relay.sip_port


async def _replay_running(
    scripts: list[CallScript],
    dialects: list[str],
    options: SipOptions,
    plans: Plans,
    progress: Progress | None,
    on_result: OnResult | None,
) -> list[ScriptResult]:
    """Calls into a bridge someone else runs: its dialplans route the script's called number."""
    from bridge.errors import ConfigError

    assert options.bridge is not None
    target = options.bridge.removeprefix("sip:")
    if options.bridge_reports is None:
        raise ConfigError("--bridge", "--bridge-reports", "the running bridge's --report-file is needed to compare")
    results = []
    with _workdir(options.work_dir) as work:
        reports = options.bridge_reports
        bench = _Bench(dialects, plans, reports, work, options.target, progress, on_result, None, options.tolerance_ms)
        bench = dataclasses.replace(bench, emulator_sets=options.emulator_sets)
        for script in scripts:
            if options.emulator_url:
                await _post_annotations(options.emulator_url, dialects, script, options.emulator_sets)
            results.append(await _replay_script(script, {d: f"sip:{script.called}@{target}" for d in dialects}, bench))
    return results


async def _post_annotations(base: str, dialects: Sequence[str], script: CallScript, sets: EmulatorSets) -> None:
    import aiohttp

    common, models = _first_settings(script, dialects, sets)
    body = {"count": len(dialects), "settings": common, "models": models, "annotations": script.annotations_json()}
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{base.rstrip('/')}/control/next", json=body)
        resp.raise_for_status()


def replay_sip(
    scripts: list[CallScript],
    dialects: list[str],
    options: SipOptions,
    progress: Progress | None = None,
    on_result: OnResult | None = None,
) -> list[ScriptResult]:
    """Plan every caller (a direct replay each, in virtual time), then place the calls."""
    direct = DirectOptions(emulator_sets=options.emulator_sets)  # the caller waits for the agent as they would
    plans = {(s.name, d): plan_caller(s, d, run_direct(s, d, direct)) for s in scripts for d in dialects}
    return asyncio.run(replay_sip_async(scripts, dialects, options, plans, progress, on_result))
