"""The per-call media port: 8 kHz, 20 ms, PCM16 mono frames between pjmedia's conference bridge and Python.

``BridgePort`` is a pjsua2 ``AudioMediaPort``. pjmedia's clock thread (one per process, shared by every call) calls

* ``onFrameReceived`` with what the caller said (the call's stream -> conference bridge -> this port), and
* ``onFrameRequested`` for what the caller should hear (this port -> bridge -> the call's stream -> G.711 RTP).

Both run under the GIL on that one thread, every 20 ms, for every call of the process: they do a couple of
ctypes calls and one ``deque`` operation (see :mod:`bridge.sip.crossing`), and nothing else.

Frame bytes take the fast path: ``bytes(frame.buf)`` walks the SWIG vector element by element (220-600 µs per
frame), so the ``std::vector<unsigned char>`` storage is read and written directly. With libstdc++ a vector is
three pointers, ``begin, end, capacity``; inside ``pj::MediaFrame`` it sits at offset 8, after ``type`` and
before ``size`` (:class:`_FrameView`). Only the allocation goes through SWIG (``buf.resize``). That layout is
checked once at import (:data:`FAST_PATH`) and by ``tests/unit/sip/test_sip_frames.py``; if it ever fails, the
slow path is used and a warning is logged.

Cost on this machine (hot loop): read 1.4 µs, write 5.2 µs (of which ``resize`` is 3.8), against 4.6 and 7.3 µs
through ``frame.buf`` and the SWIG setters, and 220-600 µs for ``bytes(frame.buf)``.

Every callback body is wrapped in ``try/except BaseException``: an exception escaping into SWIG is printed and
its saved traceback keeps the port alive, which aborts the process at ``libDestroy``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import time
from typing import Any

import pjsua2 as pj

from bridge.audio.frames import FRAME_BYTES, FRAME_MS, SAMPLE_RATE, FrameSink, FrameSource
from bridge.sip.crossing import FrameCrossing, PortCounters

_LOG = logging.getLogger("bridge.sip")


class _FrameView(ctypes.Structure):
    """``pj::MediaFrame`` as laid out by this wheel (x86-64, libstdc++): ``type``, ``buf`` (a ``std::vector`` is
    three pointers: begin, end, capacity), ``size``. One ctypes view replaces three SWIG accessors per frame."""

    _fields_ = (
        ("type", ctypes.c_int),
        ("begin", ctypes.c_size_t),
        ("end", ctypes.c_size_t),
        ("capacity", ctypes.c_size_t),
        ("size", ctypes.c_uint),
    )


_FRAME_TYPE_AUDIO = pj.PJMEDIA_FRAME_TYPE_AUDIO
_view = _FrameView.from_address
_string_at = ctypes.string_at
_memmove = ctypes.memmove
_monotonic = time.monotonic


def _read_fast(frame: Any) -> bytes:
    view = _view(int(frame.this))
    begin = view.begin
    end = view.end
    if end <= begin:
        return b""
    return _string_at(begin, end - begin)


def _write_fast(frame: Any, data: bytes) -> None:
    size = len(data)
    frame.buf.resize(size)  # the vector owns its storage: only the C++ side may allocate it
    view = _view(int(frame.this))
    _memmove(view.begin, data, size)
    view.size = size
    view.type = _FRAME_TYPE_AUDIO


def _read_slow(frame: Any) -> bytes:
    return bytes(frame.buf)


def _write_slow(frame: Any, data: bytes) -> None:
    frame.buf = pj.ByteVector(data)
    frame.size = len(data)
    frame.type = _FRAME_TYPE_AUDIO


def _fast_path_works() -> bool:
    """Check the layout both ways against the SWIG accessors on scratch frames (microseconds, at import)."""
    try:
        probe = bytes(range(256)) + b"\x00\xff\x7f\x80"
        frame = pj.MediaFrame()
        if _read_fast(frame) != b"":
            return False
        _write_fast(frame, probe)
        if _read_slow(frame) != probe or frame.size != len(probe) or frame.type != _FRAME_TYPE_AUDIO:
            return False
        frame.buf = pj.ByteVector(probe[::-1])
        frame.size = 77
        frame.type = pj.PJMEDIA_FRAME_TYPE_NONE
        view = _view(int(frame.this))
        return _read_fast(frame) == probe[::-1] and view.size == 77 and view.type == pj.PJMEDIA_FRAME_TYPE_NONE
    except Exception:  # a different C++ runtime could fault the probe into an error, never into a crash here
        return False


FAST_PATH = _fast_path_works()
if FAST_PATH:
    read_frame = _read_fast
    write_frame = _write_fast
else:  # pragma: no cover - depends on the C++ library the wheel was built with
    _LOG.warning("std::vector layout check failed: media frames use the slow SWIG path (≈0.5 ms per frame)")
    read_frame = _read_slow
    write_frame = _write_slow


class BridgePort(pj.AudioMediaPort):  # type: ignore[misc]  # pjsua2 has no stubs, so the base class is Any
    """One call's media port. Pooled by the endpoint: attached to a call, detached and reused after it.

    While detached it neither reads nor writes: received frames are ignored and requested frames stay empty
    (``PJMEDIA_FRAME_TYPE_NONE``), which the conference bridge treats as "no audio".
    """

    # Class-level defaults: a callback that races the constructor or the teardown finds these, not an AttributeError.
    _source: FrameSource | None = None
    _sink: FrameSink | None = None
    frames_in = frames_out = empty_in = errors = 0

    def __init__(self, name: str, crossing: FrameCrossing) -> None:
        super().__init__()
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, SAMPLE_RATE, 1, FRAME_MS * 1000, 16)
        self.createPort(name, fmt)
        self.name = name
        self._crossing = crossing
        self._source: FrameSource | None = None
        self._sink: FrameSink | None = None
        self.frames_in = 0
        self.frames_out = 0
        self.empty_in = 0  # size-0 frames (no audio from the call, e.g. for ~1 s after it ends)
        self.errors = 0

    def attach(self, source: FrameSource | None, sink: FrameSink | None) -> None:
        """Loop thread. Two attribute stores; the clock thread sees either the old or the new pair."""
        self._source = source
        self._sink = sink

    def detach(self) -> None:
        self._sink = None
        self._source = None

    @property
    def attached(self) -> bool:
        return self._sink is not None or self._source is not None

    def counters(self) -> PortCounters:
        """No ``late_out`` here (the source answers every request at once, silence when it has nothing) and no
        ``clock_gaps`` (not measured on this path)."""
        return PortCounters(self.frames_in, self.frames_out, self.empty_in, self.errors)

    def connect(self, audio_media: Any) -> None:
        connect_both_ways(self, audio_media)

    def route(self, audio_media: Any, *, send: bool, receive: bool) -> None:
        """As :meth:`bridge.sip.cport.NativePort.route`."""
        for source, sink, on in ((self, audio_media, send), (audio_media, self, receive)):
            if on:
                source.startTransmit(sink)
            else:
                with contextlib.suppress(pj.Error):  # not connected: nothing to undo
                    source.stopTransmit(sink)

    # -- clock thread -------------------------------------------------------------------------------------

    def onFrameReceived(self, frame: Any) -> None:
        try:
            sink = self._sink
            if sink is None:
                return
            pcm = read_frame(frame)
            if not pcm:
                self.empty_in += 1
                return
            self.frames_in += 1
            self._crossing.put(sink, pcm, _monotonic())
        except BaseException:  # see the module docstring: nothing may escape into SWIG
            self.errors += 1

    def onFrameRequested(self, frame: Any) -> None:
        try:
            source = self._source
            if source is None:
                return
            data = source.pop_frame()
            if len(data) != FRAME_BYTES:
                data = data[:FRAME_BYTES].ljust(FRAME_BYTES, b"\0")
            write_frame(frame, data)
            self.frames_out += 1
        except BaseException:  # see the module docstring
            self.errors += 1


def connect_both_ways(port: BridgePort, audio_media: Any) -> None:
    """Call audio -> port (what the caller says) and port -> call audio (what the caller hears)."""
    audio_media.startTransmit(port)
    port.startTransmit(audio_media)


def disconnect_both_ways(port: BridgePort, audio_media: Any) -> None:
    audio_media.stopTransmit(port)
    port.stopTransmit(audio_media)
