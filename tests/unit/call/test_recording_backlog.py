"""A recording's writer behind the call: a call in real time writes silence past the backlog (it never waits on the
disk); a run in virtual time keeps every chunk, however far ahead of the disk's thread it runs."""

from __future__ import annotations

import threading
import time
import wave
from pathlib import Path
from typing import BinaryIO

import pytest

from bridge.call.recorder import AUDIO_FILE, MAX_BACKLOG, RecordingWriter

CHUNK = bytes([1, 0, 2, 0]) * 8000  # 1 s of stereo 8 kHz PCM16, never silent
CHUNKS = MAX_BACKLOG + 6


def _stalled_until(opened: threading.Event, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's thread opens its files only once ``opened`` is set: the disk is behind until then."""
    real = RecordingWriter._open

    def slow(self: RecordingWriter) -> tuple[BinaryIO, BinaryIO]:
        opened.wait(10)
        return real(self)

    monkeypatch.setattr(RecordingWriter, "_open", slow)


@pytest.mark.parametrize(("drops", "silent_chunks"), [(True, CHUNKS - MAX_BACKLOG), (False, 0)])
def test_a_writer_behind_the_call_drops_only_in_real_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drops: bool, silent_chunks: int
) -> None:
    disk = threading.Event()
    _stalled_until(disk, monkeypatch)
    writer = RecordingWriter(tmp_path / "rec", "c-1", drops_behind=drops)
    writer.line("{}")  # the thread takes it, then waits for its files
    deadline = time.monotonic() + 10
    while writer.backlog and time.monotonic() < deadline:  # polled: a thread's queue has no event to wait on
        time.sleep(0.001)
    for _ in range(CHUNKS):
        writer.audio(CHUNK)
    disk.set()
    assert writer.close()
    with wave.open(str(tmp_path / "rec" / AUDIO_FILE)) as wav:
        frames = wav.readframes(wav.getnframes())
    chunks = [frames[i : i + len(CHUNK)] for i in range(0, len(frames), len(CHUNK))]
    assert len(chunks) == CHUNKS  # the audio keeps its clock either way
    assert sum(1 for c in chunks if not any(c)) == silent_chunks
