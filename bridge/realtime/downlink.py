"""The downlink in C: the model's audio deltas from the Realtime socket's bytes to 8 kHz PCM without Python per delta.

A worker reads its Realtime socket once per media beat (:mod:`bridge.realtime.ws_fastpath`). Without this module each
audio delta then costs Python a WebSocket frame parsed by ``websockets``, its JSON and base64 decoded, the
downsampler called and an event made. With it (the ``native_downlink`` setting, on by default, :func:`configure`),
the plain bytes of each read (after TLS, on the native engine) go to :class:`DownlinkScanner` in one call, which
hands back the read as pieces, in stream order:

* ``bytes``: raw WebSocket frames that are not audio (control events, transcripts, pings, the close, fragments, frames
  too long to hold, and audio frames that do not decode, which the dialect's own decoder turns into the error event it
  always did), and every frame C is not sure it reads as orjson does (any byte it does not validate, an escaped key,
  a duplicate of a key it reads: see docs/media.md, "What C takes"), fed to ``websockets``' protocol exactly as
  before;
* :class:`AudioRun`: consecutive audio deltas of one item, base64-decoded and converted in C (``bridge/native/
  downlink.c``: the call's 24 → 8 kHz kernel on the call's own filter state, or the G.711 table of a passthrough
  session) into 8 kHz PCM16, which the client hands on as one :class:`~bridge.events.AudioChunk` with ``decoded``
  set: the call's playout takes it as it is (:meth:`bridge.call.playback.Playback.push`);
* nothing, for a run of the item the sink is armed for (:meth:`DownlinkScanner.sink`): once the call has taken an
  item's first chunk into its C playout ring, C pushes the item's later runs into that ring itself, in the same
  call, with no Python per read (``downlink.c``, "The sink"). Their deltas and last event id reach ``on_sunk``
  with the next piece handed over, or when asked (:meth:`DownlinkScanner.settle`).

Everything downstream is the same playout buffer, so barge-in truncation, the echo guard's reference, the recording,
the taps, underruns and hold audio see what they always saw. The event names are the dialect's (``server_events``
entries whose canonical name is ``audio.delta``); the scanner follows the stream from its first byte (the handshake's
HTTP answer, then frames), so it can start decoding at any moment, at a frame boundary. It stays off where the socket's
bytes are not the bridge's own (asyncio's TLS, ``websockets``' own client), where permessage-deflate was negotiated,
and where the call's converter has no C form (Live's 16 kHz PCM: that downsampler has no C kernel).
"""

from __future__ import annotations

import ctypes
import enum
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.audio import AudioConverter
from bridge.audio.passthrough import PassthroughDownlink
from bridge.audio.playout_native import CSink
from bridge.audio.resample import Downsampler, native_kernels
from bridge.native.build import LoadOnce

log = logging.getLogger("bridge.realtime")

_P, _I, _SZ = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
_SIGNATURES: tuple[tuple[str, Any, list[Any]], ...] = (
    ("cbd_new", _P, []),
    ("cbd_free", None, [_P]),
    ("cbd_frames_only", None, [_P]),
    ("cbd_types", _I, [_P, ctypes.c_char_p, _I, ctypes.c_char_p, _I]),
    ("cbd_audio", _I, [_P, _I, _P, _P, _P, _P, _I]),
    ("cbd_feed", _I, [_P, ctypes.c_char_p, _SZ]),
    ("cbd_next", _I, [_P, _P]),
    ("cbd_counters", None, [_P, _P]),
    ("cbd_sink", _I, [_P, _P, _P, _I, ctypes.c_char_p, _I]),
    ("cbd_sunk", None, [_P, _P]),
    # the reader of every call's socket (bridge/realtime/readset.py)
    ("cbd_set_new", _P, []),
    ("cbd_set_free", None, [_P]),
    ("cbd_set_tls", None, [_P, _P, _P, _P]),
    ("cbd_set_add", _I, [_P, _I, _P, _P]),
    ("cbd_set_remove", None, [_P, _I]),
    ("cbd_set_heard", ctypes.c_double, [_P, _I]),
    ("cbd_set_read", _I, [_P, _P, _I, _P]),
)
COUNTERS = (
    *("frames", "deltas", "runs", "passed_bytes", "bad", "held_bytes", "state"),
    *("sunk_runs", "sunk_deltas", "sunk_bytes"),  # runs the sink pushed into its ring (counted in runs too)
)
OnSunk = Callable[[int, str | None], None]  # (deltas, the last one's event id): audio the sink took
AUDIO_DELTA = "audio.delta"  # the canonical name (bridge.realtime.dialects) of the events decoded here
# Events that commute with the model's audio: text that no audio waits for. One that comes in the middle of a run of
# deltas is handed on right after the run, so a read's audio stays one chunk (the service interleaves them).
COMMUTING = frozenset({"audio_transcript.delta"})


class Mode(enum.IntEnum):
    """How the C side converts a delta (``downlink.c``)."""

    OFF = 0
    KERNEL = 1  # PCM16 24 kHz through the call's downsampler kernel
    TABLE = 2  # G.711 codes through their decoding table


class _Kind(enum.IntEnum):
    NONE = 0
    PASS = 1
    AUDIO = 2
    SUNK = 3  # a run went into the sink's ring, which was empty


class _Piece(ctypes.Structure):
    _fields_ = (
        ("ptr", _P),
        ("len", _SZ),
        ("item", _P),
        ("response", _P),
        ("event", _P),
        ("item_len", _SZ),
        ("response_len", _SZ),
        ("event_len", _SZ),
        ("deltas", ctypes.c_uint64),
        ("sunk", ctypes.c_uint64),
        ("sunk_event", _P),
        ("sunk_event_len", _SZ),
    )


@dataclass(frozen=True, slots=True)
class AudioRun:
    """Consecutive audio deltas of one item (and response), decoded: 8 kHz PCM16. ``event_id``: the last one's."""

    item_id: str
    response_id: str
    pcm: bytes
    deltas: int
    event_id: str | None


_enabled = True


def configure(on: bool) -> None:
    """The ``native_downlink`` setting of this process (a worker sets it at start)."""
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled


def load() -> ctypes.CDLL | None:
    """Build and load ``downlink.c`` once per process; None if it cannot be (:func:`problem` says why)."""
    return _LIB.get()


def problem() -> str | None:
    return _LIB.problem()


def _load() -> tuple[ctypes.CDLL | None, str | None]:
    from bridge.native import build

    try:
        lib = build.load(build.DOWNLINK_SOURCE, _SIGNATURES)
    except (OSError, AttributeError) as exc:
        log.warning("native downlink unavailable: %s", exc)
        return None, str(exc)
    return lib, None


def audio_types(server_events: dict[str, str] | Any) -> tuple[str, ...]:
    """The wire names a dialect's audio deltas come under (its ``server_events`` mapping to ``audio.delta``)."""
    return tuple(wire for wire, canonical in server_events.items() if canonical == AUDIO_DELTA)


def commuting_types(server_events: dict[str, str] | Any) -> tuple[str, ...]:
    """The wire names of the events a run of audio may carry past (:data:`COMMUTING`): its transcript's deltas."""
    return tuple(wire for wire, canonical in server_events.items() if canonical in COMMUTING)


def c_form(converter: AudioConverter) -> tuple[Mode, int, int, int, bytes | None] | None:
    """How C runs ``converter``: (mode, kernel, reset, state, table); None if it cannot (no C kernel)."""
    if isinstance(converter, PassthroughDownlink):
        return Mode.TABLE, 0, 0, 0, converter.c_table()
    if isinstance(converter, Downsampler):
        kernel = converter.c_kernel()
        lib = native_kernels().lib
        if kernel is None or lib is None:
            return None
        reset = ctypes.cast(lib.cbr_down_reset, ctypes.c_void_p).value
        return (Mode.KERNEL, kernel[0], reset, kernel[1], None) if reset else None
    return None


def _text(ptr: int, length: int) -> str:
    """An id of a run: C takes only ids that are valid UTF-8 (the frame's JSON validated), so nothing is replaced in
    practice; should C let one through, the scan goes on and never raises into the loop."""
    return ctypes.string_at(ptr, length).decode("utf-8", "replace") if length else ""


class DownlinkScanner:
    """One Realtime socket's scanner (see the module doc). Only the event loop calls it."""

    def __init__(self, lib: ctypes.CDLL, types: Sequence[str], later: Sequence[str] = ()) -> None:
        """``types``: the audio deltas' wire names; ``later``: events a run may carry past (:func:`commuting_types`)."""
        self._lib = lib
        self._handle: int | None = lib.cbd_new()
        if not self._handle:
            raise MemoryError("cbd_new")
        names, after = b"\0".join(t.encode() for t in types), b"\0".join(t.encode() for t in later)
        if lib.cbd_types(self._handle, names, len(names), after, len(after)) != 0:
            raise ValueError(f"event names too long: {types}, {later}")
        self._piece = _Piece()
        self._piece_ref = ctypes.byref(self._piece)
        self.decoding = False
        self._converter: AudioConverter | None = None  # kept alive while C holds its state
        self.sinking: str | None = None  # the item the sink is armed for
        self._sink: CSink | None = None
        self._on_sunk: OnSunk | None = None

    @classmethod
    def make(cls, types: Sequence[str], later: Sequence[str] = ()) -> DownlinkScanner | None:
        """A scanner where the setting is on, the library loads and the dialect has audio deltas; else None."""
        lib = load() if _enabled and types else None
        return cls(lib, types, later) if lib is not None else None

    def frames_only(self) -> None:
        """The stream starts past its handshake (tests feed frames alone)."""
        if self._handle:
            self._lib.cbd_frames_only(self._handle)

    def decode(self, converter: AudioConverter | None, items: bool = True) -> bool:
        """Decode audio deltas with ``converter``'s C form from the next frame on (None: pass them on raw again).
        ``items``: a new item resets the filter and runs carry the ids (False: one continuous stream). False if the
        converter has no C form (the deltas pass on raw)."""
        self.unsink()
        form = c_form(converter) if converter is not None else None
        if not self._handle or (converter is not None and form is None):
            self.decode(None) if self.decoding else None
            return False
        mode, kernel, reset, state, table = form if form is not None else (Mode.OFF, 0, 0, 0, None)
        table_ptr = ctypes.cast(ctypes.c_char_p(table), ctypes.c_void_p) if table is not None else None
        rc = self._lib.cbd_audio(
            self._handle, int(mode), kernel or None, reset or None, state or None, table_ptr, 1 if items else 0
        )
        if rc != 0:
            return False
        self.decoding, self._converter = form is not None, converter
        return True

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[bytes | AudioRun]:
        """The pieces of one read, in stream order (see the module doc). Bytes of a partial frame wait for the next
        read. Each piece must be handled before the next is asked for."""
        handle, lib = self._handle, self._lib
        if not handle:
            yield bytes(data)
            return
        raw = data if isinstance(data, bytes) else bytes(data)
        fed = lib.cbd_feed(handle, raw, len(raw))
        if fed == -2:  # the reader holds a piece (bridge/realtime/readset.py): the pieces before these bytes first
            yield from self.pieces()
            fed = lib.cbd_feed(handle, raw, len(raw))
        if fed != 0:  # no memory: the scan is over, these bytes pass as they are
            yield raw
        yield from self.pieces()

    def pieces(self) -> Iterator[bytes | AudioRun]:
        """The pieces of what was fed and not yet taken (those of :meth:`feed`, or of the reader's reads)."""
        handle, lib, piece, ref = self._handle, self._lib, self._piece, self._piece_ref
        if not handle:
            return
        string_at = ctypes.string_at
        while True:
            kind = lib.cbd_next(handle, ref)
            if piece.sunk:
                self._told(piece)
            if kind == _Kind.PASS:
                yield string_at(piece.ptr, piece.len)
            elif kind == _Kind.AUDIO:
                yield AudioRun(
                    _text(piece.item, piece.item_len),
                    _text(piece.response, piece.response_len),
                    string_at(piece.ptr, piece.len) if piece.len else b"",
                    piece.deltas,
                    _text(piece.event, piece.event_len) if piece.event_len else None,
                )
            elif kind == _Kind.SUNK:
                sink = self._sink
                if sink is not None:
                    sink.refilled()
            else:
                return

    def sink(self, sink: CSink, on_sunk: OnSunk) -> bool:
        """Arm the sink (see the module doc): runs of ``sink.item_id`` go into its ring from the next one on, and
        ``on_sunk`` hears of their deltas. False where it cannot (not decoding, or an id C does not hold)."""
        item = sink.item_id.encode()
        if not self._handle or not self.decoding:
            return False
        self._on_sunk = on_sunk
        if self._lib.cbd_sink(self._handle, sink.push, sink.ring, sink.ring_id, item, len(item)) != 0:
            self.unsink()
            return False
        self.sinking, self._sink = sink.item_id, sink
        return True

    def unsink(self) -> None:
        """Disarm the sink: runs come to the loop again; what it took is told (:meth:`settle`)."""
        if self.sinking is None:
            return
        self.sinking, self._sink = None, None
        if self._handle:
            self._lib.cbd_sink(self._handle, None, None, -1, None, 0)
        self.settle()

    def settle(self) -> None:
        """Tell ``on_sunk`` what the sink took since it was last told."""
        if self._handle and self._on_sunk is not None:
            told = _Piece()  # not feed's: this may run while a piece of feed's is being handled
            self._lib.cbd_sunk(self._handle, ctypes.byref(told))
            if told.sunk:
                self._told(told)

    def _told(self, piece: _Piece) -> None:
        if self._on_sunk is not None:
            event = _text(piece.sunk_event, piece.sunk_event_len) if piece.sunk_event_len else None
            self._on_sunk(piece.sunk, event)

    @property
    def handle(self) -> int | None:
        """The scanner's address, for the reader (``cbd *``); None once closed."""
        return self._handle

    def counters(self) -> dict[str, int]:
        out = (ctypes.c_ulonglong * len(COUNTERS))()
        if self._handle:
            self._lib.cbd_counters(self._handle, out)
        return dict(zip(COUNTERS, out, strict=True))

    def close(self) -> None:
        self.unsink()
        handle, self._handle = self._handle, None
        if handle:
            self._lib.cbd_free(handle)
        self.decoding, self._converter = False, None


_LIB = LoadOnce(_load)
