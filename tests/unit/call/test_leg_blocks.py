"""The caller's frames as blocks through the leg's wrappers (the worker's recording, take-over and listen tap): a
read of the native port delivered as one block gives every stage exactly the frames and times, in order, that the
same frames one by one gave it, a stage with no block form included, and each stage that takes blocks gets one
call per read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from test_tap import Leg, Playout

from bridge import events as ev
from bridge.audio.analysis import tone
from bridge.audio.frames import FRAME_BYTES, FrameSink, FrameSource, deliver_block
from bridge.call.leg import LegProxy, PhoneLeg, pop_block, split
from bridge.call.recorder import CHUNK_TICKS, RecordingLeg, read_recording
from bridge.call.takeover import TakeOverLeg
from bridge.call.tap import ListenTap

READS = (1, 3, 3, 5, 2, 7, 13, 20, 4, 9)  # frames per read of the port: chunk boundaries fall inside reads
FRAMES = sum(READS)
KEY_AT, RESUME_AT = 4, 7  # reads: a key pauses the recording before the 5th, its pause is over by the 8th


class PerFrame(LegProxy):
    """A wrapper whose sink has no block form: what it was given, frame by frame."""

    def __init__(self, leg: PhoneLeg) -> None:
        super().__init__(leg)
        self.seen: list[tuple[bytes, float]] = []

    def start_media(self, outbound: FrameSource, on_frame: FrameSink) -> None:
        def step(pcm: bytes, t_capture: float) -> None:
            self.seen.append((pcm, t_capture))
            on_frame(pcm, t_capture)

        self.leg.start_media(outbound, step)


class Session:
    """The session's sink, with a block form: each frame it got, and how many calls brought them."""

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, float]] = []
        self.calls = 0

    def __call__(self, pcm: bytes, t_capture: float) -> None:
        self.calls += 1
        self.frames.append((pcm, t_capture))

    def on_frames(self, block: bytes, times: Sequence[float]) -> None:
        self.calls += 1
        self.frames.extend(zip(split(block), times, strict=True))


Seen = tuple[bytes, bytes, int, list[tuple[bytes, float]], bytes, Session]


def call(tmp_path: Path, blocks: bool, middle: bool) -> Seen:
    """One recorded, listened-in call as the worker wraps it; its caller frames come frame by frame or as the
    port's reads. Returns the recording's two channels and what it held unwritten at the end (a chunk is
    CHUNK_TICKS ticks), what the middle stage saw, the listener's mix and the session's sink."""
    now = [0.0]
    leg = Leg()
    path = tmp_path / f"{blocks}"
    recording = RecordingLeg(leg, path, True, clock=lambda: now[0], pause_on_keys=True)  # type: ignore[arg-type]  # Leg has what the proxy uses of a PhoneLeg
    inner: PhoneLeg = PerFrame(recording) if middle else recording
    tap = ListenTap(TakeOverLeg(inner))
    session = Session()
    tap.start_media(Playout(tone(700, FRAMES * 0.02, dbfs=-12)), session)
    tap.start()
    assert leg.source is not None and leg.sink is not None
    assert hasattr(leg.sink, "on_frames")  # the recording's sink, at the port, takes blocks
    caller = [np.full(160, k + 1, dtype="<i2").tobytes() for k in range(FRAMES)]
    times = [100.0 + 0.02 * k for k in range(FRAMES)]
    at = 0
    for r, n in enumerate(READS):
        if r == KEY_AT:
            recording.listener(ev.KeyPressed("4", ev.DtmfSource.RFC4733))
        if r == RESUME_AT:
            now[0] = 10.0
        pop_block(leg.source, n)  # the port's top-up: the agent's frames for these ticks
        if blocks:
            deliver_block(leg.sink, b"".join(caller[at : at + n]), times[at : at + n])
        else:
            for k in range(at, at + n):
                leg.sink(caller[k], times[k])
        at += n
    _, mixed = tap.take()
    held = recording.held_bytes
    recording.listener(ev.CallEnded("caller hung up", ev.CallOutcome.COMPLETED, ev.EndedBy.CALLER))
    left, right, _, _ = read_recording(path)
    seen = inner.seen if isinstance(inner, PerFrame) else []
    return left, right, held, seen, mixed, session


@pytest.mark.parametrize("middle", [False, True], ids=["worker-chain", "per-frame-stage-inside"])
def test_a_block_gives_every_stage_what_its_frames_one_by_one_gave(tmp_path: Path, middle: bool) -> None:
    left, right, held, seen, mixed, session = call(tmp_path / "frames", blocks=False, middle=middle)
    b_left, b_right, b_held, b_seen, b_mixed, b_session = call(tmp_path / "blocks", blocks=True, middle=middle)
    assert (b_left, b_right) == (left, right)  # the recording: both channels, to the sample
    assert b_held == held == (FRAMES - CHUNK_TICKS) * 4 * 160  # written in whole chunks: the rest in memory
    c = np.frombuffer(left, "<i2").reshape(-1, 160)
    paused = slice(sum(READS[:KEY_AT]), sum(READS[:RESUME_AT]))
    assert len(c) == FRAMES and (c[paused] == 0).all() and c[-1][0] == FRAMES  # paused by the key, then again
    assert (c[: paused.start, 0] == np.arange(1, paused.start + 1)).all()
    assert any(sum(READS[:r]) < CHUNK_TICKS < sum(READS[: r + 1]) for r in range(len(READS)))  # a chunk ends in one
    assert b_seen == seen and len(seen) == (FRAMES if middle else 0)  # the stage with no block form: each frame
    assert b_mixed == mixed and len(mixed) == FRAMES * FRAME_BYTES  # the listener: both sides, frame by frame
    assert b_session.frames == session.frames and len(session.frames) == FRAMES  # the session: frames and times
    assert session.calls == FRAMES
    # one call per read down to the session, unless a stage on the way takes only frames
    assert b_session.calls == (FRAMES if middle else len(READS))
