"""The native media port: pjmedia's clock thread hands frames over in C and never waits for the GIL.

Why: a pjsua2 ``AudioMediaPort`` (:class:`bridge.sip.media.BridgePort`) calls into Python twice per call and
20 ms tick from pjmedia's one clock thread. Profiled under ``bench calls``, that thread spent most of its time
waiting for the GIL while the event loop ran, and every call of the process shared that delay (late frames at
the callers). :class:`NativePort` is a ``pjmedia_port`` written in C (``cport.c``, beside this file): its
``put_frame`` and ``get_frame`` copy 320 bytes into or out of a small ring under a per-port mutex and wake the
loop through one eventfd per process. The loop then, in :meth:`NativeHub.drain` (one call for every port,
``cbp_poll_all``, tells it both what is waiting and what is needed, and lists only the ports it must act on):

* hands every received frame to its call's sink, with the capture time the clock thread stamped: a read's frames
  (all that wait, up to the ring's 64) in one call where the sink takes blocks (``on_frames``,
  :class:`~bridge.audio.frames.BlockSink`: the call's leg does), else frame by frame (a sink that raises is
  counted in ``sink_errors``; raising amid a block, it loses the rest of that read), and
* tops every outbound ring up to ``lead + beat - 1`` frames from the call's :class:`FrameSource`: in one block where
  the source takes blocks (``pop_frames``: the playout buffers, the C ring among them, and the taps around them),
  else frame by frame; and where the source is the C ring with nothing on the way that needs its frames (no
  listen-in, take-over, echo hold or recording: :meth:`NativePort.reroute`), in C, inside the same ``cbp_poll``
  call (``cport.c``, "Pull"), so a quiet beat costs Python one call for all the ports; that call's answer also says
  when the call's echo guard, hearing the caller's frames on the clock thread, heard the caller's onset over the
  agent (:meth:`NativeUplink.guard_with`): the clock thread woke the loop for it, and the port's ``on_onset`` runs.

The clock thread wakes the loop when a ring holds fewer than ``lead`` frames (default 2), i.e. once every
``beat`` ticks (the worker's media beat, default 3: 60 ms; ``SipConfig.media_beat_frames``), and the loop's
other chores (session ticks, the Realtime sockets, the SIP poll) ride on that wake-up (:mod:`bridge.runtime.metronome`):
a worker's wake-ups cost more than their work, so fewer of them is most of the saving. The lead is the price:
audio for the caller is taken from the playout buffer up to ``lead + beat - 1`` ticks before it is sent. A
barge-in still cuts at once: :meth:`NativePort.flush_out` drops what the ring holds and the playout buffer
un-counts those frames (``PlayoutBuffer.set_downstream``), so ``audio_end_ms`` stays what was sent. And a reply
does not wait behind the silence queued while the call was quiet: when its first audio is pushed, the playout
buffer takes that silence back (:meth:`NativePort.drop_newest`) and has the ring topped up at once
(:meth:`NativePort.top_up`).

Building: ``cport.c`` is compiled into the wheel, else on first use with the system C compiler into a cache directory
(:mod:`bridge.native.build`). It uses no pjproject header: the ``pjmedia_port`` layout
is mirrored and then proven on a scratch port through the wheel's own ``pjmedia_port_info_init``,
``pjmedia_port_put_frame`` and ``pjmedia_port_get_frame`` before any port reaches the conference bridge. If
there is no compiler, or the check fails, :func:`native_ports` says why and the endpoint keeps
:class:`BridgePort`.

While a call's Realtime socket is bound to its port (:class:`NativeUplink`, the session's
:class:`~bridge.call.leg.UplinkOffload`), the caller's frames do not come to the loop at all: the clock thread
upsamples, encodes and sends each one itself (``cport.c``, "Uplink"), and the loop is left with the playout. A
call's C echo guard hears (and tempers) each frame there first (:meth:`NativeUplink.guard_with`). The guard's
reference comes from the port too: a source that offers ``c_reference`` (the echo guard's tee on the playout,
``bridge.call.echo.HeldSource``) with a C guard gets each frame the clock thread sends handed to that guard there
(``cport.c``, "Reference"), and the loop neither hands it frames nor tells it of flushed or skipped ones.

Only the event loop thread (pjsua's main thread) calls anything here except the C callbacks themselves.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import pjsua2 as pj

from bridge.audio.echo import Guard
from bridge.audio.frames import (
    FRAME_BYTES,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    FrameSink,
    FrameSource,
    OnFrames,
    StreamKernel,
    exact_frame,
)
from bridge.audio.wire import AppendTemplate
from bridge.native import build as cbuild
from bridge.sip.crossing import PortCounters

_LOG = logging.getLogger("bridge.sip")
SOURCE = cbuild.CPORT_SOURCE
_SIGNATURE = 0x43425054  # "CBPT": pjmedia only uses it to tell port kinds apart in logs
_READ_MAX = 64  # frames moved per port and drain (the ring's size)
DEFAULT_LEAD = 2


def pjsua_library() -> ctypes.CDLL | None:
    """The loaded ``_pjsua2`` extension as a C library (dlopen returns the handle already in the process)."""
    try:
        path = importlib.import_module("pjsua2._pjsua2").__file__
        return ctypes.CDLL(path) if path else None
    except (ImportError, OSError):
        return None


PJSUA = pjsua_library()


class PjStr(ctypes.Structure):
    """``pj_str_t``: a pointer and a length, no terminating NUL (pj_types.h). The pointer is bytes or an address."""

    _fields_ = (("ptr", ctypes.c_char_p), ("slen", ctypes.c_ssize_t))


class _PjFrame(ctypes.Structure):
    """``pjmedia_frame``: only used by the start-up check."""

    _fields_ = (
        ("type", ctypes.c_int),
        ("buf", ctypes.c_void_p),
        ("size", ctypes.c_size_t),
        ("timestamp", ctypes.c_uint64),
        ("bit_info", ctypes.c_uint64),
    )


def _bind(lib: ctypes.CDLL) -> None:
    p, i, u = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "cbp_abi": (i, []),
        "cbp_frame_bytes": (i, []),
        "cbp_out_frames": (i, []),
        "cbp_init": (i, [i, i, u, i]),
        "cbp_clock_rt_state": (i, []),
        "cbp_rearm": (None, []),
        "cbp_wakes": (ctypes.c_ulonglong, []),
        "cbp_new": (p, [ctypes.c_char_p]),
        "cbp_info_ok": (i, [p]),
        "cbp_attach": (None, [p, i]),
        "cbp_reference": (None, [p, p, p]),
        "cbp_read_in": (i, [p, p, p, i]),
        "cbp_out_need": (i, [p, u]),
        "cbp_poll": (i, [p, u]),
        "cbp_poll_all": (i, [p, i, u, p, p]),
        "cbp_keep": (i, [u]),
        "cbp_poll_onset": (i, []),
        "cbp_pull": (None, [p, p, p]),
        "cbp_fill": (i, [p, u]),
        "cbp_pulled": (ctypes.c_ulonglong, [p]),
        "cbp_write_out": (i, [p, ctypes.c_char_p, i]),
        "cbp_flush_out": (i, [p]),
        "cbp_out_drop_newest": (i, [p, i]),
        "cbp_out_depth": (i, [p]),
        "cbp_counters": (None, [p, ctypes.POINTER(ctypes.c_ulonglong)]),
        "cbp_uplink_template_max": (i, []),
        "cbp_uplink_bind": (i, [p, i, p, p, ctypes.c_char_p, i, ctypes.c_char_p, i]),
        "cbp_uplink_write": (i, [p, ctypes.c_char_p, i]),
        "cbp_uplink_end_data": (None, [p]),
        "cbp_uplink_mirror": (None, [p, i]),
        "cbp_uplink_guard": (None, [p, p, p]),
        "cbp_uplink_tls": (None, [p, p, p]),
        "cbp_uplink_unbind": (i, [p]),
        "cbp_uplink_take": (None, [p, p, i]),
        "cbp_uplink_counters": (None, [p, ctypes.POINTER(ctypes.c_ulonglong), ctypes.POINTER(ctypes.c_double)]),
        "cbp_downlink_bind": (i, [p, i, p, p, ctypes.c_char_p, i]),
        "cbp_downlink_unbind": (i, [p]),
        "cbp_downlink_hold": (i, [p, ctypes.c_uint]),
        "cbp_downlink_tls": (None, [p, p, p, p]),
        "cbp_downlink_counters": (None, [p, ctypes.POINTER(ctypes.c_ulonglong)]),
    }
    for name, (restype, argtypes) in signatures.items():
        func = getattr(lib, name)
        func.restype = restype
        func.argtypes = argtypes
    if PJSUA is None:
        raise OSError("the pjsua2 extension cannot be opened as a C library")
    pjsua: dict[str, tuple[Any, list[Any]]] = {
        "pjmedia_port_info_init": (i, [p, ctypes.POINTER(PjStr), u, u, u, u, u]),
        "pjmedia_port_put_frame": (i, [p, ctypes.POINTER(_PjFrame)]),
        "pjmedia_port_get_frame": (i, [p, ctypes.POINTER(_PjFrame)]),
        "pjsua_pool_create": (p, [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t]),
        "pjsua_conf_add_port": (i, [p, p, ctypes.POINTER(ctypes.c_int)]),
        "pjsua_conf_remove_port": (i, [i]),
        "pjsua_conf_connect": (i, [i, i]),
        "pjsua_conf_disconnect": (i, [i, i]),
    }
    for name, (restype, argtypes) in pjsua.items():
        func = getattr(PJSUA, name)
        func.restype = restype
        func.argtypes = argtypes


def _init_info(port: int) -> None:
    """``pjmedia_port_info_init`` on the port's info: 8 kHz mono PCM16, 20 ms; the name is the C struct's own."""
    assert PJSUA is not None
    name = ctypes.string_at(port + _NAME_OFFSET)  # cb_port.name, right after the pjmedia_port base
    pjname = PjStr(port + _NAME_OFFSET, len(name))
    status = PJSUA.pjmedia_port_info_init(port, ctypes.byref(pjname), _SIGNATURE, SAMPLE_RATE, 1, 16, SAMPLES_PER_FRAME)
    if status != 0:
        raise OSError(f"pjmedia_port_info_init returned {status}")


_NAME_OFFSET = 120  # sizeof(pjmedia_port) in cport.c; cbp_abi() confirms it at load


def new_handle(lib: ctypes.CDLL, name: str) -> int:
    """A new C port with its info initialized by the library itself. Never freed (see ``cport.c``)."""
    handle = lib.cbp_new(name.encode()[:31])
    if not handle:
        raise MemoryError("cbp_new")
    _init_info(handle)
    return int(handle)


def put_frame(handle: int, pcm: bytes, frame_type: int = pj.PJMEDIA_FRAME_TYPE_AUDIO) -> None:
    """What the conference bridge does each tick for a port's listener side: ``pjmedia_port_put_frame``."""
    assert PJSUA is not None
    buf = ctypes.create_string_buffer(pcm, max(len(pcm), 1))
    frame = _PjFrame(frame_type, ctypes.cast(buf, ctypes.c_void_p), len(pcm), 0, 0)
    status = PJSUA.pjmedia_port_put_frame(handle, ctypes.byref(frame))
    if status != 0:
        raise OSError(f"pjmedia_port_put_frame returned {status}")


def get_frame(handle: int) -> tuple[int, bytes]:
    """What the conference bridge does each tick for a port's source side: ``pjmedia_port_get_frame``.
    Returns the frame's type and bytes."""
    assert PJSUA is not None
    buf = ctypes.create_string_buffer(FRAME_BYTES)
    frame = _PjFrame(pj.PJMEDIA_FRAME_TYPE_NONE, ctypes.cast(buf, ctypes.c_void_p), FRAME_BYTES, 0, 0)
    status = PJSUA.pjmedia_port_get_frame(handle, ctypes.byref(frame))
    if status != 0:
        raise OSError(f"pjmedia_port_get_frame returned {status}")
    return int(frame.type), buf.raw[: frame.size]


def _self_test(lib: ctypes.CDLL) -> None:
    """Drive a scratch port through the wheel's own entry points; raise ``OSError`` on any mismatch."""
    if lib.cbp_abi() != _NAME_OFFSET or lib.cbp_frame_bytes() != FRAME_BYTES:
        raise OSError(f"cport.c layout: pjmedia_port is {lib.cbp_abi()} bytes, expected {_NAME_OFFSET}")
    port = new_handle(lib, "cbp-selftest")
    if not lib.cbp_info_ok(port):
        raise OSError("pjmedia_port_info layout differs from cport.c (audio format detail not at offset 36)")
    lib.cbp_attach(port, 1)
    probe = bytes((i * 7) % 256 for i in range(FRAME_BYTES))
    put_frame(port, probe)
    out = ctypes.create_string_buffer(FRAME_BYTES)
    times = (ctypes.c_double * 1)()
    if lib.cbp_read_in(port, out, times, 1) != 1 or out.raw != probe:
        raise OSError("pjmedia_port_put_frame did not reach cport.c's put_frame (pjmedia_port layout differs)")
    reply = probe[::-1]
    lib.cbp_write_out(port, reply, 1)
    if get_frame(port) != (pj.PJMEDIA_FRAME_TYPE_AUDIO, reply):
        raise OSError("pjmedia_port_get_frame did not reach cport.c's get_frame (pjmedia_port layout differs)")
    lib.cbp_attach(port, 0)  # the scratch port is never freed (see cport.c): a few KiB, once per process


@dataclass(frozen=True)
class Availability:
    lib: ctypes.CDLL | None
    why: str  # "" when available


@cache
def native_ports() -> Availability:
    """Build, load and check the native port once per process."""
    try:
        lib = ctypes.CDLL(str(cbuild.library(SOURCE)))
        _bind(lib)
        _self_test(lib)
    except (OSError, subprocess.SubprocessError, AttributeError) as exc:
        return Availability(None, str(exc))
    return Availability(lib, "")


class NativeHub:
    """The loop side for every native port of the process: the eventfd, and the drain that serves them."""

    def __init__(self, lib: ctypes.CDLL, lead: int = DEFAULT_LEAD, clock_priority: int = 0, beat: int = 1) -> None:
        most = int(lib.cbp_out_frames())
        if lead < 1 or beat < 1 or lead + beat - 1 > most:
            raise ValueError(f"need lead >= 1, beat >= 1 and lead + beat - 1 <= {most}, got {lead} and {beat}")
        self._lib = lib
        self.lead = lead
        self.beat = beat
        self.fill = lead + beat - 1  # frames a top-up queues; the clock wakes the loop when fewer than lead remain
        fd = lib.cbp_init(pj.PJMEDIA_FRAME_TYPE_AUDIO, pj.PJMEDIA_FRAME_TYPE_NONE, lead, clock_priority)
        if fd < 0:
            raise OSError(-fd, f"eventfd: {os.strerror(-fd)}")
        self.fd = fd
        self._attached: dict[int, NativePort] = {}
        self._order: tuple[NativePort, ...] = ()  # the attached ports, as cbp_poll_all sees them (_handles)
        self._handles = (ctypes.c_void_p * 0)()
        self._idx = (ctypes.c_int * 0)()  # cbp_poll_all's answer: which of _order to act on, and what it says
        self._ans = (ctypes.c_int * 0)()
        self._in = ctypes.create_string_buffer(_READ_MAX * FRAME_BYTES)
        self._times = (ctypes.c_double * _READ_MAX)()
        self.sink_errors = 0
        self.source_errors = 0
        self.drains = 0
        self.after_drain: Callable[[], object] | None = None  # called after each eventfd drain (the beat)
        self.after_last: Callable[[], object] | None = None  # called when the last port detaches (no more beats)
        self._onset = int(lib.cbp_poll_onset())  # added to cbp_poll's answer: the port's echo guard heard an onset

    def keep(self, hold_s: float) -> bool:
        """Have the keeper thread wake the loop once nothing has for ``hold_s`` while any port is attached, read by
        the clock or not (0: stop it; ``cport.c``, "the keeper"). False if it could not start: the loop then keeps
        its own watch (:meth:`bridge.runtime.metronome.Metronome.kept`)."""
        rc = int(self._lib.cbp_keep(round(hold_s * 1000)))
        if rc < 0:
            _LOG.warning("native media ports: no keeper thread (%s): the loop keeps its own watch", os.strerror(-rc))
        return rc == 0

    @property
    def clock_realtime(self) -> str:
        """Whether pjmedia's clock thread got SCHED_RR: "granted", "not tried" (yet, or not asked), or why not."""
        state = int(self._lib.cbp_clock_rt_state())
        if state == 0:
            return "not tried"
        return "granted" if state == 1 else f"refused: {os.strerror(-state)}"

    @property
    def wakes(self) -> int:
        return int(self._lib.cbp_wakes())

    def new_port(self, name: str, conference: bool = True) -> NativePort:
        """A port for one call at a time; ``conference=False`` keeps it out of pjsua (tests drive it directly)."""
        return NativePort(self, name, conference)

    def _track(self, port: NativePort, on: bool) -> None:
        if on:
            self._attached[port.handle] = port
        elif self._attached.pop(port.handle, None) is None:
            return
        order = self._order = tuple(self._attached.values())  # a drain under way keeps the arrays it was given
        self._handles = (ctypes.c_void_p * len(order))(*(each.handle for each in order))
        self._idx, self._ans = (ctypes.c_int * len(order))(), (ctypes.c_int * len(order))()
        if not on and not order and self.after_last is not None:
            self.after_last()

    def on_readable(self) -> None:
        """``loop.add_reader`` callback. The beat (``after_drain``) only while a port is attached: a wake-up read
        after the last port detached (the clock's or the keeper's, written before) is no driver's beat, and taken
        for one it would leave the metronome waiting for an ``after_last`` that has already come."""
        self._lib.cbp_rearm()
        self.drain()
        if self._order and self.after_drain is not None:
            self.after_drain()

    def drain(self) -> int:
        """Deliver every received frame, then top the outbound rings up. Returns the frames delivered."""
        self.drains += 1
        order, idx, ans = self._order, self._idx, self._ans
        if not order:
            return 0
        # one call for every port: what waits for the loop and what each ring needs; a pulled ring was topped up
        listed = self._lib.cbp_poll_all(self._handles, len(order), self.fill, idx, ans)
        count = 0
        for k in range(listed):
            count += self._act(order[idx[k]], ans[k])
        return count

    def _serve(self, port: NativePort) -> int:
        """One port's look, as the drain's for every port (:meth:`NativePort.attach`: its first frames now)."""
        return self._act(port, self._lib.cbp_poll(port.handle, self.fill))

    def _act(self, port: NativePort, polled: int) -> int:
        """What ``cbp_poll`` said of ``port``: its echo guard's onset, its frames, its ring's top-up."""
        lib = self._lib
        handle = port.handle
        delivered = 0
        if polled >= self._onset:  # the call's echo guard heard the caller's onset over the agent (guard_with)
            polled -= self._onset
            self._heard_onset(port)
        if polled >= 256:  # caller frames to deliver (none while the uplink sends them from the clock thread)
            sink, on_frames = port.sink, port.sink_frames
            while True:
                n = lib.cbp_read_in(handle, self._in, self._times, _READ_MAX)
                if n <= 0:
                    break
                if on_frames is not None:  # the whole read in one call (a BlockSink: the call's leg)
                    try:
                        on_frames(ctypes.string_at(self._in, n * FRAME_BYTES), self._times[:n])
                    except Exception:
                        self._sink_raised(port)
                elif sink is not None:
                    raw, times = ctypes.string_at(self._in, n * FRAME_BYTES), self._times
                    for k in range(n):
                        try:
                            sink(raw[k * FRAME_BYTES : (k + 1) * FRAME_BYTES], times[k])
                        except Exception:
                            self._sink_raised(port)
                delivered += n
                if n < _READ_MAX:
                    break
            self._top_up(port)  # a sink may have queued audio and topped the ring up itself: asked again
        elif not port.pulling:  # pulling: the poll topped the ring up in C
            self._top_up(port, polled)
        return delivered

    def _heard_onset(self, port: NativePort) -> None:
        if port.on_onset is not None:
            try:
                port.on_onset()
            except Exception:
                self._sink_raised(port)

    def _sink_raised(self, port: NativePort) -> None:
        self.sink_errors += 1
        if self.sink_errors <= 10 or self.sink_errors % 1000 == 0:
            _LOG.exception("%s: on_frame sink raised (%d so far)", port.name, self.sink_errors)

    def _top_up(self, port: NativePort, need: int | None = None) -> None:
        if port.pulling:  # the ring's frames go to the port in C: the poll added them, or this fill does
            if need is None:
                self._lib.cbp_fill(port.handle, self.fill)
            return
        source = port.source
        if source is not None:
            if port.skipped is not None:
                port.tell_skipped()
            if need is None:
                need = self._lib.cbp_out_need(port.handle, self.fill)
            if need > 0:
                pop_frames: Callable[[int], bytes] | None = getattr(source, "pop_frames", None)
                if pop_frames is not None:  # a beat's frames in one call (the playout buffers and their taps)
                    self._write_block(port, pop_frames, need)
                    return
                pop = source.pop_frame
                try:
                    frames = [pop() for _ in range(need)]
                except Exception:
                    self.source_errors += 1
                    if self.source_errors <= 10 or self.source_errors % 1000 == 0:
                        _LOG.exception("%s: frame source raised (%d so far)", port.name, self.source_errors)
                else:
                    chunk = b"".join(frames)
                    # a short or long frame among them: each one fitted (with the total right, no frame longer
                    # than one means none is shorter either)
                    if len(chunk) != need * FRAME_BYTES or max(map(len, frames)) != FRAME_BYTES:
                        chunk = b"".join(map(exact_frame, frames))
                    self._lib.cbp_write_out(port.handle, chunk, need)

    def _write_block(self, port: NativePort, pop_frames: Callable[[int], bytes], need: int) -> None:
        try:
            block = pop_frames(need)
        except Exception:
            self.source_errors += 1
            if self.source_errors <= 10 or self.source_errors % 1000 == 0:
                _LOG.exception("%s: frame source raised (%d so far)", port.name, self.source_errors)
            return
        if len(block) != need * FRAME_BYTES:
            block = block[: need * FRAME_BYTES].ljust(need * FRAME_BYTES, b"\0")
        self._lib.cbp_write_out(port.handle, block, need)


def _watch(source: FrameSource | None, hook: Callable[[], object] | None) -> None:
    """Give the wrappers in ``source`` the port's hook (``watch``: ``bridge.call.leg.TeeSource``), or take it back."""
    watch: Callable[[Callable[[], object] | None], object] | None = getattr(source, "watch", None)
    if watch is not None:
        watch(hook)


class NativePort:
    """One call's media port, in C. Same surface as :class:`bridge.sip.media.BridgePort` (pooled, attached to a
    call and detached after it), plus :attr:`slot` in pjsua's conference bridge."""

    def __init__(self, hub: NativeHub, name: str, conference: bool = True) -> None:
        lib = hub._lib
        handle = new_handle(lib, name)
        slot = ctypes.c_int(-1)
        if conference:
            assert PJSUA is not None
            # One pool per port, for the conference bridge's bookkeeping; like the port, it lives as long as
            # the process.
            pool = PJSUA.pjsua_pool_create(name.encode(), 1024, 1024)
            if not pool:
                raise MemoryError("pjsua_pool_create")
            status = PJSUA.pjsua_conf_add_port(pool, handle, ctypes.byref(slot))
            if status != 0:
                raise OSError(f"pjsua_conf_add_port returned {status}")
        self._hub = hub
        self._lib = lib
        self.handle = handle
        self.name = name
        self.slot = slot.value
        self.source: FrameSource | None = None
        self.sink: FrameSink | None = None
        self.sink_frames: OnFrames | None = None  # its block form (BlockSink)
        self._counters = (ctypes.c_ulonglong * 8)()
        # a source that keeps a frame-exact account of what was sent (the echo guard's reference) is told of the
        # silence this port sent on its own when its ring ran dry (``late_out``): ``skipped(frames)``
        self.skipped: Callable[[int], object] | None = None
        self._late_told = 0
        self.pulling = False  # the top-up takes the source's C ring in C (reroute)
        self.calls = 0  # detaches so far: an uplink made for an earlier call leaves the port alone (NativeUplink)
        self.on_onset: Callable[[], object] | None = None  # the call's echo guard heard the caller's onset (C)

    def attach(self, source: FrameSource | None, sink: FrameSink | None) -> None:
        _watch(self.source, None)
        self._reference(self.source, False)
        self.source = source
        self.sink = sink
        self.sink_frames = getattr(sink, "on_frames", None)
        fed_here = self._reference(source, True)  # the C guard's reference fed by get_frame: nothing to tell it
        self.skipped = None if fed_here else getattr(source, "skipped", None)
        self._late_told = self.counters().late_out
        self._lib.cbp_attach(self.handle, 1)
        downstream = getattr(source, "set_downstream", None)
        if downstream is not None:  # a PlayoutBuffer: a barge-in flushes this ring too (see its module doc)
            downstream(self)
        _watch(source, self.reroute)  # the wrappers on the way say when they start or stop needing the frames
        self.reroute()
        self._hub._track(self, True)
        self._hub._serve(self)  # the first frames are queued now, not a tick later

    def tell_skipped(self) -> None:
        """The ring ran dry since the last look: every frame taken from the source had been sent, then the caller
        got ``late_out`` frames of silence nobody took from it. Told before the next top-up, in stream order."""
        late = self.counters().late_out
        if late > self._late_told and self.skipped is not None:
            self.skipped(late - self._late_told)
        self._late_told = late

    def _reference(self, source: FrameSource | None, on: bool) -> bool:
        """Hand ``source``'s C echo guard (its ``c_reference``) each frame sent from here on (``on``), or stop;
        True if the port feeds it."""
        take: Callable[[bool], tuple[int, int] | None] | None = getattr(source, "c_reference", None)
        hook = take(on) if take is not None else None
        if on:
            fn, guard = hook if hook is not None else (None, None)
            self._lib.cbp_reference(self.handle, fn, guard)  # before the port is attached: the first frame is fed
        return hook is not None

    def reference_to(self, guard: Guard) -> bool:
        """Hand ``guard`` each frame this port sends from now on (its ``c_played``: the C guard's reference, as a
        call's playout feeds it), until the next attach; False if the guard cannot be fed here (not the C one)."""
        hook = guard.c_played()
        if hook is None or not self.attached:
            return False
        self._lib.cbp_reference(self.handle, *hook)
        return True

    def reroute(self) -> None:
        """Take the frames from the source's C ring in C where nothing on the way needs them (its ``c_ring``: the
        ring's ``cbq_pop`` and handle, None while a wrapper takes the frames), else through Python: called on
        attach and whenever a wrapper's need changes (``watch``). See ``cport.c``, "Pull"."""
        ring: Callable[[], tuple[int, int] | None] | None = getattr(self.source, "c_ring", None)
        hook = ring() if ring is not None and self.source is not None else None
        fn, handle = hook if hook is not None else (None, None)
        self._lib.cbp_pull(self.handle, fn, handle)
        self.pulling = hook is not None

    @property
    def pulled(self) -> int:
        """Frames the top-up took from C rings in C so far (``reroute``)."""
        return int(self._lib.cbp_pulled(self.handle))

    def detach(self) -> None:
        self.calls += 1  # C unbinds the uplink too: the call's NativeUplink is stale from here
        self.skipped = None
        self.on_onset = None
        _watch(self.source, None)
        downstream = getattr(self.source, "set_downstream", None)
        if downstream is not None:
            downstream(None)
        self.pulling = False
        self._lib.cbp_attach(self.handle, 0)  # the reference hook and the pulled ring are cleared: both may go
        self._reference(self.source, False)
        self._hub._track(self, False)
        self.source = None
        self.sink = None
        self.sink_frames = None

    @property
    def attached(self) -> bool:
        return self.sink is not None or self.source is not None

    def uplink(self, upsampler: StreamKernel) -> NativeUplink:
        """An uplink offload for the call now attached (see :class:`NativeUplink`)."""
        return NativeUplink(self, upsampler)

    def downlink(self, downsampler: StreamKernel) -> NativeDownlink:
        """The duplex floor's downlink for the call now attached (see :class:`NativeDownlink`)."""
        return NativeDownlink(self, downsampler)

    def flush_out(self) -> int:
        """Drop the frames queued for the caller; returns how many (they were taken from the source but never
        sent)."""
        return int(self._lib.cbp_flush_out(self.handle))

    def drop_newest(self, frames: int) -> int:
        """Take back up to ``frames`` of the newest frames queued for the caller; returns how many."""
        return int(self._lib.cbp_out_drop_newest(self.handle, frames))

    def top_up(self) -> None:
        """Queue frames from the source now, up to the beat's fill (the loop thread: as the drain does)."""
        if self.source is not None:
            self._hub._top_up(self)

    def depth(self) -> int:
        """Frames queued for the caller now."""
        return int(self._lib.cbp_out_depth(self.handle))

    def connect(self, audio_media: Any) -> None:
        """Call audio -> port and port -> call audio, by conference slot."""
        assert PJSUA is not None
        call_slot = int(audio_media.getPortId())
        for src, dst in ((call_slot, self.slot), (self.slot, call_slot)):
            status = PJSUA.pjsua_conf_connect(src, dst)
            if status != 0:
                raise pj.Error(status, "pjsua_conf_connect", f"slot {src} -> {dst}", "", 0)

    def route(self, audio_media: Any, *, send: bool, receive: bool) -> None:
        """This port -> the call's audio (``send``: the call hears the port) and the call's audio -> this port
        (``receive``: the port hears the call), each connected or disconnected (one not connected: no-op)."""
        assert PJSUA is not None
        call_slot = int(audio_media.getPortId())
        for (src, dst), on in (((self.slot, call_slot), send), ((call_slot, self.slot), receive)):
            if on:
                status = PJSUA.pjsua_conf_connect(src, dst)
                if status != 0:
                    raise pj.Error(status, "pjsua_conf_connect", f"slot {src} -> {dst}", "", 0)
            else:
                PJSUA.pjsua_conf_disconnect(src, dst)  # PJ_ENOTFOUND when it was not connected: nothing to undo

    def remove(self) -> None:
        """Shutdown: take the port out of the conference bridge (before ``libDestroy``)."""
        self.detach()
        if self.slot >= 0 and PJSUA is not None:
            PJSUA.pjsua_conf_remove_port(self.slot)
            self.slot = -1

    def _read(self) -> tuple[int, ...]:
        self._lib.cbp_counters(self.handle, self._counters)
        return tuple(self._counters)

    def counters(self) -> PortCounters:
        """One read of the C port's counters (``errors``: the loop did not drain for more than a ring, 1.28 s)."""
        read = self._read()
        return PortCounters(read[0], read[1], read[2], read[3], read[4], clock_gaps=read[6])

    @property
    def max_gap_us(self) -> int:
        """The longest time between two of pjmedia's clock requests so far (µs)."""
        return self._read()[7]


class NativeUplink:
    """The caller's audio from pjmedia's clock thread straight to the Realtime socket (``cport.c``, "Uplink").

    Made for one call by :meth:`NativePort.uplink`, with the call's upsampler (its C kernel and filter state, see
    :meth:`bridge.audio.resample.Upsampler.c_kernel`): bound, the clock thread carries that stream on; unbound,
    the session's own :meth:`~bridge.audio.resample.Upsampler.process` does, from the same state. The JSON text
    around each frame's base64 is the call's dialect's append (:meth:`set_append`, before :meth:`bind`: the
    Realtime client hands it over from its dialect)."""

    def __init__(self, port: NativePort, upsampler: StreamKernel) -> None:
        self._port = port
        self._lib = port._lib
        self._handle = port.handle
        self._call = port.calls  # the port's call this uplink is for: once it is detached, the port is another's
        self._upsampler = upsampler  # owns the filter state C writes to: kept alive as long as this is
        self._counts = (ctypes.c_ulonglong * 5)()
        self._times = (ctypes.c_double * 2)()
        self._template: tuple[bytes, bytes] | None = None  # the append's text around the base64 (set_append)
        self._guard: tuple[Guard, tuple[int, int]] | None = None  # the call's echo guard and its C hook (guard_with)
        self.bound = False
        counts = self._read()  # the port's counters are cumulative over the calls it carried: this call's from here
        self._base_sent, self._base_dropped = counts[0], counts[1]

    def set_append(self, template: AppendTemplate) -> bool:
        """Frame the caller's audio as ``template`` from the next :meth:`bind` on. False if it does not fit
        ``cport.c``'s buffer (the template is then not taken)."""
        prefix, suffix = template.prefix.encode(), template.suffix.encode()
        if not prefix or max(len(prefix), len(suffix)) > self._lib.cbp_uplink_template_max():
            return False
        self._template = (prefix, suffix)
        return True

    def guard_with(
        self,
        guard: Guard,
        temper: bool,
        onset: tuple[int, float] | None = None,
        on_onset: Callable[[], object] | None = None,
    ) -> bool:
        """From the next :meth:`bind` on, each caller frame is heard by the call's echo guard on the clock thread
        before it is sent (and tempered, if ``temper``); the caller's onset over the agent by ``onset``'s rule
        (``cbe_set_onset``) calls ``on_onset`` on the loop at its next drain, woken for it. False if the guard
        cannot run there (not the C one)."""
        hook = guard.c_uplink(temper, onset if on_onset is not None else None)
        if hook is None:
            return False
        self._guard = (guard, hook)  # kept alive while this uplink may be bound
        if not self.stale:
            self._port.on_onset = on_onset
        return True

    def bind(self, fd: int, seal: tuple[int, int] | None = None) -> bool:
        """Send from the clock thread to ``fd``; False without an append template, or without the C kernel.
        ``seal``: the socket carries TLS; each write is sealed by ``cbt_seal`` (tls.c, its address first) with the
        connection's engine (its address second), which the caller keeps alive until :meth:`unbind`."""
        kernel = self._upsampler.c_kernel()
        if self.stale or not self._port.attached or kernel is None or self._template is None:
            return False
        fn, state = kernel
        prefix, suffix = self._template
        guard_fn, guard = self._guard[1] if self._guard is not None else (None, None)
        self._lib.cbp_uplink_guard(self._handle, guard_fn, guard)
        seal_fn, engine = seal if seal is not None else (None, None)
        self._lib.cbp_uplink_tls(self._handle, seal_fn, engine)
        status = self._lib.cbp_uplink_bind(self._handle, fd, fn, state, prefix, len(prefix), suffix, len(suffix))
        self.bound = status == 0
        return self.bound

    @property
    def stale(self) -> bool:
        """The port was detached since this uplink was made: C unbound it then, and the port may carry the next
        call's uplink to that call's socket now. A stale uplink never touches the port: its session's late writes
        (a close frame) must reach its own socket, not the next call's."""
        return self._port.calls != self._call

    def write(self, data: bytes) -> int:
        """0 sent (or queued behind the backlog), -2 not bound (the session writes it itself), else failed."""
        if self.stale:
            return -2
        return int(self._lib.cbp_uplink_write(self._handle, data, len(data)))

    def end_data(self) -> None:
        if not self.stale:
            self._lib.cbp_uplink_end_data(self._handle)

    def mirror(self, on: bool) -> None:
        """While on, each frame sent from the clock thread also comes to the port's sink, with its capture time
        negated: a copy to observe (listen-in, :mod:`bridge.call.tap`), never to send again. Detaching the port
        turns it off."""
        if not self.stale:
            self._lib.cbp_uplink_mirror(self._handle, 1 if on else 0)

    def unbind(self) -> bytes:
        self.bound = False
        if self.stale:  # unbound by the detach, and what it held was dropped with it
            return b""
        left = int(self._lib.cbp_uplink_unbind(self._handle))
        if left <= 0:
            return b""
        buf = ctypes.create_string_buffer(left)
        self._lib.cbp_uplink_take(self._handle, buf, left)
        return buf.raw

    def _read(self) -> tuple[int, ...]:
        self._lib.cbp_uplink_counters(self._handle, self._counts, self._times)
        return tuple(self._counts)

    @property
    def frames_sent(self) -> int:
        return self._read()[0] - self._base_sent

    @property
    def frames_dropped(self) -> int:
        """Frames not sent: the socket did not take the backlog (about 3 s), or the session was closing."""
        return self._read()[1] - self._base_dropped

    def last_latency_s(self) -> tuple[float, float]:
        if self._read()[0] == self._base_sent:
            return 0.0, 0.0  # nothing sent for this call yet: the times are an earlier call's
        return float(self._times[0]), float(self._times[1])


@dataclass(frozen=True)
class DownlinkCounters:
    """What a :class:`NativeDownlink` did since it was made: deltas played, frames given to the clock, underruns
    (frames short of audio after the first delta), samples dropped on a full ring, bad deltas, and the errno the
    socket was given up on (0: it was not)."""

    deltas: int
    frames: int
    underruns: int
    dropped: int
    bad: int
    errno: int


class NativeDownlink:
    """The model's audio from its socket straight to the caller on pjmedia's clock thread (``cport.c``,
    "Downlink"): the C floor ``bench calls --ceiling duplex`` measures. A worker's downlink runs in its loop
    (the Realtime socket's reader, the playout buffer, :class:`NativeHub`'s top-up); this is what the same work
    costs with no Python per delta or frame.

    Made for one call by :meth:`NativePort.downlink`, with the call's downsampler (its C kernel and filter state,
    see :meth:`bridge.audio.resample.Downsampler.c_kernel`), kept alive while bound."""

    def __init__(self, port: NativePort, downsampler: StreamKernel) -> None:
        self._port = port
        self._lib = port._lib
        self._handle = port.handle
        self._downsampler = downsampler
        self._counts = (ctypes.c_ulonglong * 6)()
        self._base = self._read()  # the port's counters are cumulative over its calls: this call's from here

    def bind(self, fd: int, event_type: str, hold_s: float = 0.0, tls: tuple[int, int, int] | None = None) -> bool:
        """Play what ``fd`` carries: each WebSocket text frame whose ``type`` is ``event_type`` (the dialect's
        audio delta) has its ``delta`` played, up to ``hold_s`` seconds of it held ahead (at least 2 s; beyond,
        dropped). ``tls``: the socket carries TLS, opened on the clock thread by ``cbt_feed`` and ``cbt_read``
        (tls.c, their addresses first) with the connection's engine (its address last), which the caller keeps
        alive until :meth:`unbind`. False without the C kernel or an attached port, or with no memory for the ring."""
        kernel = self._downsampler.c_kernel()
        if not self._port.attached or kernel is None:
            return False
        if hold_s > 0 and self._lib.cbp_downlink_hold(self._handle, round(hold_s * SAMPLE_RATE)) != 0:
            return False
        self._lib.cbp_downlink_tls(self._handle, *(tls or (None, None, None)))
        kind = event_type.encode()
        return int(self._lib.cbp_downlink_bind(self._handle, fd, kernel[0], kernel[1], kind, len(kind))) == 0

    def unbind(self) -> None:
        self._lib.cbp_downlink_unbind(self._handle)

    def _read(self) -> tuple[int, ...]:
        self._lib.cbp_downlink_counters(self._handle, self._counts)
        return tuple(self._counts)

    def counters(self) -> DownlinkCounters:
        now, base = self._read(), self._base
        deltas, frames, underruns, dropped, bad = (now[k] - base[k] for k in range(5))
        return DownlinkCounters(deltas, frames, underruns, dropped, bad, now[5])
