"""Outbound playout buffer: the model's audio in 20 ms frames, from the event loop to pjmedia's clock thread.

The model sends audio faster than real time and in bursts; this buffer absorbs it (60 s by default) and
hands out exactly one frame per 20 ms tick (RFC 3551 §4.5: 20 ms packetization), with silence when it has
nothing. It counts what it played per item, so a barge-in can report ``audio_end_ms`` for
``conversation.item.truncate`` exactly.

Threading contract
------------------
Two threads, each with its own methods:

- the producer (the call's asyncio loop) calls ``push``, ``end_item`` and ``flush``;
- the consumer (pjmedia's clock thread, ``onFrameRequested``) calls ``pop_frame`` every 20 ms.

They share one ``collections.deque`` of ``(item_id, seq, frame)``: ``append`` (producer) and ``popleft``
(consumer) are atomic under the GIL. ``flush`` swaps in an empty deque under a lock held for that O(1) swap
only; the consumer takes the same lock with a non-blocking acquire, and on the rare tick where it would have to
wait it returns silence instead (a flush is cutting the audio at that very moment anyway). So ``pop_frame``
never blocks, and every frame is either handed out or reported dropped, exactly once. Each counter and per-item
record has one writer; any thread may read them (a read may be one frame stale).

Accounting
----------
- ``underruns``: pops that found no frame while an item was open (pushed, not yet ended or flushed) and had
  already started playing: dead air inside an answer. Silence before an item's first frame (waiting for the
  model) and idle silence between answers are not counted.
- ``dropped_frames``: frames refused because the buffer was full. The newest audio is dropped, and with it the
  rest of that item, so the caller always hears a prefix of each item and ``played_ms`` stays a position in it.
- ``late_frames``: audio pushed for an item already ended or flushed (deltas still in flight after a barge-in):
  discarded.
- ``played_ms(item)`` never exceeds the item's real audio length (its last frame is padded with silence).

Downstream
----------
A consumer may hold popped frames before they reach the wire: the native media port keeps a few frames queued
ahead of pjmedia's clock (``bridge.sip.cport``). It registers itself with :meth:`PlayoutBuffer.set_downstream`;
then ``flush`` first drops what that stage holds and un-counts those frames (they were never sent, so
``played_ms`` and ``audio_end_ms`` stay what the caller got), and ``idle`` waits until the real audio it holds
has gone out. The buffer remembers its last pops (a frame or silence) for that.

That stage is filled for several ticks at a time (the worker's loop wakes once per beat of a few ticks), so
while the buffer is empty it holds silence. When audio is then queued into the empty buffer (by ``push``, or by
``end_item`` with a tail), the buffer takes that trailing silence back (the stage drops its newest frames, the
buffer forgets those pops) and has the stage top itself up, so a reply starts on the next tick rather than a beat
later, and an item's tail plays right after the rest of it. A downstream stage is therefore fed on the producer's
thread (the native port's drain runs on the event loop, as the call session does).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from bridge.audio.frames import BYTES_PER_FRAME_PCM16, FRAME_MS

_Frame = tuple[str, int, bytes]  # item_id, index of the frame in its item, frame bytes
_RECENT = 32  # pops remembered for a downstream stage (it holds at most 16 frames)
_DEAD_AIR: Final = ("", -1)  # a remembered pop of silence that was counted as an underrun (None: idle silence)
_UNDERRUN_TIMES = 3000  # underrun times kept (a minute of dead air): benchmarks score those inside their window


class Downstream(Protocol):
    """A stage that holds popped frames before the wire (see the module doc)."""

    def flush_out(self) -> int:
        """Drop every frame held; return how many."""
        ...

    def depth(self) -> int:
        """Frames held now."""
        ...

    def drop_newest(self, frames: int) -> int:
        """Drop up to ``frames`` of the newest frames held; return how many."""
        ...

    def top_up(self) -> None:
        """Pop frames from this buffer now, as many as the stage holds at most."""
        ...


class Playout(Protocol):
    """What a call's playout buffer offers: :class:`PlayoutBuffer` (Python) and
    :class:`~bridge.audio.playout_native.NativePlayout` (C) both, with the same contract (the module doc)."""

    def set_downstream(self, downstream: Downstream | None) -> None: ...
    def push(self, item_id: str, pcm8k: bytes) -> None: ...
    def end_item(self, item_id: str) -> None: ...
    def flush(self) -> FlushResult: ...
    def pop_frame(self) -> bytes: ...
    def pop_frames(self, frames: int) -> bytes: ...
    def ran_dry(self, item_id: str) -> bool: ...
    def played_ms(self, item_id: str) -> int: ...
    def sent_ms(self, item_id: str) -> int: ...
    def first_played_at(self, item_id: str) -> float | None: ...
    @property
    def frames_played(self) -> int: ...
    @property
    def underruns(self) -> int: ...
    @property
    def underrun_times(self) -> Sequence[float]: ...
    @property
    def dropped_frames(self) -> int: ...
    @property
    def late_frames(self) -> int: ...
    @property
    def depth_ms(self) -> int: ...
    @property
    def idle(self) -> bool: ...
    @property
    def frame_bytes(self) -> int: ...


@dataclass(frozen=True, slots=True)
class FlushResult:
    """What a flush cut. ``item_id`` is the item that was playing (or next to play), None if there was none.

    ``played_ms`` is the audio of that item handed to the phone side: the ``audio_end_ms`` of
    ``conversation.item.truncate``. ``dropped_ms`` is its audio received but not played (0: nothing was cut).
    ``unplayed`` lists later items that were queued but not one frame of which was played.
    """

    item_id: str | None
    played_ms: int
    dropped_ms: int
    unplayed: tuple[str, ...] = ()


def checked_silence(max_ms: int, frame_bytes: int, silence: bytes | None) -> bytes:
    """A playout's arguments checked (either implementation): its frame of silence."""
    if frame_bytes <= 0 or max_ms < FRAME_MS:
        raise ValueError(f"need frame_bytes > 0 and max_ms >= {FRAME_MS}, got {frame_bytes}, {max_ms}")
    silence = bytes(frame_bytes) if silence is None else silence
    if len(silence) != frame_bytes:
        raise ValueError(f"silence must be one frame of {frame_bytes} bytes, got {len(silence)}")
    return silence


class PlayoutBuffer:
    """Bounded FIFO of 20 ms frames between one producer thread and one consumer thread (see module doc)."""

    def __init__(
        self,
        max_ms: int = 60_000,
        frame_bytes: int = BYTES_PER_FRAME_PCM16,
        silence: bytes | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._silence = checked_silence(max_ms, frame_bytes, silence)
        self._frame_bytes: Final = frame_bytes
        self._max_frames: Final = max_ms // FRAME_MS
        self._q: deque[_Frame] = deque()
        self._clock = clock  # stamps first_played_at (the call session passes its own clock; replays: virtual)
        self._swap = threading.Lock()  # guards the identity of self._q (flush swaps it), never its content
        # producer side
        self._item: str | None = None  # the item receiving audio (or the last one that did)
        self._open = False  # self._item may still receive audio
        self._seq = 0  # frames of self._item queued so far
        self._rem = b""  # tail of self._item shorter than a frame
        self._overflowing = False  # self._item hit the bound: the rest of it is dropped
        self._closed: set[str] = set()
        self._received: dict[str, int] = {}  # bytes of real audio per item
        self.dropped_frames = 0
        self.late_frames = 0
        # consumer side
        self._last_played: str | None = None
        self._played: dict[str, int] = {}  # frames handed out per item
        self._first_at: dict[str, float] = {}
        self.frames_played = 0
        self.underruns = 0
        self.underrun_times: deque[float] = deque(maxlen=_UNDERRUN_TIMES)  # the clock's time of the latest ones
        self._recent: deque[tuple[str, int] | None] = deque(maxlen=_RECENT)  # last pops; None, _DEAD_AIR: silence
        self._downstream: Downstream | None = None

    def set_downstream(self, downstream: Downstream | None) -> None:
        """Register (or, with None, forget) the stage that holds popped frames before the wire."""
        self._downstream = downstream

    # -- producer ------------------------------------------------------------------------------------------

    def push(self, item_id: str, pcm8k: bytes) -> None:
        """Queue audio of `item_id`, any length. A new item id ends the previous item (its tail is padded)."""
        was_empty = not self._q
        self._push(item_id, pcm8k)
        if was_empty:
            self._play_next()

    def _push(self, item_id: str, pcm8k: bytes) -> None:
        fb = self._frame_bytes
        if item_id != self._item or not self._open:
            if item_id in self._closed:
                self.late_frames += -(-len(pcm8k) // fb)
                return
            self._close()
            self._item, self._seq, self._rem, self._overflowing = item_id, 0, b"", False
            self._received[item_id] = 0
            self._open = True
        self._received[item_id] += len(pcm8k)
        data = self._rem + pcm8k if self._rem else pcm8k
        whole = len(data) - len(data) % fb
        for off in range(0, whole, fb):
            self._enqueue(item_id, data[off : off + fb])
        self._rem = data[whole:]

    def end_item(self, item_id: str) -> None:
        """No more audio for `item_id`: queue its tail padded to a whole frame so it plays."""
        if item_id == self._item and self._open:
            was_empty = not self._q
            self._close()
            if was_empty:
                self._play_next()

    def _play_next(self) -> None:
        """Audio was queued into an empty buffer: silence popped ahead of it that the downstream stage still
        holds is taken back, so the audio plays on the next tick, right after what played before it."""
        downstream = self._downstream
        if downstream is not None and self._reclaim_silence(downstream):
            downstream.top_up()

    def flush(self) -> FlushResult:
        """Drop everything queued at once (barge-in) and report what of the current item was played."""
        returned = self._take_back()
        with self._swap:
            drained, self._q = self._q, deque()
        cut = returned + [(frame[0], frame[1]) for frame in drained]  # oldest first: never sent
        current = cut[0][0] if cut else self._item
        open_item = self._item if self._open else None
        self._closed.update(item_id for item_id, _seq in cut)
        if self._item is not None:
            self._closed.add(self._item)
        played_tail = self._seq  # frames queued for self._item: all handed out if none was drained
        self._item, self._open, self._rem = None, False, b""
        if current is None:
            return FlushResult(None, 0, 0)
        # frames of an item are queued in order, so the first one cut tells how many were played before
        played = cut[0][1] if cut else played_tail
        received_ms = self._received[current] * FRAME_MS // self._frame_bytes
        played_ms = min(played * FRAME_MS, received_ms)
        later = dict.fromkeys(item_id for item_id, _seq in cut if item_id != current)
        if open_item is not None and open_item != current:
            later[open_item] = None
        return FlushResult(current, played_ms, received_ms - played_ms, tuple(later))

    def _take_back(self) -> list[tuple[str, int]]:
        """Drop what the downstream stage holds; un-count those frames. Returns them, oldest first."""
        downstream = self._downstream
        held = downstream.flush_out() if downstream is not None else 0
        if held <= 0:
            return []
        recent = list(self._recent)[-held:]
        self._recent.clear()
        returned = [pop for pop in recent if pop is not None and pop is not _DEAD_AIR]
        for item_id, seq in returned:
            self._played[item_id] = min(self._played.get(item_id, 0), seq)
            if seq == 0:
                self._first_at.pop(item_id, None)
            self.frames_played -= 1
        return returned

    def _close(self) -> None:
        if self._item is None or not self._open:
            return
        if self._rem:
            self._enqueue(self._item, self._rem + self._silence[len(self._rem) :])
            self._rem = b""
        self._closed.add(self._item)
        self._open = False

    def _enqueue(self, item_id: str, frame: bytes) -> None:
        if self._overflowing or len(self._q) >= self._max_frames:
            self._overflowing = True
            self.dropped_frames += 1
            return
        self._q.append((item_id, self._seq, frame))
        self._seq += 1

    # -- consumer ------------------------------------------------------------------------------------------

    def pop_frame(self) -> bytes:
        """The next frame, or silence. Never blocks; always exactly `frame_bytes` bytes."""
        if not self._swap.acquire(blocking=False):
            return self._silence  # a flush is swapping the queue out this very instant
        try:
            item_id, seq, frame = self._q.popleft()
        except IndexError:
            if self._open and self._last_played == self._item:
                self.underruns += 1
                self.underrun_times.append(self._clock())
                self._recent.append(_DEAD_AIR)
            else:
                self._recent.append(None)
            return self._silence
        finally:
            self._swap.release()
        self._recent.append((item_id, seq))
        if seq == 0:
            self._first_at[item_id] = self._clock()
        self._played[item_id] = seq + 1
        self._last_played = item_id
        self.frames_played += 1
        return frame

    def pop_frames(self, frames: int) -> bytes:
        """The next ``frames`` frames (silence where there is none), in one block."""
        pop = self.pop_frame
        return b"".join([pop() for _ in range(frames)])

    def _reclaim_silence(self, downstream: Downstream) -> int:
        """If audio is queued and the downstream stage's newest frames are silence popped before it came, take
        them back so the audio plays next (see the module doc). Silence counted as an underrun is un-counted: the
        caller never hears it. Returns the frames taken back."""
        recent = self._recent
        if not self._q or not recent or (recent[-1] is not None and recent[-1] is not _DEAD_AIR):
            return 0
        trailing = 0
        for pop in reversed(recent):
            if pop is not None and pop is not _DEAD_AIR:
                break
            trailing += 1
        taken = downstream.drop_newest(trailing)
        for _ in range(taken):
            if recent.pop() is _DEAD_AIR:
                self.underruns -= 1
                self.underrun_times.pop()
        return taken

    # -- readers -------------------------------------------------------------------------------------------

    def ran_dry(self, item_id: str) -> bool:
        """Audio pushed for ``item_id`` now would follow a gap the caller has been sent: the item is open, its
        queued audio has all gone out, and the silence played in its place (an underrun) is no longer held
        downstream, where :meth:`push` could take it back. A producer's short tail (a filter's last samples) is
        then better dropped than played alone after the gap, where it is a click."""
        if not self._open or self._item != item_id or self._q or self._last_played != item_id:
            return False
        trailing = 0
        for pop in reversed(self._recent):
            if pop is not _DEAD_AIR:
                break
            trailing += 1
        downstream = self._downstream
        return trailing > (downstream.depth() if downstream is not None else 0)

    def played_ms(self, item_id: str) -> int:
        """Milliseconds of `item_id` handed to the phone side so far."""
        received_ms = self._received.get(item_id, 0) * FRAME_MS // self._frame_bytes
        return min(self._played.get(item_id, 0) * FRAME_MS, received_ms)

    def sent_ms(self, item_id: str) -> int:
        """Milliseconds of `item_id` gone past the downstream stage (on the wire): played, less what it holds."""
        downstream = self._downstream
        held = downstream.depth() if downstream is not None else 0
        recent = list(self._recent)[-held:] if held > 0 else []
        of_item = sum(1 for pop in recent if pop is not None and pop[0] == item_id)
        return max(0, self.played_ms(item_id) - of_item * FRAME_MS)

    def first_played_at(self, item_id: str) -> float | None:
        """The clock's time when the first frame of `item_id` was handed out, None if not yet."""
        return self._first_at.get(item_id)

    @property
    def depth_ms(self) -> int:
        return len(self._q) * FRAME_MS

    @property
    def idle(self) -> bool:
        """Everything queued has been sent and no item is open (e.g. goodbye audio has finished)."""
        if self._open or self._q:
            return False
        downstream = self._downstream
        if downstream is None:
            return True
        held = downstream.depth()
        return held <= 0 or all(pop is None or pop is _DEAD_AIR for pop in list(self._recent)[-held:])

    @property
    def frame_bytes(self) -> int:
        return self._frame_bytes
