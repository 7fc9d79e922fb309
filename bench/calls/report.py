"""A step's result, its row of the table, and the summary of a run: the capacities, their ratio and the goals."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

FRAME_MS = 20
FRAMES_PER_S = 1000 // FRAME_MS
PASS_MARK = 0.001  # < 0.1 % late or missing frames
GOAL_RATIO = 0.75  # the bridge's capacity against the ceiling's
GOAL_FRONT_RATIO = 0.9  # through the front against the same workers called directly
GOAL_SRTP_CPU_RATIO = 1.1  # the workers' CPU per call with SRTP against plain RTP, at the same step
GOAL_ECHO_CPU_RATIO = 1.1  # the workers' CPU per call with the echo guard on (the default) against it off
GOAL_DUPLEX_LEAN = 2.2  # the duplex floor's CPU per call against the plain C loopback's, in the same run
GOAL_BRIDGE_OVER_DUPLEX = 1.25  # the workers' CPU per call (echo guard on) against the duplex floor's
GOAL_BRIDGE_OVER_EQUAL = 1.10  # ...against the equal-work floor's (the duplex floor with a worker's work)
GOAL_INBOUND_P99_MS = 10.0
GOAL_MODEL_TLS_CPU_RATIO = 1.1  # the workers' CPU per call with the model over wss:// (native TLS) against ws://
GOAL_OTEL_CPU_RATIO = 1.05  # the workers' CPU per call with every call traced (sampling 100 %) against untraced
GOAL_PSS_MB_PER_CALL = 8.0  # the workers' PSS per call with their preloaded parent counted ("all in")
GOAL_CALLS_PER_BEAT = 15.0  # the loop's Python calls per beat per call while the model's audio arrives
CEILING_NAMES = {
    "loop": "loopback",
    "play": "a played recording",
    "stream": "loopback + uplink in C",
    "duplex": "uplink + downlink in C",
    "equal": "uplink + downlink + echo guard in C, the model's audio at 2x",
    "wss": "the equal-work floor over TLS (the native engine)",
}


@dataclass
class Step:
    path: str  # "bridge" | "echo_off" | "srtp" | "model_tls" | "otel" | "front" | "ceiling"
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
    # ... by thread name (pjsua's clock and media threads, python: the event loop): % of one core per call
    cpu_threads_pct: dict[str, float] = field(default_factory=dict)
    # the system under test's PSS (/proc/<pid>/smaps_rollup) as the window closes: per worker or loopback app, per call
    pss_mb_per_process: float | None = None
    pss_mb_per_call: float | None = None
    pss_mb_per_call_all_in: float | None = None  # bridge: with the workers' preloaded parent counted
    front_cpu_ms_per_call: float | None = None  # front path: Kamailio's CPU time per call, set-up to hang-up
    # otel path: what the bench's OTLP receiver got of the step (exports, kB, spans: None when not counted)
    otlp_exports: int | None = None
    otlp_kb: float | None = None
    otlp_spans: int | None = None
    setup_ms: dict[str, float | None] = field(default_factory=dict)  # INVITE -> call up, at the callers
    # the callers' RTP over the window, all calls: packets and payload bytes each way ("to": sent to the callers)
    rtp_to_callers: tuple[int, int] = (0, 0)
    rtp_from_callers: tuple[int, int] = (0, 0)
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
    redis: dict[str, Any] | None = None  # --redis, bridge paths: Redis work per call-second (bench/calls/redis.py)
    # --count-calls, bridge paths: the loop's calls per beat per call by kind of beat (bridge/runtime/callcount.py):
    # "deltas" | "some" | "none" -> {"python": calls, "builtin": calls, "beats": calls' beats counted}
    calls_per_beat: dict[str, dict[str, float | None]] | None = None
    # and where the deltas beats' Python calls were: the functions making the most, calls per beat per call
    calls_by_function: dict[str, float] | None = None
    errors: list[str] = field(default_factory=list)
    attempt: int = 1  # 2: the first run of this step failed and this is the re-run (which decides)
    ceiling: str = ""  # a ceiling's kind: "loop" | "play" | "stream" | "duplex" | "equal" ("" for the bridge's paths)
    # the equal-work floor's echo guards, summed over its calls: frames tempered, full path searches, coarse looks
    # that found no candidate (bridge/audio/echo.py, counters)
    echo_guard: list[int] | None = None

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
# The table


def _fmt_ms(p: dict[str, float | None]) -> str:
    if not p or p.get("p50") is None:
        return "-"
    return f"{p['p50']:.1f}/{p['p99']:.1f}"


HEADER = (
    f"{'path':<8} {'calls':>5} {'procs':>5} {'answered':>8} {'late/missing out':>18} {'jb l/e/d':>9} "
    f"{'underrun':>8} {'in missing':>11} {'cpu/call':>8} {'callers':>7} {'bench':>6} {'machine':>7} {'steal':>5} "
    f"{'in p50/p99':>11} {'out p50/p99':>12} {'setup p50/p99':>14} {'front cpu/call':>14} {'pss MB proc/call':>16} "
    f"{'pass':>5}"
)


def row(s: Step) -> str:
    rate_in = s.in_rate
    inbound = "-" if rate_in is None else f"{s.in_missing} ({100 * rate_in:.2f}%)"
    underruns = f"{s.underruns}/{s.underruns_in_window}" if not s.ceiling else "-"
    front = "-" if s.front_cpu_ms_per_call is None else f"{s.front_cpu_ms_per_call:.2f} ms"
    pss = "-" if s.pss_mb_per_process is None else f"{s.pss_mb_per_process:.0f}/{s.pss_mb_per_call:.1f}"
    return (
        f"{s.path:<8} {s.calls:>5} {s.processes:>5} {f'{s.answered}/{s.calls}':>8} "
        f"{f'{s.out_late_or_missing} ({100 * s.out_rate:.3f}%)':>18} {f'{s.jb_lost}/{s.jb_empty}/{s.jb_discard}':>9} "
        f"{underruns:>8} {inbound:>11} {s.cpu_per_call_pct:>7.2f}% {s.cpu_callers_pct:>6.0f}% {s.cpu_bench_pct:>5.0f}% "
        f"{s.cpu_machine_pct:>6.0f}% {s.cpu_steal_pct:>4.0f}% {_fmt_ms(s.inbound_ms):>11} {_fmt_ms(s.outbound_ms):>12} "
        f"{_fmt_ms(s.setup_ms):>14} {front:>14} {pss:>16} {'yes' if s.passed else 'NO':>5}"
        + (" (re-run)" if s.attempt > 1 else "")
    )


def banner(steps: list[int], seconds: float, priority: int, beat: int, ceiling: str, log_path: Path) -> str:
    """The line above the table: what this run is."""
    return (
        f"callbridge bench calls: {os.cpu_count()} cores, steps {steps}, {seconds:g} s window per step, "
        f"pass mark < {100 * PASS_MARK:g}% late or missing frames, system under test "
        f"{f'SCHED_RR {priority}' if priority else 'ordinary scheduling'}, media beat {beat} ticks, "
        f"ceiling: {', '.join(CEILING_NAMES.get(k, k) for k in ceiling.split(','))} (process logs: {log_path})"
    )


# ------------------------------------------------------------------------------------------------------------
# The summary


def max_clean(steps: list[Step]) -> int:
    """The most calls such that this step and every smaller one passed."""
    best = 0
    for s in sorted(steps, key=lambda s: s.calls):
        if not s.passed:
            break
        best = s.calls
    return best


def _path_max(steps: list[Step], path: str) -> int:
    return max_clean([s for s in steps if s.path == path])


def _at(steps: list[Step], path: str, calls: int | None) -> Step | None:
    return next((s for s in steps if s.path == path and s.calls == calls), None)


def _goal_met(ratio: float | None, upper_bound: bool, goal: float) -> bool | None:
    """An upper bound below the goal settles it; one at or above it does not (the real ratio may be far lower)."""
    return None if ratio is None or (upper_bound and ratio >= goal) else ratio >= goal


def summarize(steps: list[Step], largest: int) -> dict[str, Any]:
    ran = {s.path for s in steps}
    ours = _path_max(steps, "bridge") if "bridge" in ran else None
    ceiling = _path_max(steps, "ceiling") if "ceiling" in ran else None
    at = _at(steps, "bridge", ours)
    inbound_p99 = at.inbound_ms.get("p99") if at is not None else None
    ratio = ours / ceiling if ours is not None and ceiling else None
    return (
        {
            "kind": "summary",
            "cores": os.cpu_count(),
            "bridge_max_calls": ours,
            "ceiling_max_calls": ceiling,
            "ratio": None if ratio is None else round(ratio, 3),
            "ratio_is_upper_bound": ceiling == largest,  # the ceiling never failed: its real capacity is higher
            "inbound_p99_ms_at_max": inbound_p99,
            "goal_ratio_met": _goal_met(ratio, ceiling == largest, GOAL_RATIO),
            "goal_inbound_p99_met": None if inbound_p99 is None else inbound_p99 <= GOAL_INBOUND_P99_MS,
        }
        | (memory_summary(steps) if "bridge" in ran else {})
        | (ceiling_cost_summary(steps) if "ceiling" in ran else {})
        | (front_summary(steps, ours, largest) if "front" in ran else {})
        | (srtp_summary(steps) if "srtp" in ran else {})
        | (model_tls_summary(steps) if "model_tls" in ran else {})
        | (echo_summary(steps) if "echo_off" in ran else {})
        | (otel_summary(steps) if "otel" in ran else {})
        | (duplex_summary(steps) if any(s.ceiling in FLOORS for s in steps) else {})
        | (calls_summary(steps) if any(s.calls_per_beat for s in steps) else {})
    )


def calls_summary(steps: list[Step]) -> dict[str, Any]:
    """The loop's calls per beat per call at the largest bridge step that counted them, against
    :data:`GOAL_CALLS_PER_BEAT` (Python calls while the model's audio arrives)."""
    at = next((s for s in reversed(steps) if s.path == "bridge" and s.calls_per_beat), None)
    counted = at.calls_per_beat if at is not None else None
    python = (counted or {}).get("deltas", {}).get("python")
    return {
        "calls_step": None if at is None else at.calls,
        "calls_per_beat": counted,
        "goal_calls_per_beat_met": None if python is None else python <= GOAL_CALLS_PER_BEAT,
    }


def calls_line(counted: dict[str, dict[str, float | None]] | None) -> str:
    """The loop's Python and builtin calls per beat per call, by kind of beat, as counted (with how many beats)."""
    if not counted:
        return "loop calls per beat per call: not counted"

    def kind(name: str, what: str) -> str:
        c = counted.get(name, {})
        if not c.get("beats"):
            return f"{what}: no beat"
        return f"{what} {c['python']} Python + {c['builtin']} builtin ({c['beats']:.0f} beats)"

    return (
        f"loop calls per beat per call: {kind('deltas', 'while deltas arrive')} (goal <= {GOAL_CALLS_PER_BEAT:g} "
        f"Python); {kind('none', 'when none do')}; {kind('some', 'some calls reading')}"
    )


def where_line(by: dict[str, float]) -> str:
    """The functions making the most of the loop's Python calls while deltas arrive, per beat per call."""
    return "most Python calls per beat per call while deltas arrive: " + ", ".join(
        f"{name.rsplit('/', 1)[-1]} {n:g}" for name, n in list(by.items())[:8]
    )


def _calls_summary_line(summary: dict[str, Any]) -> str:
    return (
        f"at {summary['calls_step']} calls, {calls_line(summary['calls_per_beat'])}: "
        f"{_goal(summary['goal_calls_per_beat_met'])} (counted under a profiler: that run's CPU figures are not "
        "comparable)"
    )


def _beside_bridge(steps: list[Step], path: str) -> tuple[int | None, Step | None, Step | None]:
    """``path`` against the bridge path in the same run: the largest step where both answered every call (the
    same calls, the same kind of workers), and both steps there (the bridge's first). A step's last run counts;
    the late-frame mark does not matter here, the calls' CPU does."""

    def full(s: Step | None) -> bool:
        return s is not None and s.answered == s.calls

    both = [s.calls for s in steps if s.path == path and full(s) and full(_at(steps, "bridge", s.calls))]
    at = max(both, default=None)
    return at, _at(steps, "bridge", at), _at(steps, path, at)


def _cpu(step: Step | None) -> float | None:
    """The workers' CPU per call of a step (percent of a core), None without the step."""
    return None if step is None else step.cpu_per_call_pct


def _cpu_ratio(top: Step | None, bottom: Step | None) -> float | None:
    """``top``'s workers' CPU per call over ``bottom``'s; None without either, or if ``bottom`` took none."""
    if top is None or bottom is None or bottom.cpu_per_call_pct <= 0:
        return None
    return round(top.cpu_per_call_pct / bottom.cpu_per_call_pct, 3)


def ceiling_cost_summary(steps: list[Step]) -> dict[str, Any]:
    """The bridge's workers against pjsua2's C loopback apps carrying the same calls in the same run, at the largest
    step where both answered every call: CPU per call and memory (PSS) per process and per call."""
    at, bridge, loop = _beside_bridge(steps, "ceiling")
    return {
        "cost_step": at,
        "bridge_cpu_per_call_pct": _cpu(bridge),
        "ceiling_cpu_per_call_pct": _cpu(loop),
        "bridge_over_ceiling_cpu": _cpu_ratio(bridge, loop),
        "bridge_pss_mb": None if bridge is None else [bridge.pss_mb_per_process, bridge.pss_mb_per_call],
        "ceiling_pss_mb": None if loop is None else [loop.pss_mb_per_process, loop.pss_mb_per_call],
    }


FLOORS = ("duplex", "equal", "wss")  # the floors: the workers against the first two (goals), over wss:// the last


def duplex_summary(steps: list[Step]) -> dict[str, Any]:
    """The floors of the model's I/O both ways: at each step where the bridge and a floor (``duplex``; ``equal``,
    the equal-work floor) answered every call, every kind of ceiling's CPU per call beside the workers', the duplex
    floor against the plain loopback (goal: at most :data:`GOAL_DUPLEX_LEAN`, it is lean) and the workers against
    each floor (goals: at most :data:`GOAL_BRIDGE_OVER_DUPLEX` and :data:`GOAL_BRIDGE_OVER_EQUAL`); the goals are
    read at the largest such step."""

    def full(s: Step | None) -> bool:
        return s is not None and s.answered == s.calls

    def kind(calls: int, name: str) -> Step | None:
        found = next((s for s in reversed(steps) if s.calls == calls and s.ceiling == name), None)
        return found if full(found) else None

    by_step: dict[int, dict[str, Any]] = {}
    for calls in sorted({s.calls for s in steps if s.ceiling in FLOORS}):
        bridge = _at(steps, "bridge", calls)
        duplex, equal, wss = kind(calls, "duplex"), kind(calls, "equal"), kind(calls, "wss")
        if not full(bridge) or (duplex is None and equal is None and wss is None):
            continue
        tls = _at(steps, "model_tls", calls)
        floors = {k: f for k, f in (("duplex", duplex), ("equal", equal), ("wss", wss)) if f is not None}
        cpu = {k: _cpu(kind(calls, k)) for k in ("loop", "stream")} | {k: _cpu(f) for k, f in floors.items()}
        cpu |= {"bridge": _cpu(bridge)} | ({"model_tls": _cpu(tls)} if wss is not None else {})
        floor = duplex or equal
        by_step[calls] = {
            "cpu_per_call_pct": cpu,
            "threads_pct": {"bridge": dict(bridge.cpu_threads_pct) if bridge else {}}
            | {k: f.cpu_threads_pct for k, f in floors.items()},
            "duplex_over_loop": None if duplex is None else _cpu_ratio(duplex, kind(calls, "loop")),
            "bridge_over_duplex": None if duplex is None else _cpu_ratio(bridge, duplex),
            "bridge_over_equal": None if equal is None else _cpu_ratio(bridge, equal),
            "model_tls_over_wss": None if wss is None or not full(tls) else _cpu_ratio(tls, wss),
            "equal_echo_guard": None if equal is None else equal.echo_guard,
            "bridge_pss_mb_per_call": None if bridge is None else bridge.pss_mb_per_call,
            "floor_pss_mb_per_call": None if floor is None else floor.pss_mb_per_call,
        }
    at = max(by_step, default=None)
    last = by_step.get(at, {}) if at is not None else {}
    lean, ours = last.get("duplex_over_loop"), last.get("bridge_over_duplex")
    equal_ratio = last.get("bridge_over_equal")
    return {
        "duplex_step": at,
        "duplex_by_step": by_step,
        "goal_duplex_lean_met": None if lean is None else lean <= GOAL_DUPLEX_LEAN,
        "goal_bridge_over_duplex_met": None if ours is None else ours <= GOAL_BRIDGE_OVER_DUPLEX,
        "goal_bridge_over_equal_met": None if equal_ratio is None else equal_ratio <= GOAL_BRIDGE_OVER_EQUAL,
    }


def _duplex_lines(summary: dict[str, Any]) -> list[str]:
    def x(ratio: float | None) -> str:
        return "n/a" if ratio is None else f"{ratio:.2f}x"

    lines = []
    for calls, at in sorted(summary["duplex_by_step"].items()):
        cpu = at["cpu_per_call_pct"]
        shown = ", ".join(f"{k} {'-' if v is None else f'{v}%'}" for k, v in cpu.items())
        lines.append(
            f"at {calls} calls: CPU per call {shown} -> duplex floor {x(at['duplex_over_loop'])} the loopback, "
            f"bridge {x(at['bridge_over_duplex'])} the duplex floor, {x(at['bridge_over_equal'])} the equal-work floor"
        )
        lines.append(f"at {calls} calls: {_threads_line(at['threads_pct'])}")
        if at.get("model_tls_over_wss") is not None:
            lines.append(f"at {calls} calls: the workers over wss:// {x(at['model_tls_over_wss'])} the wss:// floor")
        if at["equal_echo_guard"] is not None:
            tempered, full, coarse = at["equal_echo_guard"]
            lines.append(
                f"at {calls} calls: the equal-work floor's echo guards tempered {tempered} frames, "
                f"{full} full path searches, {coarse} coarse looks with no candidate"
            )
    at = summary["duplex_step"]
    last = summary["duplex_by_step"].get(at, {})
    lines.append(
        f"floors at {at if at is not None else '-'} calls: duplex {x(last.get('duplex_over_loop'))} the loopback "
        f"(goal <= {GOAL_DUPLEX_LEAN:g}x: {_goal(summary['goal_duplex_lean_met'])}); the workers "
        f"{x(last.get('bridge_over_equal'))} the equal-work floor (goal <= {GOAL_BRIDGE_OVER_EQUAL:g}x: "
        f"{_goal(summary['goal_bridge_over_equal_met'])}), {x(last.get('bridge_over_duplex'))} the duplex floor "
        f"(goal <= {GOAL_BRIDGE_OVER_DUPLEX:g}x: {_goal(summary['goal_bridge_over_duplex_met'])})"
    )
    return lines


def _threads_line(threads: dict[str, dict[str, float]]) -> str:
    """CPU per call by thread, the workers' beside each floor's, the threads that took at least 0.01 %."""
    floors = [k for k in FLOORS if k in threads]
    kinds = [threads.get("bridge", {}), *(threads[k] for k in floors)]
    names = [n for n in dict.fromkeys(n for t in kinds for n in t) if max(t.get(n, 0.0) for t in kinds) >= 0.01]
    shown = ", ".join(f"{n} " + " / ".join(f"{t.get(n, 0.0):.2f}%" for t in kinds) for n in names)
    return f"CPU per call by thread, workers / {' / '.join(f'{k} floor' for k in floors)}: {shown or '-'}"


def _cost_line(summary: dict[str, Any]) -> str:
    ratio = summary["bridge_over_ceiling_cpu"]

    def pss(pair: list[float | None] | None) -> str:
        if not pair or pair[0] is None:
            return "-"
        return f"{pair[0]:.0f} MB per process, {pair[1]:.1f} MB per call"

    return (
        f"at {summary['cost_step']} calls: CPU per call bridge {summary['bridge_cpu_per_call_pct']}% against "
        f"{summary['ceiling_cpu_per_call_pct']}% for pjsua2's C loopback -> "
        f"{'n/a' if ratio is None else f'{ratio:.2f}x'}; memory (PSS) bridge {pss(summary['bridge_pss_mb'])}, "
        f"loopback {pss(summary['ceiling_pss_mb'])}"
    )


def memory_summary(steps: list[Step]) -> dict[str, Any]:
    """The workers' PSS per call at the largest bridge step that answered every call, alone and all in (their
    preloaded parent counted), against :data:`GOAL_PSS_MB_PER_CALL`."""
    at = next((s for s in reversed(steps) if s.path == "bridge" and s.answered == s.calls), None)
    all_in = None if at is None else at.pss_mb_per_call_all_in
    return {
        "pss_step": None if at is None else at.calls,
        "bridge_pss_mb_per_call": None if at is None else at.pss_mb_per_call,
        "bridge_pss_mb_per_call_all_in": all_in,
        "goal_pss_met": None if all_in is None else all_in <= GOAL_PSS_MB_PER_CALL,
    }


def _memory_line(summary: dict[str, Any]) -> str:
    return (
        f"memory (PSS) at {summary['pss_step']} calls: the workers {_in(summary['bridge_pss_mb_per_call'], 'MB')} "
        f"per call, all in (their preloaded parent counted) {_in(summary['bridge_pss_mb_per_call_all_in'], 'MB')} "
        f"(goal <= {GOAL_PSS_MB_PER_CALL:g} MB: {_goal(summary['goal_pss_met'])})"
    )


def srtp_summary(steps: list[Step]) -> dict[str, Any]:
    """The SRTP path against the plain bridge path in the same run: capacity, and the workers' CPU per call at the
    largest step where both answered every call (only the media is encrypted)."""
    keys = ("srtp_max_calls", "srtp_cpu_step", "srtp_cpu_per_call_pct", "plain_cpu_per_call_pct", "srtp_cpu_ratio")
    return _cpu_against(steps, "srtp", GOAL_SRTP_CPU_RATIO, (*keys, "goal_srtp_cpu_met"))


def model_tls_summary(steps: list[Step]) -> dict[str, Any]:
    """The model over TLS (``wss://``, as OpenAI is reached) against the bridge path's ``ws://`` in the same run:
    capacity, the workers' CPU per call and the inbound p99 at the largest step where both answered every call."""
    _, plain, secure = _beside_bridge(steps, "model_tls")
    keys = ("model_tls_max_calls", "model_tls_step", "model_tls_cpu_per_call_pct", "model_plain_cpu_per_call_pct")
    return _cpu_against(
        steps, "model_tls", GOAL_MODEL_TLS_CPU_RATIO, (*keys, "model_tls_cpu_ratio", "goal_model_tls_cpu_met")
    ) | {
        "model_tls_inbound_p99_ms": None if secure is None else secure.inbound_ms.get("p99"),
        "model_plain_inbound_p99_ms": None if plain is None else plain.inbound_ms.get("p99"),
    }


def otel_summary(steps: list[Step]) -> dict[str, Any]:
    """Tracing's cost: every call traced (``tracing: otlp``, sampling 100 %, spans to the bench's OTLP receiver)
    against the untraced bridge path in the same run, the workers' CPU per call at the largest step where both
    answered every call; and what the receiver got over the otel path's steps."""
    keys = ("otel_max_calls", "otel_cpu_step", "otel_cpu_per_call_pct", "untraced_cpu_per_call_pct", "otel_cpu_ratio")
    traced = [s for s in steps if s.path == "otel"]
    spans = [s.otlp_spans for s in traced]
    return _cpu_against(steps, "otel", GOAL_OTEL_CPU_RATIO, (*keys, "goal_otel_cpu_met")) | {
        "otel_exports": sum(s.otlp_exports or 0 for s in traced),
        "otel_spans": None if None in spans else sum(n or 0 for n in spans),
    }


def echo_summary(steps: list[Step]) -> dict[str, Any]:
    """The echo guard's cost: the bridge path (the plan's defaults, the guard on) against ``echo_off`` (the same
    plan with ``echo_guard: {enabled: false}``) in the same run, the workers' CPU per call at the largest step
    where both answered every call."""
    keys = ("echo_off_max_calls", "echo_cpu_step", "echo_off_cpu_per_call_pct", "echo_on_cpu_per_call_pct")
    return _cpu_against(
        steps, "echo_off", GOAL_ECHO_CPU_RATIO, (*keys, "echo_cpu_ratio", "goal_echo_cpu_met"), bridge_over=True
    )


def _cpu_against(
    steps: list[Step], path: str, goal: float, keys: tuple[str, ...], *, bridge_over: bool = False
) -> dict[str, Any]:
    """``path`` beside the bridge path in the same run, under ``keys``: the path's clean calls, the largest step
    where both answered every call, the path's and the bridge's CPU per call there, their ratio (the path's over
    the bridge's; ``bridge_over``: the bridge's over the path's) and whether it is within ``goal``."""
    at, bridge, other = _beside_bridge(steps, path)
    ratio = _cpu_ratio(bridge, other) if bridge_over else _cpu_ratio(other, bridge)
    met = None if ratio is None else ratio <= goal
    return dict(zip(keys, (_path_max(steps, path), at, _cpu(other), _cpu(bridge), ratio, met), strict=True))


def front_summary(steps: list[Step], direct: int | None, largest: int) -> dict[str, Any]:
    """The front path against the bridge path (the same workers called directly) in the same run."""
    through = _path_max(steps, "front")
    at, same = _at(steps, "front", through), _at(steps, "bridge", through)
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
        "goal_front_ratio_met": _goal_met(ratio, upper, GOAL_FRONT_RATIO),
        "front_cpu_ms_per_call_at_max": None if at is None else at.front_cpu_ms_per_call,
        "front_setup_ms_at_max": None if at is None else at.setup_ms,
        "front_added_setup_p50_ms_at_max": added,
    }


def _in(value: float | None, unit: str) -> str:
    """A figure with its unit, to a tenth; "-" where there is none."""
    return "-" if value is None else f"{value:.1f} {unit}"


def _goal(met: bool | None) -> str:
    return "undetermined" if met is None else "met" if met else "NOT met"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary for a reader: capacities and their ratio, inbound p99, and the front's figures if it ran."""
    ratio = "n/a" if summary["ratio"] is None else f"{100 * summary['ratio']:.0f}%"
    bound = ""
    if summary["ratio"] is not None and summary["ratio_is_upper_bound"]:
        bound = " (an upper bound: the ceiling passed every step; raise --max-calls to find its limit)"
    ours, ceiling = summary["bridge_max_calls"], summary["ceiling_max_calls"]
    lines = [
        f"\nmost clean calls: bridge {'-' if ours is None else ours}, pjsua2 C loopback "
        f"{'-' if ceiling is None else ceiling} -> {ratio} of the ceiling{bound} "
        f"(goal >= 75%: {_goal(summary['goal_ratio_met'])})"
    ]
    if ours is not None:
        p99 = summary["inbound_p99_ms_at_max"]
        lines.append(
            f"inbound p99 (capture + uplink) at {ours} calls: {'-' if p99 is None else f'{p99:.1f} ms'} "
            f"(goal <= 10 ms: {_goal(summary['goal_inbound_p99_met'])})"
        )
    lines += [line(summary) for key, line in _PATH_LINES if key in summary]
    if "duplex_step" in summary:
        lines += _duplex_lines(summary)
    return lines


def _cpu_ratio_line(head: str, summary: dict[str, Any], keys: tuple[str, str, str, str], cpu: tuple[str, str]) -> str:
    """A path's clean calls and its workers' CPU per call against the bridge path's at the same step, and the CPU's
    goal of at most +10%. ``keys``: the summary's max calls, step, ratio and goal met; ``cpu``: the two figures, as
    the line says them."""
    calls, step, ratio, met = (summary[key] for key in keys)
    return (
        f"{head}: {calls} clean calls; workers' CPU per call at {step} calls {cpu[0]} against {cpu[1]} -> "
        f"{'n/a' if ratio is None else f'{100 * (ratio - 1):+.1f}%'} (goal <= +10%: {_goal(met)})"
    )


def _srtp_line(summary: dict[str, Any]) -> str:
    keys = ("srtp_max_calls", "srtp_cpu_step", "srtp_cpu_ratio", "goal_srtp_cpu_met")
    cpu = (f"{summary['srtp_cpu_per_call_pct']}%", f"{summary['plain_cpu_per_call_pct']}% plain")
    return _cpu_ratio_line("with SRTP", summary, keys, cpu)


def _model_tls_line(summary: dict[str, Any]) -> str:
    ratio = summary["model_tls_cpu_ratio"]
    return (
        f"model over TLS (wss://): {summary['model_tls_max_calls']} clean calls; workers' CPU per call at "
        f"{summary['model_tls_step']} calls {summary['model_tls_cpu_per_call_pct']}% against "
        f"{summary['model_plain_cpu_per_call_pct']}% over ws:// -> {'n/a' if ratio is None else f'{ratio:.2f}x'} "
        f"(goal <= {GOAL_MODEL_TLS_CPU_RATIO:g}x: {_goal(summary['goal_model_tls_cpu_met'])}); "
        f"inbound p99 {_in(summary['model_tls_inbound_p99_ms'], 'ms')} against "
        f"{_in(summary['model_plain_inbound_p99_ms'], 'ms')}"
    )


def _otel_line(summary: dict[str, Any]) -> str:
    ratio, spans = summary["otel_cpu_ratio"], summary["otel_spans"]
    return (
        f"traced (OTLP, sampling 100%): {summary['otel_max_calls']} clean calls; workers' CPU per call at "
        f"{summary['otel_cpu_step']} calls {summary['otel_cpu_per_call_pct']}% against "
        f"{summary['untraced_cpu_per_call_pct']}% untraced -> {'n/a' if ratio is None else f'{ratio:.3f}x'} "
        f"(goal <= {GOAL_OTEL_CPU_RATIO:g}x: {_goal(summary['goal_otel_cpu_met'])}); the receiver got "
        f"{summary['otel_exports']} exports, {'?' if spans is None else spans} spans"
    )


def _echo_line(summary: dict[str, Any]) -> str:
    keys = ("echo_off_max_calls", "echo_cpu_step", "echo_cpu_ratio", "goal_echo_cpu_met")
    cpu = (
        f"{summary['echo_on_cpu_per_call_pct']}% with the guard (the default)",
        f"{summary['echo_off_cpu_per_call_pct']}% without",
    )
    return _cpu_ratio_line("echo guard off", summary, keys, cpu)


def _front_line(summary: dict[str, Any]) -> str:
    through, front_ratio = summary["front_max_calls"], summary["front_ratio"]
    cpu, added = summary["front_cpu_ms_per_call_at_max"], summary["front_added_setup_p50_ms_at_max"]
    return (
        f"through the front (Kamailio): {through} clean calls -> "
        f"{'n/a' if front_ratio is None else f'{100 * front_ratio:.0f}%'} of the same workers called directly"
        f"{' (both passed every step)' if summary['front_ratio_is_lower_bound'] else ''}"
        f"{' (at most: the direct path passed every step)' if summary['front_ratio_is_upper_bound'] else ''} "
        f"(goal >= 90%: {_goal(summary['goal_front_ratio_met'])}); Kamailio "
        f"{'-' if cpu is None else f'{cpu:.2f} ms'} of CPU per call, set-up "
        f"{'-' if added is None else f'{added:+.1f} ms'} (p50, front minus direct)"
    )


# the lines of the paths that ran, in this order: (the summary's key that says the path ran, its line)
_PATH_LINES: Final[tuple[tuple[str, Callable[[dict[str, Any]], str]], ...]] = (
    ("cost_step", _cost_line),
    ("pss_step", _memory_line),
    ("front_max_calls", _front_line),
    ("srtp_max_calls", _srtp_line),
    ("model_tls_max_calls", _model_tls_line),
    ("echo_off_max_calls", _echo_line),
    ("otel_max_calls", _otel_line),
    ("calls_step", _calls_summary_line),
)
