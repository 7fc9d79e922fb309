"""The telephone leg as the call session sees it.

``bridge/sip`` implements it over pjsua2 (``IncomingCall``); replays implement it with no SIP at all. The session
never sees a pjsua2 type.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from bridge import events as ev
from bridge.audio.frames import FRAME_BYTES, FrameSink, FrameSource, StreamKernel


def pop_block(source: FrameSource, frames: int) -> bytes:
    """``frames`` frames from ``source`` in one block: one call where it takes blocks (``pop_frames``: the playout
    buffers and every wrapper here), else frame by frame."""
    pop_frames: Callable[[int], bytes] | None = getattr(source, "pop_frames", None)
    if pop_frames is not None:
        return pop_frames(frames)
    pop = source.pop_frame
    return b"".join([pop() for _ in range(frames)])


def inner_ring(source: FrameSource) -> tuple[int, int] | None:
    """``source``'s C ring for the native port to pull in C (``c_ring``: ``bridge.sip.cport.NativePort.reroute``),
    None if it has none or something in it needs the frames now."""
    ring: Callable[[], tuple[int, int] | None] | None = getattr(source, "c_ring", None)
    return ring() if ring is not None else None


def watch_inner(source: FrameSource, hook: Callable[[], object] | None) -> None:
    """Hand the port's ``hook`` (None: forget it) on to the wrappers inside ``source`` (``watch``)."""
    watch: Callable[[Callable[[], object] | None], object] | None = getattr(source, "watch", None)
    if watch is not None:
        watch(hook)


def split(block: bytes) -> list[bytes]:
    """A block of frames as its frames."""
    return [block[at : at + FRAME_BYTES] for at in range(0, len(block), FRAME_BYTES)]


class SourceWrapper:
    """A wrapper around the outbound source on its way to the media port: the port's hook for a change of route
    (``watch``, :meth:`rerouted`), and every attribute it does not define the wrapped source's own."""

    def __init__(self, source: FrameSource) -> None:
        self._source = source
        self._watch: Callable[[], object] | None = None

    def watch(self, hook: Callable[[], object] | None) -> None:
        """The native port's hook, called when the frames are needed here or no longer (None: forget it)."""
        self._watch = hook
        watch_inner(self._source, hook)

    def rerouted(self) -> None:
        """Whether the frames are needed here changed: the port that watches looks again."""
        if self._watch is not None:
            self._watch()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)


class TeeSource(SourceWrapper):
    """The bridge's outbound audio as the media port sees it, with every frame it takes also handed to ``keep``
    (a recording, a listener). ``pop_frame`` runs on the media clock thread, so ``keep`` must only copy or append.
    The native port takes a beat's frames at once (``pop_frames``): they go to ``keep_block`` in one call where one
    is given (else to ``keep`` one by one). Every other attribute is the source's own: the native port looks up
    ``set_downstream`` on it, so that a barge-in still flushes the frames queued in C (``bridge/sip/cport.py``).
    A subclass that changes what ``pop_frame`` gives changes ``pop_frames`` too (else the attribute lookup would
    reach the source's own), and ``c_ring`` too.

    The native port pulls the frames of a C playout ring in C while nothing on the way needs them: it asks the
    outermost source for ``c_ring`` when it attaches and whenever a wrapper's need changes (``watch`` gives each
    wrapper the port's hook, :meth:`rerouted` calls it). A tee keeps every frame, so it gives no ring, unless
    ``idle`` says it keeps nothing now (listen-in while nobody listens): the caller of :meth:`rerouted` must call it
    whenever ``idle``'s answer changes."""

    def __init__(
        self,
        source: FrameSource,
        keep: Callable[[bytes], object],
        keep_block: Callable[[bytes], object] | None = None,
        idle: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(source)
        self._keep = keep
        self._keep_block = keep_block
        self._idle = idle

    def pop_frame(self) -> bytes:
        frame = self._source.pop_frame()
        self._keep(frame)
        return frame

    def pop_frames(self, frames: int) -> bytes:
        block = pop_block(self._source, frames)
        self._tee_block(block)
        return block

    def _tee_block(self, block: bytes) -> None:
        if self._keep_block is not None:
            self._keep_block(block)
        else:
            for frame in split(block):
                self._keep(frame)

    def c_ring(self) -> tuple[int, int] | None:
        """The source's C ring while nothing is kept here (``idle``), else None (see the class doc)."""
        return inner_ring(self._source) if self._idle is not None and self._idle() else None


class UplinkOffload(Protocol):
    """The caller's audio sent to the model without the event loop (``bridge/native/cport.c``, "Uplink"): each frame
    is upsampled, encoded and written to the Realtime socket on the media clock thread. While a socket is bound,
    the Realtime client writes its own frames through :meth:`write`, so the socket sees one ordered stream."""

    def bind(self, fd: int, seal: tuple[int, int] | None = None) -> bool:
        """Start sending the caller's frames to ``fd``; False if this offload cannot. ``seal``: the socket carries
        TLS, and every write is sealed by this C function (``cbt_seal``) with this engine first (addresses)."""
        ...

    def write(self, data: bytes) -> int:
        """One of the connection's own frames, in order: 0 sent or pending, -1 the socket failed, -2 not bound."""
        ...

    def end_data(self) -> None:
        """A close frame follows: no more audio."""
        ...

    def unbind(self) -> bytes:
        """Stop; the bytes the kernel has not taken yet, for the caller to write first."""
        ...

    @property
    def frames_sent(self) -> int: ...

    @property
    def frames_dropped(self) -> int:
        """Frames not sent: the socket did not take the backlog, or no session was there to take them."""
        ...

    def last_latency_s(self) -> tuple[float, float]:
        """The last frame sent: clock callback to the socket write, and the write itself."""
        ...


class PhoneLeg(Protocol):
    call_id: str
    caller: str
    called: str
    events: asyncio.Queue[ev.Event]  # Dtmf, TransferProgress, CallerHungUp
    disconnected: asyncio.Event

    def ringing(self) -> None: ...
    def answer(self) -> None: ...
    def reject(self, code: int, reason: str | None = None, retry_after: int | None = None) -> None: ...
    def hangup(self, reason: str | None = None) -> None:
        """End the call; ``reason``: a ``Reason`` header (RFC 3326) for the BYE, where the leg can send one."""
        ...

    def transfer(self, uri: str) -> None: ...
    def send_dtmf(self, digits: str) -> None: ...
    def start_media(self, outbound: FrameSource, on_frame: FrameSink) -> None: ...
    def uplink_offload(self, upsampler: StreamKernel) -> UplinkOffload | None:
        """After :meth:`start_media`: an offload for the caller's audio that carries ``upsampler``'s stream on
        (and keeps it alive while it does), or None where the leg has none."""
        ...


class HumanLeg(Protocol):
    """A warm transfer's second leg (``bridge/sip/outbound.py``): the worker's own call to the human."""

    events: asyncio.Queue[ev.Event]  # HumanLegChanged (ringing, answered, ended), Dtmf
    ended: asyncio.Event

    def hangup(self) -> None: ...
    def hear_agent(self, on: bool) -> None:
        """The human hears the session's voice (the briefing), or no longer."""
        ...

    def join(self) -> None:
        """Caller and human hear each other directly; the hold ends; the session is out of both calls."""
        ...


@runtime_checkable
class Holder(Protocol):
    """A leg that can put the caller on hold (a SIP leg: pjsua2's file player in the conference bridge)."""

    def hold(self, wav: str) -> None:
        """The caller hears ``wav`` in a loop; the session neither hears the caller nor is heard by them."""
        ...

    def unhold(self) -> None:
        """The hold ends: the session and the caller hear each other again."""
        ...


@runtime_checkable
class Dialer(Holder, Protocol):
    """A leg that can place a second call from its own endpoint (a SIP leg; replays cannot)."""

    def dial(self, uri: str) -> HumanLeg: ...


def _inner(leg: PhoneLeg) -> object:
    inner: object = leg
    while isinstance(inner, LegProxy):
        inner = inner.leg
    return inner


def dialer(leg: PhoneLeg) -> Dialer | None:
    """The leg under any proxies, if it can dial a second leg."""
    inner = _inner(leg)
    return inner if isinstance(inner, Dialer) else None


def holder(leg: PhoneLeg) -> Holder | None:
    """The leg under any proxies, if it can put the caller on hold."""
    inner = _inner(leg)
    return inner if isinstance(inner, Holder) else None


class LegProxy:
    """A :class:`PhoneLeg` around another that passes everything through; a recording or a listen tap overrides
    what it watches. The leg's attributes are the wrapped leg's (the queue and the event are the same objects)."""

    def __init__(self, leg: PhoneLeg) -> None:
        self.leg = leg
        self.call_id: str = leg.call_id
        self.caller: str = leg.caller
        self.called: str = leg.called
        self.events: asyncio.Queue[ev.Event] = leg.events
        self.disconnected: asyncio.Event = leg.disconnected

    def ringing(self) -> None:
        self.leg.ringing()

    def answer(self) -> None:
        self.leg.answer()

    def reject(self, code: int, reason: str | None = None, retry_after: int | None = None) -> None:
        self.leg.reject(code, reason, retry_after)

    def hangup(self, reason: str | None = None) -> None:
        self.leg.hangup(reason)

    def transfer(self, uri: str) -> None:
        self.leg.transfer(uri)

    def send_dtmf(self, digits: str) -> None:
        self.leg.send_dtmf(digits)

    def start_media(self, outbound: FrameSource, on_frame: FrameSink) -> None:
        self.leg.start_media(outbound, on_frame)

    def uplink_offload(self, upsampler: StreamKernel) -> UplinkOffload | None:
        return self.leg.uplink_offload(upsampler)
