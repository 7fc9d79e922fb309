"""The media fast path: std::vector storage read and written through ctypes, checked against the SWIG slow path.

The fast path depends on libstdc++'s vector layout (begin, end, capacity pointers at ``int(vec.this)``); if a
future wheel changes it, these tests fail (and ``bridge.sip.media`` falls back to the slow path by itself).
No endpoint is needed: ``MediaFrame`` is a plain struct.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import pjsua2 as pj
import pytest

from bridge.audio.frames import FRAME_BYTES, SILENCE
from bridge.sip import media
from bridge.sip.crossing import FrameCrossing


def test_layout_probe_passed_at_import() -> None:
    assert media.FAST_PATH is True
    assert media.read_frame is media._read_fast
    assert media.write_frame is media._write_fast


@pytest.mark.parametrize("size", [0, 1, 2, 160, 319, 320, 960, 4096])
def test_fast_read_matches_slow_read(size: int) -> None:
    data = os.urandom(size)
    frame = pj.MediaFrame()
    frame.buf = pj.ByteVector(data)
    frame.size = size
    assert media._read_fast(frame) == media._read_slow(frame) == data


@pytest.mark.parametrize("size", [1, 320, 960])
def test_fast_write_matches_slow_write(size: int) -> None:
    data = os.urandom(size)
    fast, slow = pj.MediaFrame(), pj.MediaFrame()
    fast.size = slow.size = 320  # on input, size is the capacity pjmedia offers
    media._write_fast(fast, data)
    media._write_slow(slow, data)
    assert bytes(fast.buf) == bytes(slow.buf) == data
    assert fast.size == slow.size == size
    assert fast.type == slow.type == pj.PJMEDIA_FRAME_TYPE_AUDIO


def test_fast_write_then_shorter_write_resizes() -> None:
    frame = pj.MediaFrame()
    media._write_fast(frame, b"\x01" * 320)
    media._write_fast(frame, b"\x02" * 10)
    assert bytes(frame.buf) == b"\x02" * 10
    assert frame.size == 10


def test_empty_frame_reads_as_no_bytes() -> None:
    assert media._read_fast(pj.MediaFrame()) == b""


# -- the callbacks, driven with a stand-in ``self`` (a real port needs a running endpoint) --------------------


def _port(source: Any = None, sink: Any = None) -> SimpleNamespace:
    return SimpleNamespace(
        _source=source, _sink=sink, _crossing=FrameCrossing(), frames_in=0, frames_out=0, empty_in=0, errors=0
    )


def test_received_frame_is_handed_to_the_crossing() -> None:
    got: list[bytes] = []
    port = _port(sink=lambda pcm, t: got.append(pcm))
    frame = pj.MediaFrame()
    frame.buf = pj.ByteVector(b"\x05" * FRAME_BYTES)
    frame.size = FRAME_BYTES
    media.BridgePort.onFrameReceived(port, frame)
    assert port.frames_in == 1
    assert port._crossing.drain() == 1
    assert got == [b"\x05" * FRAME_BYTES]


def test_size_zero_frames_after_hangup_are_counted_not_delivered() -> None:
    port = _port(sink=lambda pcm, t: pytest.fail("size-0 frame delivered"))
    media.BridgePort.onFrameReceived(port, pj.MediaFrame())
    assert port.empty_in == 1
    assert len(port._crossing) == 0


def test_detached_port_ignores_frames_and_leaves_requests_empty() -> None:
    port = _port()
    frame = pj.MediaFrame()
    media.BridgePort.onFrameRequested(port, frame)
    assert frame.size == 0 and frame.type == pj.PJMEDIA_FRAME_TYPE_NONE
    media.BridgePort.onFrameReceived(port, pj.MediaFrame())
    assert port.errors == 0


def test_requested_frame_is_padded_or_cut_to_320_bytes() -> None:
    for produced in (b"\x01" * 100, b"\x02" * 500, b""):
        port = _port(source=SimpleNamespace(pop_frame=lambda produced=produced: produced))
        frame = pj.MediaFrame()
        frame.size = FRAME_BYTES
        media.BridgePort.onFrameRequested(port, frame)
        expected = produced[:FRAME_BYTES].ljust(FRAME_BYTES, b"\0")
        assert bytes(frame.buf) == expected
        assert frame.size == FRAME_BYTES
        assert frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO


def test_exceptions_never_escape_the_callbacks() -> None:
    def boom(*_args: object) -> bytes:
        raise RuntimeError("app bug")

    port = _port(source=SimpleNamespace(pop_frame=boom), sink=boom)
    frame = pj.MediaFrame()
    media.BridgePort.onFrameRequested(port, frame)  # must not raise
    assert port.errors == 1
    assert frame.size == 0
    broken = SimpleNamespace(_sink=boom, _crossing=None, frames_in=0, empty_in=0, errors=0)
    full = pj.MediaFrame()
    full.buf = pj.ByteVector(SILENCE)
    full.size = FRAME_BYTES
    media.BridgePort.onFrameReceived(broken, full)  # _crossing is None: AttributeError, swallowed
    assert broken.errors == 1
