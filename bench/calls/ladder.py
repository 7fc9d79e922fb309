"""The ladder: every step for every path, a failing step run once more, a path stopped at its first failure; the
table as it goes and the summary at the end."""

from __future__ import annotations

import contextlib
import gc
import json
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import websockets

from bench.calls.otlp import OtlpSink
from bench.calls.paths import MODEL_SPEED, Bench, greeting_s
from bench.calls.redis import line as redis_line
from bench.calls.report import HEADER, Step, banner, calls_line, row, summarize, summary_lines, where_line
from bridge.audio.frames import BEAT_FRAMES
from bridge.realtime.ws_fastpath import fast_path_problems

# A step that fails is run once more, for both paths alike, and fails only if that fails too: at 16 calls the mark
# is 10 frames in 12 s, so one 200 ms stall anywhere on the machine failed the ceiling at 16 calls in one ladder.
ATTEMPTS = 2
LOG_NAME = "callbridge-bench-calls.log"  # in the temporary directory; the front keeps its logs next to it


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


def fast_path_line(secure: bool = False) -> str:
    """Which ``websockets`` the workers run on, and whether the Realtime socket takes its fast paths with it
    (``secure``: over ``wss://`` too)."""
    slow = fast_path_problems(secure)
    state = "fast path on" if not slow else "fast path off: " + "; ".join(slow)
    return f"Realtime socket: websockets {websockets.version.version}, {state}"


def emulator_options(seconds: float, speed: float = MODEL_SPEED) -> dict[str, Any]:
    """The emulator as the bench's model: one greeting, a 440 Hz tone that outlasts the set-up and a window of
    ``seconds``, delivered at ``speed`` times real time, no pings."""
    greeting = {"text": "benchmark", "tone_hz": 440.0, "duration_ms": greeting_s(seconds) * 1000}
    return {"speed": speed, "ping_interval_s": 0, "annotations": {"greeting": greeting}}


def _say(text: str) -> None:
    print(text, flush=True)


async def run_bench(
    steps: list[int],
    seconds: float,
    as_json: bool,
    paths: Sequence[str],
    priority: int = 0,
    beat: int = BEAT_FRAMES,
    ceiling: str = "loop",
    every_step: bool = False,
    redis: bool = False,
    count_calls: bool = False,
) -> int:
    from bridge.devkit.ports import listen_port
    from bridge.devkit.redis_server import EmbeddedRedis
    from bridge.emulator import EmulatorServer
    from bridge.emulator.server import server_tls

    with tempfile.TemporaryDirectory(prefix="callbridge-bench-calls-") as tmp, contextlib.ExitStack() as servers:
        log_path = Path(tempfile.gettempdir()) / LOG_NAME
        log_path.write_text("")
        url = servers.enter_context(EmbeddedRedis()).url if redis else None
        bench = Bench(seconds, Path(tmp), log_path, priority, beat, ceiling, spread="front" in paths, redis_url=url)
        bench.count_calls = count_calls  # the workers count their loop's calls (bridge/runtime/callcount.py)
        if not as_json:
            _say(banner(steps, seconds, priority, beat, ceiling, log_path))
            _say(fast_path_line("model_tls" in paths))
            _say(HEADER)
        emulator = emulator_options(seconds)
        async with contextlib.AsyncExitStack() as stack:
            emus = {"": await stack.enter_async_context(EmulatorServer("127.0.0.1", listen_port(), **emulator))}
            if "otel" in paths:  # the traced workers' collector, in this process
                bench.otlp = await stack.enter_async_context(_running(OtlpSink()))
            if "model_tls" in paths:  # the same model behind TLS, for that path only
                tls = server_tls(*bench.tls_files())
                tls_emulator = EmulatorServer("127.0.0.1", listen_port(), tls=tls, **emulator)
                emus["model_tls"] = await stack.enter_async_context(tls_emulator)
            results = await _climb(bench, emus, steps, paths, as_json, every_step)
    summary = summarize(results, max(steps)) | {
        "realtime_priority": priority,
        "media_beat_frames": beat,
        "ceiling": ceiling,
        "fast_path_problems": fast_path_problems("model_tls" in paths),
    }
    if as_json:
        _say(json.dumps(summary))
    else:
        print("\n".join(summary_lines(summary)))
        sys.stdout.flush()
    return 0


@contextlib.asynccontextmanager
async def _running(sink: OtlpSink) -> AsyncIterator[OtlpSink]:
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()


async def _climb(
    bench: Bench, emus: dict[str, Any], steps: list[int], paths: Sequence[str], as_json: bool, every_step: bool
) -> list[Step]:
    """Every step in turn, each path on it; a path stops at its first failing step (its capacity is known then),
    unless ``every_step`` (the CPU per call at each step is wanted, not the capacity)."""
    results: list[Step] = []
    failed: set[str] = set()
    for calls in steps:
        for path in paths:
            if path in failed:
                continue
            step = await _decided_step(bench, emus.get(path, emus[""]), path, calls, as_json)
            results.append(step)
            if not step.passed and not every_step:
                failed.add(path)
    return results


async def _decided_step(bench: Bench, emu: Any, path: str, calls: int, as_json: bool) -> Step:
    """One step of one path, run again while it fails, up to ``ATTEMPTS`` runs; the last run decides."""
    for attempt in range(1, ATTEMPTS + 1):
        with _collect_between_steps():
            ceiling = path in bench.ceiling_kinds
            step = await (bench.ceiling_step(calls, path) if ceiling else bench.bridge_step(calls, emu, path))
        step.attempt = attempt
        _say(json.dumps(step.to_json()) if as_json else row(step))
        if not as_json:
            if step.redis is not None:
                _say(redis_line(step.redis))
            if step.calls_per_beat is not None:
                _say("    " + calls_line(step.calls_per_beat))
            if step.calls_by_function:
                _say("    " + where_line(step.calls_by_function))
            for error in step.errors:
                _say(f"    ! {error}")
        emu.sessions.clear()  # their recordings are scored; keep the memory flat
        if step.passed:
            break
    return step
