"""Scoring a step from what its processes reported: the callers' rows, the workers' call reports, the emulator's
sessions and the CPU samples at both ends of the window. Nothing here waits or starts a process."""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.calls.machine import (
    cpu_by_pid,
    cpu_by_thread,
    cpu_seconds,
    machine_busy,
    preload_parents,
    pss_kb_by_pid,
)
from bench.calls.report import FRAME_MS, FRAMES_PER_S, Step, percentiles
from bridge import events as ev
from bridge.runtime import callcount

_UNDERRUNS = re.compile(r"(\d+) underruns")
APPEND = "input_audio_buffer.append"  # the Realtime client event that carries the caller's audio


def score_callers(step: Step, rows: list[dict[str, Any]]) -> None:
    """Answered calls, set-up times and late or missing frames at the callers (``bridge.sip.loadcall`` rows)."""
    expected_per_call = round(step.window_s * FRAMES_PER_S)
    step.expected_frames = expected_per_call * step.calls
    answered = [r for r in rows if r.get("answered")]
    for r in rows:
        if not r.get("answered"):
            why = f"{r.get('status')}: {r.get('why') or 'no stream'}"
            step.unanswered_why[why] = step.unanswered_why.get(why, 0) + 1
    plain = sum(1 for r in answered if not r.get("srtp"))
    if step.path == "srtp" and plain:  # not what the path measures: they count as unanswered
        step.errors.append(f"{plain} of {len(answered)} answered calls ran plain RTP on the SRTP path")
        answered = [r for r in answered if r.get("srtp")]
    step.answered = len(answered)
    step.setup_ms = percentiles([float(r["setup_ms"]) for r in rows if r.get("setup_ms") is not None])
    step.jb_lost = sum(int(r["jb_lost"]) for r in answered)
    step.jb_empty = sum(int(r["jb_empty"]) for r in answered)
    step.jb_discard = sum(int(r["jb_discard"]) for r in answered)
    step.rtp_to_callers = (_total(answered, "rx_pkt"), _total(answered, "rx_bytes"))
    step.rtp_from_callers = (_total(answered, "tx_pkt"), _total(answered, "tx_bytes"))
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


def _total(rows: list[dict[str, Any]], key: str) -> int:
    return sum(int(r.get(key, 0)) for r in rows)


def score_bridge(step: Step, reports: list[dict[str, Any]], sessions: list[Any], t0: float, t1: float) -> None:
    """The bridge path's own figures: latency and underruns from the workers, appends at the model."""
    if len(reports) < step.calls:
        step.errors.append(f"{len(reports)} of {step.calls} worker reports")
    _score_reports(step, reports, t0, t1)
    _score_appends(step, sessions, t0, t1)
    step.out_late_or_missing += step.underruns_in_window  # a silent frame inside an answer is a missing one


def _score_reports(step: Step, reports: list[dict[str, Any]], t0: float, t1: float) -> None:
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
        media = r.get("media", {})
        step.port_late += int(media.get("late_out", 0))
        step.clock_gaps += int(media.get("clock_gaps", 0))
        step.underruns_in_window += sum(1 for t in media.get("underrun_at", []) if t0 <= t < t1)
        for _t, kind, summary in r.get("timeline", []):
            if kind == ev.PlayoutTotals.kind and (m := _UNDERRUNS.search(summary)):
                step.underruns += int(m.group(1))
    step.inbound_ms = percentiles(inbound)
    step.outbound_ms = percentiles(outbound)
    step.capture_ms = percentiles(capture)
    step.latency_samples = {"inbound": len(inbound), "outbound": len(outbound)}


def _score_appends(step: Step, sessions: list[Any], t0: float, t1: float) -> None:
    """Inbound at the model: appends per call in the window, and how late each arrived against its 20 ms slot."""
    expected_per_call = round((t1 - t0) * FRAMES_PER_S)
    missing = 0
    spread: list[float] = []
    for record in sessions:
        arrivals = [t for t, d, k in list(record.timeline) if d == "in" and k == APPEND]
        shift = slot_phase_s([t for t in arrivals if t0 <= t < t1], t0)
        inside = [t for t in arrivals if t0 + shift <= t < t1 + shift]
        missing += max(0, expected_per_call - len(inside))
        if len(inside) > 2:
            offsets = [(t - t0) * 1000 - FRAME_MS * k for k, t in enumerate(inside)]
            best = min(offsets)
            spread += [o - best for o in offsets]
    missing += max(0, step.calls - len(sessions)) * expected_per_call
    step.in_missing = missing
    step.arrival_spread_ms = percentiles(spread)


def slot_phase_s(arrivals: list[float], t0: float) -> float:
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


@dataclass(frozen=True)
class CpuSample:
    """CPU counters at one end of the window."""

    own: float  # this process's CPU seconds
    machine: tuple[float, float, float]  # (busy, steal, total) jiffies
    at: float  # monotonic seconds
    sut: dict[int, float]  # the system under test's processes: CPU seconds by pid
    callers: dict[int, float]  # the load callers'
    threads: dict[tuple[int, int, str], float]  # the system under test's threads: CPU seconds by (pid, tid, name)

    @classmethod
    def now(cls, pids: list[int], caller_pids: list[int]) -> CpuSample:
        return cls(
            cpu_seconds(os.getpid()),
            machine_busy(),
            time.monotonic(),
            cpu_by_pid(pids),
            cpu_by_pid(caller_pids),
            cpu_by_thread(pids),
        )


def score_cpu(step: Step, a: CpuSample, b: CpuSample) -> None:
    """CPU between two samples; a process gone by the second is left out of both and named."""
    gone = sorted(set(a.sut) - set(b.sut) | set(a.callers) - set(b.callers))
    if gone:
        step.errors.append(f"CPU of {len(gone)} processes not measured (exited inside the window): {gone}")
    span = b.at - a.at
    jiffies = max(1.0, b.machine[2] - a.machine[2])
    step.cpu_bench_pct = round(100 * (b.own - a.own) / span, 1)
    step.cpu_per_call_pct = round(100 * _used(a.sut, b.sut) / span / step.calls, 2)
    by_name: dict[str, float] = {}
    for key, used in b.threads.items():
        if key in a.threads:
            by_name[key[2]] = by_name.get(key[2], 0.0) + used - a.threads[key]
    step.cpu_threads_pct = {
        name: round(100 * used / span / step.calls, 3) for name, used in sorted(by_name.items(), key=lambda kv: -kv[1])
    }
    step.cpu_callers_pct = round(100 * _used(a.callers, b.callers) / span, 1)
    step.cpu_machine_pct = round(100 * (b.machine[0] - a.machine[0]) / jiffies, 1)
    step.cpu_steal_pct = round(100 * (b.machine[1] - a.machine[1]) / jiffies, 1)


def score_memory(step: Step, pids: list[int]) -> None:
    """The system under test's memory as the window closes (its calls up): PSS per process and per call."""
    pss = pss_kb_by_pid(pids)
    if pss and step.calls:
        total_mb = sum(pss.values()) / 1024
        step.pss_mb_per_process = round(total_mb / len(pss), 1)
        step.pss_mb_per_call = round(total_mb / step.calls, 1)
        parents = pss_kb_by_pid(preload_parents(pids))  # the workers' preloaded parent: "all in"
        step.pss_mb_per_call_all_in = round((total_mb + sum(parents.values()) / 1024) / step.calls, 1)


def _used(a: dict[int, float], b: dict[int, float]) -> float:
    return sum(b[p] - a[p] for p in b if p in a)


BY_FUNCTION = 25  # the functions --count-calls names (--json), the most calls first


def score_call_counts(step: Step, directory: Path, t0: float, t1: float) -> None:
    """The workers' loop calls per beat per call over the window (``--count-calls``; bridge/runtime/callcount.py),
    by kind of beat: the model's audio arriving (``deltas``), none of it (``none``), or some of the calls'; and the
    :data:`BY_FUNCTION` functions making the most of them while deltas arrive."""
    sums = {kind: [0, 0, 0, 0] for kind in callcount.KINDS}
    by: dict[str, int] = {}
    for path in sorted(directory.glob("calls-*.jsonl")):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for kind, (intervals, beats, py, c) in callcount.window(lines, t0, t1).items():
            sums[kind] = [a + b for a, b in zip(sums[kind], (intervals, beats, py, c), strict=True)]
        for name, n in callcount.window_by(lines, t0, t1).items():
            by[name] = by.get(name, 0) + n
    deltas = sums["deltas"][1]
    if deltas:
        most = sorted(by.items(), key=lambda item: -item[1])[:BY_FUNCTION]
        step.calls_by_function = {name: round(n / deltas, 2) for name, n in most}
    step.calls_per_beat = {
        kind: {
            "python": round(py / beats, 1) if beats else None,
            "builtin": round(c / beats, 1) if beats else None,
            "beats": beats,
        }
        for kind, (_intervals, beats, py, c) in sums.items()
    }
