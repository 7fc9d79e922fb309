"""``bench calls`` CPU accounting: a process that is gone is left out, not counted as zero CPU; steal is reported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.calls.machine import cpu_by_pid, cpu_by_thread, cpu_seconds, machine_busy


@pytest.mark.slow  # a real process burns real CPU time
def test_cpu_of_a_process_that_exited_is_absent_not_zero() -> None:
    # it burns 0.4 s of CPU, says so, then waits for a line. The kernel's figure is counted in clock ticks and can be
    # a tick behind the process's own clock, so the test waits for the process's word, not for a figure it may miss
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"
    burn += "print(flush=True)\ninput()\n"
    proc = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"\n"  # its 0.4 s burnt
        alive = cpu_by_pid([proc.pid])
        assert alive[proc.pid] >= 0.3
        assert cpu_seconds(proc.pid) >= 0.3
    finally:
        proc.communicate(b"\n", timeout=10)
    # Gone: absent from the sample (the old accounting read 0 and turned the window's CPU negative).
    assert cpu_by_pid([proc.pid]) == {}
    assert cpu_seconds(proc.pid) == 0.0


@pytest.mark.slow  # a real thread burns real CPU time
def test_cpu_is_split_by_each_threads_own_name() -> None:
    # a thread names itself (prctl PR_SET_NAME, as pjsua names its clock and media threads), burns 0.4 s of CPU,
    # says so and waits for a line, alive; the main thread waits for it
    burn = "import ctypes, threading, time\n"
    burn += "def run():\n    ctypes.CDLL(None).prctl(15, b'burner', 0, 0, 0)\n"
    burn += "    t = time.thread_time()\n    while time.thread_time() - t < 0.4: pass\n    print(flush=True)\n"
    burn += "    input()\nthreading.Thread(target=run).start()\n"
    proc = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"\n"  # the named thread burnt its 0.4 s
        threads = cpu_by_thread([proc.pid])
        assert {pid for pid, _, _ in threads} == {proc.pid} and len(threads) == 2, threads
        by_name = {name: cpu for (_, _, name), cpu in threads.items()}
        assert by_name["burner"] >= 0.3 and sum(cpu for name, cpu in by_name.items() if name != "burner") < 0.3
    finally:
        proc.communicate(b"\n", timeout=10)
    assert cpu_by_thread([proc.pid]) == {}  # gone: absent, not zero


def test_machine_busy_counts_steal_as_busy_and_reports_it() -> None:
    # cpu  user nice system idle iowait irq softirq steal guest guest_nice
    stat = "cpu  100 0 50 800 30 0 5 15 0 0\ncpu0 1 2 3 4\n"
    busy, steal, total = machine_busy(stat)
    assert (busy, steal, total) == (170.0, 15.0, 1000.0)  # idle and iowait are the only time not busy
    busy, steal, total = machine_busy("cpu  100 0 50 800\n")  # an old kernel: no steal column
    assert (busy, steal, total) == (150.0, 0.0, 950.0)
    busy, steal, total = machine_busy()  # this machine's own counters
    assert 0 <= steal <= busy <= total


def test_unanswered_calls_are_scored_as_missing_and_say_why() -> None:
    """A call not up at the caller costs its whole window, and the step says what was missing (a set-up failure
    and a media stall look alike in the late count)."""
    from bench.calls.report import FRAMES_PER_S, Step
    from bench.calls.score import score_callers

    step = Step("bridge", calls=3, processes=1, window_s=12.0)
    up = {"uri": "sip:4000@127.0.0.1:5070", "answered": True, "status": 200, "why": ""}
    up |= {"jb_lost": 3, "jb_empty": 1, "jb_discard": 0}
    rows = [
        up,
        {"uri": "sip:4000@127.0.0.1:5070", "answered": False, "status": None, "why": "not answered"},
        {"uri": "sip:4000@127.0.0.1:5070", "answered": False, "status": 200, "why": "no audio stream yet"},
    ]
    score_callers(step, rows)
    per_call = round(12.0 * FRAMES_PER_S)
    assert step.answered == 1
    assert step.out_late_or_missing == 2 + 2 * per_call  # (3 lost + 1 empty) / 2, then two whole windows
    assert step.unanswered_why == {"None: not answered": 1, "200: no audio stream yet": 1}
    assert step.late_by_target == {"5070": 2}


def test_late_frames_through_the_front_are_counted_by_the_worker_that_answered() -> None:
    """Every front call is placed to the same address: the answering Contact names the worker."""
    from bench.calls.report import Step
    from bench.calls.score import score_callers

    step = Step("front", calls=2, processes=2, window_s=12.0)
    rows = [
        {"uri": "sip:4000@127.0.0.1:5060", "worker": "127.0.0.1:5062", "answered": True, "status": 200, "why": ""}
        | {"jb_lost": 4, "jb_empty": 2, "jb_discard": 0},
        {"uri": "sip:4000@127.0.0.1:5060", "worker": "", "answered": True, "status": 200, "why": ""}
        | {"jb_lost": 1, "jb_empty": 1, "jb_discard": 0},
    ]
    score_callers(step, rows)
    assert step.late_by_target == {"5062": 3, "5060": 1}  # no Contact known: the address called


@pytest.mark.parametrize(
    ("direct_passes", "front_passes", "ratio", "lower", "upper", "met"),
    [
        ((16, 32), (16, 32), 1.0, True, False, True),  # both passed every step: at least 1.0
        ((16, 32), (16,), 0.5, False, True, False),  # the direct path's real capacity is higher: at most 0.5
        ((16, 32, 40), (16, 32), 0.8, False, True, False),
        ((16,), (16,), 1.0, False, False, True),  # both failed at 32: a measured ratio
    ],
)
def test_the_fronts_ratio_says_when_it_is_only_a_bound(
    direct_passes: tuple[int, ...], front_passes: tuple[int, ...], ratio: float, lower: bool, upper: bool, met: bool
) -> None:
    from bench.calls.report import Step, front_summary, max_clean

    ladder = sorted({16, 32, *direct_passes})
    largest = ladder[-1]

    def steps(path: str, passes: tuple[int, ...]) -> list[Step]:
        out = []
        for calls in ladder:
            s = Step(path, calls=calls, processes=calls // 4, window_s=12.0, expected_frames=600 * calls)
            s.answered = calls if calls in passes else calls - 1
            out.append(s)
        return out

    direct = max_clean(steps("bridge", direct_passes))
    summary = front_summary(steps("front", front_passes), direct, largest)
    assert summary["front_ratio"] == ratio
    assert (summary["front_ratio_is_lower_bound"], summary["front_ratio_is_upper_bound"]) == (lower, upper)
    assert summary["goal_front_ratio_met"] is met


def test_an_upper_bound_at_or_over_the_goal_leaves_the_goal_undetermined() -> None:
    from bench.calls.report import Step, front_summary

    front = [Step("front", calls=c, processes=c // 4, window_s=12.0, expected_frames=600 * c) for c in (36, 40)]
    front[0].answered, front[1].answered = 36, 39
    summary = front_summary(front, 40, 40)  # the direct path passed 40, its largest step
    assert summary["front_ratio"] == 0.9 and summary["front_ratio_is_upper_bound"]
    assert summary["goal_front_ratio_met"] is None


def test_srtps_cpu_ratio_is_taken_at_the_largest_step_both_paths_passed() -> None:
    from bench.calls.report import Step, srtp_summary, summary_lines

    def step(path: str, calls: int, passed: bool, cpu: float) -> Step:
        s = Step(path, calls=calls, processes=calls // 4, window_s=12.0, expected_frames=600 * calls)
        s.answered = calls if passed else calls - 1
        s.cpu_per_call_pct = cpu
        return s

    steps = [
        step("bridge", 8, True, 2.0),
        step("srtp", 8, True, 2.1),
        step("bridge", 16, False, 2.5),  # the plain path failed here: no comparison at 16
        step("srtp", 16, True, 3.0),
    ]
    summary = srtp_summary(steps)
    assert (summary["srtp_cpu_step"], summary["srtp_cpu_ratio"], summary["goal_srtp_cpu_met"]) == (8, 1.05, True)
    assert summary["srtp_max_calls"] == 16
    base = {"ratio": None, "bridge_max_calls": None, "ceiling_max_calls": None, "goal_ratio_met": None}
    line = summary_lines(base | summary)[-1]
    assert "+5.0%" in line and "goal <= +10%: met" in line


def test_the_echo_guards_cpu_cost_is_the_default_path_over_the_guard_off() -> None:
    from bench.calls.report import Step, summarize, summary_lines

    def step(path: str, calls: int, cpu: float) -> Step:
        s = Step(path, calls=calls, processes=calls // 4, window_s=12.0, expected_frames=600 * calls)
        s.answered, s.cpu_per_call_pct = calls, cpu
        return s

    steps = [step("bridge", 4, 0.5), step("echo_off", 4, 0.45), step("bridge", 8, 0.6), step("echo_off", 8, 0.5)]
    summary = summarize(steps, 8)
    assert (summary["echo_cpu_step"], summary["echo_cpu_ratio"], summary["goal_echo_cpu_met"]) == (8, 1.2, False)
    assert (summary["echo_on_cpu_per_call_pct"], summary["echo_off_cpu_per_call_pct"]) == (0.6, 0.5)
    line = summary_lines(summary)[-1]
    assert line.startswith("echo guard off: 8 clean calls") and "+20.0%" in line and "NOT met" in line


def test_the_model_over_tls_is_set_against_the_same_workers_over_plain_ws() -> None:
    from bench.calls.cli import _parser, _paths
    from bench.calls.report import Step, summarize, summary_lines

    parser = _parser()
    assert _paths(parser, parser.parse_args(["--model-tls", "--no-echo-off"])) == ["bridge", "model_tls", "ceiling"]

    def step(path: str, calls: int, cpu: float, p99: float) -> Step:
        s = Step(path, calls=calls, processes=calls // 4, window_s=12.0, expected_frames=600 * calls)
        s.answered, s.cpu_per_call_pct, s.inbound_ms = calls, cpu, {"p50": 0.0, "p99": p99}
        return s

    steps = [step("bridge", 8, 0.5, 0.2), step("model_tls", 8, 1.0, 1.3)]
    summary = summarize(steps, 8)
    assert (summary["model_tls_step"], summary["model_tls_cpu_ratio"]) == (8, 2.0)
    assert (summary["model_tls_inbound_p99_ms"], summary["model_plain_inbound_p99_ms"]) == (1.3, 0.2)
    line = summary_lines(summary)[-1]
    assert line.startswith("model over TLS (wss://): 8 clean calls") and "-> 2.00x (goal <= 1.1x: NOT met)" in line
    assert summarize([step("bridge", 8, 0.5, 0.2), step("model_tls", 8, 0.54, 0.2)], 8)["goal_model_tls_cpu_met"]
    assert "inbound p99 1.3 ms against 0.2 ms" in line


def test_bench_calls_runs_the_guard_off_beside_the_bridge_unless_told_not_to() -> None:
    from bench.calls.cli import _parser, _paths

    parser = _parser()
    assert _paths(parser, parser.parse_args([])) == ["bridge", "echo_off", "ceiling"]
    assert _paths(parser, parser.parse_args(["--only", "bridge", "--srtp"])) == ["bridge", "echo_off", "srtp"]
    assert _paths(parser, parser.parse_args(["--no-echo-off"])) == ["bridge", "ceiling"]
    assert _paths(parser, parser.parse_args(["--only", "ceiling"])) == ["ceiling"]


@pytest.mark.slow  # a real process holds real memory
def test_memory_is_each_processes_pss_and_a_process_gone_is_absent() -> None:
    from bench.calls.machine import pss_kb_by_pid
    from bench.calls.report import Step
    from bench.calls.score import score_memory

    hold = "kept = bytearray(64 << 20)\nkept[::4096] = b'x' * len(kept[::4096])\nprint(flush=True)\ninput()\n"
    procs = [
        subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == b"\n"  # its 64 MB touched
        pids = [p.pid for p in procs]
        pss = pss_kb_by_pid(pids)
        assert set(pss) == set(pids) and all(64 * 1024 <= kb < 200 * 1024 for kb in pss.values()), pss
        step = Step("bridge", calls=8, processes=2)
        score_memory(step, pids)
        total = sum(pss.values()) / 1024
        assert step.pss_mb_per_process == pytest.approx(total / 2, abs=2.0)
        assert step.pss_mb_per_call == pytest.approx(total / 8, abs=1.0)
    finally:
        for proc in procs:
            proc.communicate(b"\n", timeout=10)
    assert pss_kb_by_pid(pids) == {}


@pytest.mark.slow  # real processes: a parent named as the preloaded one, and the worker it forked
def test_memory_all_in_counts_the_workers_preloaded_parent() -> None:
    from bench.calls.machine import preload_parents, pss_kb_by_pid
    from bench.calls.report import Step
    from bench.calls.score import score_memory

    fork = (
        "import os, sys\nkept = bytearray(32 << 20)\nkept[::4096] = b'x' * len(kept[::4096])\n"
        "pid = os.fork()\nif pid == 0:\n    sys.stdin.readline(); os._exit(0)\n"
        "print(pid, flush=True)\nos.waitpid(pid, 0)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", fork, "-m", "bridge.serve.zygote"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    other = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert preload_parents([child, other.pid]) == [parent.pid]  # a process of another parent adds none
        step = Step("bridge", calls=4, processes=1)
        score_memory(step, [child])
        assert step.pss_mb_per_call is not None and step.pss_mb_per_call_all_in is not None
        parent_mb = pss_kb_by_pid([parent.pid])[parent.pid] / 1024
        assert step.pss_mb_per_call_all_in == pytest.approx(step.pss_mb_per_call + parent_mb / 4, abs=1.0)
        assert parent_mb > 8  # its 32 MB, shared with the child, half of it its own share
    finally:
        parent.communicate(b"\n", timeout=10)
        other.communicate(b"\n", timeout=10)


def test_a_preloaded_parent_beside_its_worker_is_found_too() -> None:
    """``serve``'s workers are adopted by the pool (forked through a middle process): the parent is their sibling."""
    from bench.calls.machine import preload_parents

    wait = [sys.executable, "-c", "input()"]
    zygote = subprocess.Popen([*wait, "-m", "bridge.serve.zygote"], stdin=subprocess.PIPE)
    worker = subprocess.Popen(wait, stdin=subprocess.PIPE)
    try:
        assert zygote.pid in preload_parents([worker.pid]) and worker.pid not in preload_parents([worker.pid])
    finally:
        zygote.communicate(b"\n", timeout=10)
        worker.communicate(b"\n", timeout=10)
    assert zygote.pid not in preload_parents([worker.pid])  # gone


def test_the_bridges_cpu_and_memory_are_set_against_the_loopbacks() -> None:
    from bench.calls.report import HEADER, Step, row, summarize, summary_lines

    def step(path: str, calls: int, cpu: float, pss: tuple[float, float]) -> Step:
        s = Step(path, calls=calls, processes=calls // 4, window_s=12.0, expected_frames=600 * calls)
        s.answered, s.cpu_per_call_pct = calls, cpu
        s.pss_mb_per_process, s.pss_mb_per_call = pss
        return s

    steps = [step("bridge", 4, 0.6, (130.0, 32.5)), step("ceiling", 4, 0.2, (60.0, 15.0))]
    steps[0].pss_mb_per_call_all_in = 38.0
    summary = summarize(steps, 4)
    assert (summary["cost_step"], summary["bridge_over_ceiling_cpu"]) == (4, 3.0)
    line = next(line for line in summary_lines(summary) if line.startswith("at 4 calls"))
    assert "3.00x; memory" in line
    memory = next(line for line in summary_lines(summary) if line.startswith("memory (PSS)"))
    assert memory == (
        "memory (PSS) at 4 calls: the workers 32.5 MB per call, all in (their preloaded parent counted) 38.0 MB "
        "(goal <= 8 MB: NOT met)"
    )
    alone = summarize([steps[0]], 4)  # the bridge alone (--only bridge): the memory line still
    assert (alone["pss_step"], alone["goal_pss_met"]) == (4, False) and "cost_step" not in alone
    assert "bridge 130 MB per process, 32.5 MB per call" in line and "loopback 60 MB per process, 15.0 MB" in line
    assert "pss MB proc/call" in HEADER and " 130/32.5 " in row(steps[0])


def test_the_workers_are_set_against_both_floors_and_the_duplex_floor_against_the_loopback() -> None:
    from bench.calls.report import Step, summarize, summary_lines

    def step(path: str, calls: int, cpu: float, ceiling: str = "", answered: int | None = None) -> Step:
        s = Step(path, calls=calls, processes=calls // 4, window_s=12.0, expected_frames=600 * calls, ceiling=ceiling)
        s.answered, s.cpu_per_call_pct = calls if answered is None else answered, cpu
        s.cpu_threads_pct = {"python": round(cpu / 2, 3), "clock": round(cpu / 2, 3), "media": 0.004}
        return s

    equal = step("equal", 8, 0.50, "equal")
    equal.echo_guard = [4000, 3, 40]
    steps = [
        step("bridge", 8, 0.60),
        step("ceiling", 8, 0.20, "loop"),
        step("stream", 8, 0.30, "stream"),
        step("duplex", 8, 0.40, "duplex"),
        equal,
        step("bridge", 32, 0.50),
        step("ceiling", 32, 0.20, "loop"),
        step("duplex", 32, 0.50, "duplex", answered=31),  # not every call up: not compared at 32
    ]
    summary = summarize(steps, 32)
    assert summary["duplex_step"] == 8 and set(summary["duplex_by_step"]) == {8}
    at = summary["duplex_by_step"][8]
    assert at["cpu_per_call_pct"] == {"loop": 0.2, "stream": 0.3, "duplex": 0.4, "equal": 0.5, "bridge": 0.6}
    assert (at["duplex_over_loop"], at["bridge_over_duplex"], at["bridge_over_equal"]) == (2.0, 1.5, 1.2)
    assert summary["goal_duplex_lean_met"] is True and summary["goal_bridge_over_duplex_met"] is False
    assert summary["goal_bridge_over_equal_met"] is False
    lines = summary_lines(summary)
    assert (
        "floors at 8 calls: duplex 2.00x the loopback (goal <= 2.2x: met); the workers 1.20x the equal-work floor "
        "(goal <= 1.1x: NOT met), 1.50x the duplex floor (goal <= 1.25x: NOT met)" in lines
    )
    assert "at 8 calls: CPU per call loop 0.2%, stream 0.3%, duplex 0.4%, equal 0.5%, bridge 0.6%" in lines[-4]
    # by thread, the workers' beside each floor's; a thread under 0.01 % of a core per call left out
    assert lines[-3] == (
        "at 8 calls: CPU per call by thread, workers / duplex floor / equal floor: python 0.30% / 0.20% / 0.25%, "
        "clock 0.30% / 0.20% / 0.25%"
    )
    assert lines[-2] == (
        "at 8 calls: the equal-work floor's echo guards tempered 4000 frames, 3 full path searches, 40 coarse "
        "looks with no candidate"
    )


def test_ceiling_kinds_are_paths_of_their_own_after_the_first() -> None:
    from bench.calls.cli import _parser, _paths

    parser = _parser()
    assert _paths(parser, parser.parse_args(["--ceiling", "loop,stream,duplex"])) == [
        "bridge",
        "echo_off",
        "ceiling",
        "stream",
        "duplex",
    ]
    assert _paths(parser, parser.parse_args(["--only", "ceiling", "--ceiling", "duplex"])) == ["ceiling"]
    with pytest.raises(SystemExit):
        _paths(parser, parser.parse_args(["--ceiling", "loop,loud"]))


async def test_otel_runs_traced_workers_beside_the_untraced_ones_and_sets_their_cpu_against_the_goal(
    tmp_path: Path,
) -> None:
    """``--otel`` parses into the otel path beside the bridge's; that path's workers trace every call (``tracing:
    otlp``, sampling 100 %) to the bench's own OTLP receiver, which counts what it gets; the summary sets the traced
    workers' CPU per call against the untraced ones' (goal <= 1.05x)."""
    import aiohttp

    from bench.calls.cli import _parser, _paths
    from bench.calls.otlp import PATH, OtlpSink
    from bench.calls.paths import Bench
    from bench.calls.report import Step, summarize, summary_lines

    parser = _parser()
    assert _paths(parser, parser.parse_args(["--otel", "--no-echo-off"])) == ["bridge", "otel", "ceiling"]
    with pytest.raises(SystemExit):
        _paths(parser, parser.parse_args(["--otel", "--only", "ceiling"]))
    bench = Bench(12.0, tmp_path, tmp_path / "bench.log")
    assert bench.extra_env("bridge") is None
    sink = await OtlpSink().start()
    try:
        bench.otlp = sink
        env = bench.extra_env("otel") or {}
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == sink.endpoint and env["OTEL_TRACES_SAMPLER"] == "always_on"
        assert bench._settings(Step("otel", 4, 1), "ws://127.0.0.1:1/v1", tmp_path / "r", False).tracing == "otlp"
        assert bench._settings(Step("bridge", 4, 1), "ws://127.0.0.1:1/v1", tmp_path / "r", False).tracing == "off"
        async with aiohttp.ClientSession() as http, http.post(sink.endpoint + PATH, data=b"") as r:
            assert r.status == 200  # an empty export: no span
        assert sink.taken() == (1, 0, 0) and sink.taken() == (0, 0, 0)
    finally:
        await sink.stop()

    def step(path: str, cpu: float) -> Step:
        s = Step(path, calls=8, processes=2, window_s=12.0, expected_frames=600 * 8)
        s.answered, s.cpu_per_call_pct, s.otlp_exports, s.otlp_spans = 8, cpu, 3, 40
        return s

    summary = summarize([step("bridge", 2.0), step("otel", 2.06)], 8)
    assert (summary["otel_cpu_step"], summary["otel_cpu_ratio"], summary["goal_otel_cpu_met"]) == (8, 1.03, True)
    line = summary_lines(summary)[-1]
    assert line.startswith("traced (OTLP, sampling 100%): 8 clean calls") and "-> 1.030x (goal <= 1.05x: met)" in line
    assert "3 exports, 40 spans" in line
    assert not summarize([step("bridge", 2.0), step("otel", 2.2)], 8)["goal_otel_cpu_met"]
