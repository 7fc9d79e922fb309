"""``callbridge bench recording [--hours H] [--json]``: one recorded call of H hours (default 2) in virtual time:
the recorder's memory and the longest stall it puts on the event loop.

The call runs as fast as the machine goes, except that at each second of the call the bench lets the recording's
writer thread catch up (as a second of real time would; that wait is not counted). Every 20 ms tick the media port
takes an agent frame and delivers a caller frame (both to the :class:`~bridge.call.recorder.RecordingLeg`, as on the
event loop), one report a second reaches its listener, and a barge-in every 12 s flushes the port's ring. Measured:
the wall time of each loop-side call into the recorder (a tick, a report, the final close): its maximum is the
longest stall a recording puts on every other call of the worker; the process's RSS growth after the first minute;
the bytes the recorder holds; the WAV on disk (its header must say the call's length, and it is checked to play at
the half-way mark, while the call goes on). The anchor, measured in the same run: a recorder that keeps the call in
memory and writes it at the end (the stall of that one write, the memory it holds). Goals: no stall over 20 ms, flat
memory (growth < 1 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bridge import events as ev
from bridge.audio.frames import BYTES_PER_FRAME_PCM16, FRAME_MS, FrameSink, FrameSource, StreamKernel
from bridge.call.recorder import AUDIO_FILE, RecordingLeg

STALL_GOAL_MS = 20.0
GROWTH_GOAL_KIB = 1024
TICKS_PER_S = 1000 // FRAME_MS


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class _Leg:
    """A phone leg with no telephone: the bench plays the media port itself."""

    def __init__(self) -> None:
        self.call_id, self.caller, self.called = "c-bench", "+15550000000", "1000"
        self.events: asyncio.Queue[ev.Event] = asyncio.Queue()
        self.disconnected = asyncio.Event()
        self.media: tuple[FrameSource, FrameSink] | None = None

    def start_media(self, outbound: FrameSource, on_frame: FrameSink) -> None:
        self.media = (outbound, on_frame)

    def hangup(self, reason: str | None = None) -> None: ...

    def ringing(self) -> None: ...

    def answer(self) -> None: ...

    def reject(self, code: int, reason: str | None = None, retry_after: int | None = None) -> None: ...

    def transfer(self, uri: str) -> None: ...

    def send_dtmf(self, digits: str) -> None: ...

    def uplink_offload(self, upsampler: StreamKernel) -> None:
        return None


class _Tone:
    def __init__(self) -> None:
        self.frame = (np.sin(np.arange(160) * 2 * np.pi * 440 / 8000) * 8000).astype("<i2").tobytes()

    def pop_frame(self) -> bytes:
        return self.frame


class _Ring:
    def flush_out(self) -> int:
        return 4  # a barge-in drops the 4 frames the port holds

    def drop_newest(self, frames: int) -> int:
        return 0

    def depth(self) -> int:
        return 4

    def top_up(self) -> None: ...


def measure(hours: float, directory: Path) -> dict[str, Any]:
    ticks = int(hours * 3600 * TICKS_PER_S)
    leg = _Leg()
    now = [0.0]
    rec = RecordingLeg(leg, directory / "rec", consent=True, clock=lambda: now[0])
    rec.start_media(_Tone(), lambda pcm, t: None)
    assert leg.media is not None
    outbound, on_frame = leg.media
    outbound.set_downstream(_Ring())  # type: ignore[attr-defined]  # the recorder's source wraps the port's ring
    caller = bytes(BYTES_PER_FRAME_PCM16)
    stalls = np.full(ticks + 1, 0.0)  # allocated and touched up front: the bench's own bookkeeping does not grow
    backlog_max = 0
    idle = 0.0
    rss_after_minute = 0
    held_max = 0
    playable_mid = False
    t_start = time.perf_counter()
    for i in range(ticks):
        now[0] = i * FRAME_MS / 1000.0
        t = time.perf_counter()
        outbound.pop_frame()
        on_frame(caller, now[0])
        if i % TICKS_PER_S == 0:
            rec.listener(ev.CallerSpeechStarted(int(now[0] * 1000)))
        if i % (12 * TICKS_PER_S) == 0:
            rec.unsent(4)  # what the wrapped ring's flush does
        stalls[i] = time.perf_counter() - t
        if i % TICKS_PER_S == 0:  # a second of the call: in real time the writer has had that second to write
            idle += _let_the_writer_catch_up(rec)
        if i == 60 * TICKS_PER_S:
            rss_after_minute = rss_kib()
        if i % (60 * TICKS_PER_S) == 0:
            held_max = max(held_max, rec.held_bytes)
            backlog_max = max(backlog_max, rec.writer_backlog)
        if i == ticks // 2:
            time.sleep(0.2)  # let the writer catch up, then read the file the call is still writing
            playable_mid = _playable_s(directory / "rec" / AUDIO_FILE) > 0
    rss_end = rss_kib()
    t = time.perf_counter()
    rec.listener(ev.CallEnded("caller hung up", ev.CallOutcome.COMPLETED, ev.EndedBy.CALLER))
    stalls[ticks] = time.perf_counter() - t
    wall = time.perf_counter() - t_start - idle
    seconds = _playable_s(directory / "rec" / AUDIO_FILE)
    anchor = _in_memory_anchor(min(ticks, int(0.5 * 3600 * TICKS_PER_S)), directory)
    ms = stalls * 1000.0
    return {
        "call_h": hours,
        "wall_s": round(wall, 2),
        "wav_s": round(seconds, 2),
        "wav_matches_call": abs(seconds - ticks * FRAME_MS / 1000.0) < 0.001,
        "playable_mid_call": playable_mid,
        "stall_max_ms": round(float(ms.max()), 2),
        "stall_p99_ms": round(float(np.percentile(ms, 99)), 3),
        "stalls_over_goal": int((ms > STALL_GOAL_MS).sum()),
        "rss_growth_kib": rss_end - rss_after_minute,
        "held_max_bytes": held_max,
        "writer_backlog_max": backlog_max,  # writes queued for the recording's thread (checked once a minute)
        "anchor": anchor,
        "meets_goals": bool(ms.max() <= STALL_GOAL_MS and rss_end - rss_after_minute < GROWTH_GOAL_KIB),
    }


def _let_the_writer_catch_up(rec: RecordingLeg) -> float:
    """Wait (up to the second of call time it stands for) until the writer has at most one chunk queued."""
    t = time.perf_counter()
    while rec.writer_backlog > 1 and time.perf_counter() - t < 1.0:
        time.sleep(0.0005)
    return time.perf_counter() - t


def _playable_s(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


def _in_memory_anchor(ticks: int, directory: Path) -> dict[str, Any]:
    """Keep every frame in lists and write the WAV at the end, on the loop (half an hour at most: it is linear)."""
    before = rss_kib()
    caller: list[bytes] = []
    agent: list[bytes] = []
    frame = _Tone().frame
    for _ in range(ticks):
        caller.append(bytes(BYTES_PER_FRAME_PCM16))
        agent.append(bytes(frame))
    held = rss_kib() - before
    t = time.perf_counter()
    left = np.frombuffer(b"".join(caller), "<i2")
    right = np.frombuffer(b"".join(agent), "<i2")
    with wave.open(str(directory / "anchor.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.stack([left, right], axis=1).tobytes())
    stall = time.perf_counter() - t
    hours = ticks / TICKS_PER_S / 3600
    return {
        "call_h": round(hours, 2),
        "held_mib_per_h": round(held / 1024 / hours, 1),
        "write_stall_ms": round(stall * 1000, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callbridge bench recording", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=2.0, help="the call's length, hours of virtual time (default 2)")
    parser.add_argument("--json", action="store_true", help="the result as one JSON object")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="callbridge-bench-recording-") as tmp:
        result = measure(args.hours, Path(tmp))
    if args.json:
        print(json.dumps(result))
    else:
        a = result["anchor"]
        print(
            f"recording of {result['call_h']} h in {result['wall_s']} s: stall max {result['stall_max_ms']} ms "
            f"(p99 {result['stall_p99_ms']} ms, {result['stalls_over_goal']} over {STALL_GOAL_MS:.0f} ms), "
            f"RSS growth after the first minute {result['rss_growth_kib']} KiB, recorder holds at most "
            f"{result['held_max_bytes']} B (writer backlog {result['writer_backlog_max']}); WAV {result['wav_s']} s "
            f"(matches the call: {result['wav_matches_call']}, "
            f"playable mid-call: {result['playable_mid_call']})\n"
            f"anchor (in memory, written at the end): {a['held_mib_per_h']} MiB per call-hour, "
            f"a {a['write_stall_ms']} ms stall for {a['call_h']} h"
        )
    return 0 if result["meets_goals"] else 1


if __name__ == "__main__":
    sys.exit(main())
