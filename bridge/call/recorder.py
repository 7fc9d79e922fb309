"""Call recording: a :class:`RecordingLeg` around any phone leg writes what both sides said, aligned with the events.

::

    leg = RecordingLeg(call, Path("recordings") / call.call_id, consent=True, meta={"dialplan": plan.name})
    session = CallSession(leg, plan, dialect, connect, CallOptions(listeners=[leg.listener]))
    await session.run()        # the session's CallEnded report closes the recording; leg.close() is idempotent

A recording is a directory:

* ``audio.wav``: stereo 8 kHz PCM16, left the caller, right the agent (what the caller was sent), on one clock: the
  caller's frames, one per media tick. Each caller frame is written beside the agent frame sent at that tick, so
  sample *n* of both channels is the same instant and the recording is as long as the call's media. An agent frame
  taken for the wire and then dropped before it was sent (a barge-in flushes the media port's ring,
  :class:`~bridge.audio.playout.Downstream`) is not in it;
* ``events.jsonl``: a header line (``{"kind": "recording", ...}``) and then the session's reports, one per line
  (``kind``, ``summary`` and the report's stored fields), each with ``t_ms``: milliseconds since the media
  started, which is the position in ``audio.wav``.

Both files are written as the call goes, on a thread of the recording's own (:class:`RecordingWriter`), never on
the event loop: audio in chunks of :data:`CHUNK_TICKS` ticks (the WAV header's sizes rewritten after each, so the
file on disk is always a playable recording of the call so far), events line by line. A killed worker loses at
most the last chunk and what the thread had not written yet. What a call holds in memory is bounded: one chunk
and at most :data:`AGENT_AHEAD_FRAMES` agent frames.

With the dialplan's ``privacy.pause_recording_on_dtmf`` both channels hold silence from a key until
:data:`PAUSE_AFTER_KEY_S` after the last one.

Recording is opt-in per dialplan (``recording.enabled`` with a ``consent_audio``). Without ``consent`` the leg is a
plain pass-through and writes nothing. With ``after_prompt`` (a worker's calls) nothing is written, not even the
directory, until the consent prompt the bridge plays (:mod:`bridge.call.consent`) has played out: its
:class:`~bridge.events.ConsentPrompt` ``played`` starts the recording (``t_ms`` 0, the header's ``consent`` says what
became of it); any other end leaves the call unrecorded.

Threads: ``outbound.pop_frame()`` runs on the media clock thread (pjmedia) or, with the native port, on the loop;
the tap there only appends the frame to a deque (thread-safe); ``on_frame``, the ring's flushes and the listener
run on the event loop thread. The native port hands the caller's frames over a read at a time: the recording takes
the block in one call, writes its ticks with one conversion, and passes it on as a block
(:class:`~bridge.audio.frames.BlockSink`).
"""

from __future__ import annotations

import collections
import enum
import hashlib
import json
import logging
import os
import queue
import struct
import threading
import time
import wave
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import numpy as np

from bridge import events as ev
from bridge.audio.frames import (
    BYTES_PER_FRAME_PCM16,
    FRAME_MS,
    SAMPLE_RATE,
    FrameSink,
    FrameSource,
    StreamKernel,
    block_form,
    exact_frame,
)
from bridge.call.leg import LegProxy, PhoneLeg, TeeSource, UplinkOffload, split
from bridge.privacy.masking import SECRET_PARAM, mask_url

if TYPE_CHECKING:
    from bridge.dialplan import Dialplan

log = logging.getLogger("bridge.replay")


def consent_greeting(plan: Dialplan) -> str | None:
    """With recording on, the caller has heard the consent prompt, which the bridge played itself
    (:mod:`bridge.call.consent`) before the greeting: the model is told so, and not to say it again (a worker's call
    and a replay of it alike). A plan without a greeting gets none."""
    if not plan.recording.enabled or not plan.greeting:
        return plan.greeting
    words = plan.recording.consent_prompt
    heard = f'a recorded notice: "{words}"' if words else "a recorded notice that the call is recorded"
    return f"The caller has just heard {heard}. Do not repeat it or mention recording. Now: {plan.greeting}"


def recorded_plan(plan: Mapping[str, Any]) -> dict[str, Any]:
    """A dialplan as a recording's header keeps it (``plan``: its JSON dump): its settings, so a replay can run the
    call again, with no secret: every header value (a tool's, an MCP server's, an orchestrator's) as ``****``, every
    URL through :func:`~bridge.privacy.masking.mask_url` (tokens in a query), each field naming a secret as ``****``;
    and its ``version``, a digest of the whole plan, secrets included (two recordings of one version ran the same
    plan)."""
    whole = json.dumps(plan, sort_keys=True, default=str).encode()
    kept = _without_secrets(dict(plan))
    assert isinstance(kept, dict)
    return {**kept, "version": hashlib.sha256(whole).hexdigest()[:16]}


def _without_secrets(value: Any, key: str = "") -> Any:
    if key == "headers" and isinstance(value, dict):
        return dict.fromkeys(value, "****")
    if isinstance(value, dict):
        return {k: ("****" if SECRET_PARAM.search(k) and isinstance(v, str) and v else _without_secrets(v, k))
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list):
        return [_without_secrets(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    return value


AUDIO_FILE: Final = "audio.wav"
EVENTS_FILE: Final = "events.jsonl"
CHANNELS: Final = ("caller", "agent")
CHUNK_TICKS: Final = 50  # 1 s of audio per write: a kill loses at most this and what was queued
MAX_BACKLOG: Final = 8  # chunks queued for the writer at most: past it (a stalled disk) a chunk becomes silence
AGENT_AHEAD_FRAMES: Final = 100  # agent frames taken for the wire ahead of their tick, at most (a stalled caller side)
PAUSE_AFTER_KEY_S: Final = 3.0
EARLY_NOTES: Final = 256  # reports held until the consent prompt has played out, at most
_SILENCE: Final = bytes(BYTES_PER_FRAME_PCM16)
_WAV_HEADER: Final = struct.Struct("<4sI4s4sIHHIIHH4sI")


def wav_header(data_bytes: int) -> bytes:
    """The 44-byte header of a stereo 8 kHz PCM16 WAV holding ``data_bytes`` of samples."""
    return _WAV_HEADER.pack(
        b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, 2, SAMPLE_RATE, SAMPLE_RATE * 4, 4, 16, b"data", data_bytes
    )


HEADER_KIND: Final = "recording"  # the ``kind`` of ``events.jsonl``'s first line


class Job(enum.Enum):
    """What the writer's thread is asked to do."""

    AUDIO = enum.auto()  # append interleaved stereo samples
    GAP = enum.auto()  # append this many bytes of silence (the disk was behind)
    LINE = enum.auto()  # append one line of events.jsonl
    CLOSE = enum.auto()  # finish the files


class RecordingWriter:
    """One recording's files, written on a thread of its own: :meth:`audio` appends interleaved stereo samples
    (then rewrites the WAV header's sizes), :meth:`line` appends one line of ``events.jsonl``; each write reaches
    the kernel before the next job (a killed process keeps it). Errors are logged once; the call goes on."""

    def __init__(self, path: Path, call_id: str, *, drops_behind: bool = True) -> None:
        self.path = path
        self.call_id = call_id
        # a call in real time never waits on the disk: past MAX_BACKLOG a chunk becomes silence; a run in virtual
        # time (a direct replay, far faster than the disk's thread may be given the GIL) queues every chunk
        self.drops_behind = drops_behind
        self._jobs: queue.SimpleQueue[tuple[Job, bytes]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"recording-{call_id[:16]}", daemon=True)
        self._thread.start()
        self.failed = False
        self.audio_bytes = 0
        self.skipped_bytes = 0

    @property
    def backlog(self) -> int:
        return self._jobs.qsize()

    def audio(self, samples: bytes) -> None:
        if not self.drops_behind or self._jobs.qsize() < MAX_BACKLOG:
            self._jobs.put((Job.AUDIO, samples))
            return
        # the disk is behind: the chunk's length in silence (a few bytes in memory), so the audio keeps its clock
        self.skipped_bytes += len(samples)
        self._jobs.put((Job.GAP, len(samples).to_bytes(8, "little")))
        if self.skipped_bytes == len(samples):
            log.warning(
                "recording of %s: the disk is behind; audio is written as silence until it catches up", self.call_id
            )

    def line(self, text: str) -> None:
        self._jobs.put((Job.LINE, text.encode()))

    def close(self, timeout_s: float = 5.0) -> bool:
        """Finish the files (what is queued is written first); True if the thread finished within ``timeout_s``."""
        self._jobs.put((Job.CLOSE, b""))
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _open(self) -> tuple[BinaryIO, BinaryIO]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path.mkdir(exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)  # a caller's words: the owner's alone
        files = []
        for name in (AUDIO_FILE, EVENTS_FILE):
            fd = os.open(self.path / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            files.append(os.fdopen(fd, "wb"))
        audio, events = files
        audio.write(wav_header(0))
        audio.flush()
        return audio, events

    def _run(self) -> None:
        files: tuple[BinaryIO, BinaryIO] | None = None
        while True:
            job, data = self._jobs.get()
            if job is Job.CLOSE:
                break
            if self.failed:
                continue
            try:
                files = files or self._open()
                self._write(files, job, data)
            except OSError:
                self.failed = True
                log.exception("recording of %s could not be written to %s", self.call_id, self.path)
        if files is not None:
            for f in files:
                f.close()

    def _write(self, files: tuple[BinaryIO, BinaryIO], job: Job, data: bytes) -> None:
        audio, events = files
        if job is Job.LINE:
            events.write(data + b"\n")
            events.flush()
            return
        if job is Job.GAP:
            data = bytes(int.from_bytes(data, "little"))
        audio.seek(0, os.SEEK_END)
        audio.write(data)
        self.audio_bytes += len(data)
        audio.seek(0)
        audio.write(wav_header(self.audio_bytes))  # playable at any moment: the sizes say what is there
        audio.flush()


class _Sent:
    """The native port's ring as the playout buffer sees it, seen by the recording too: frames it drops before the
    wire (a barge-in's flush, silence taken back) are taken out of the recording's agent frames."""

    def __init__(self, ring: Any, recording: RecordingLeg) -> None:
        self._ring = ring
        self._recording = recording

    def flush_out(self) -> int:
        dropped = int(self._ring.flush_out())
        self._recording.unsent(dropped)
        return dropped

    def drop_newest(self, frames: int) -> int:
        dropped = int(self._ring.drop_newest(frames))
        self._recording.unsent(dropped)
        return dropped

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ring, name)


class _CallerChannel:
    """The caller's frames on their way to the session (a :class:`~bridge.audio.frames.BlockSink`): each one, or a
    read's block of them at once, written at its tick first, then passed on as it came."""

    __slots__ = ("_on_frame", "_on_frames", "_recording")

    def __init__(self, recording: RecordingLeg, on_frame: FrameSink) -> None:
        self._recording = recording
        self._on_frame = on_frame
        self._on_frames = block_form(on_frame)

    def __call__(self, pcm: bytes, t_capture: float) -> None:
        self._recording.tick(pcm)
        self._on_frame(pcm, t_capture)

    def on_frames(self, block: bytes, times: Sequence[float]) -> None:
        self._recording.ticks_of(block)
        self._on_frames(block, times)


class _RecordedSource(TeeSource):
    """The outbound audio, every frame taken also kept by the recording; the media port's ring is wrapped so that
    what it drops unsent leaves the recording too."""

    def __init__(self, source: FrameSource, recording: RecordingLeg) -> None:
        super().__init__(source, recording.agent.append, recording.agent_block)
        self._recording = recording

    def set_downstream(self, downstream: Any) -> None:
        setter = getattr(self._source, "set_downstream", None)
        if setter is not None:
            setter(None if downstream is None else _Sent(downstream, self._recording))


class RecordingLeg(LegProxy):
    """A :class:`~bridge.call.leg.PhoneLeg` proxy that records the call (see the module docstring)."""

    def __init__(
        self,
        leg: PhoneLeg,
        path: str | Path,
        consent: bool,
        *,
        clock: Callable[[], float] = time.monotonic,
        meta: Mapping[str, Any] | None = None,
        pause_on_keys: bool = False,
        real_time: bool = True,
        after_prompt: bool = False,
    ) -> None:
        super().__init__(leg)
        self.path = Path(path)
        self.consent = consent
        self.clock = clock
        self.meta = dict(meta or {})
        self.pause_on_keys = pause_on_keys
        self.agent: collections.deque[bytes] = collections.deque(maxlen=AGENT_AHEAD_FRAMES)  # taken, not yet paired
        self.ticks = 0  # caller frames written: the recording's length in 20 ms frames
        self._chunk = bytearray()
        self._paused_until = float("-inf")
        self._created = clock()
        self._media_at: float | None = None
        self._closed = False
        self._writer: RecordingWriter | None = None
        self._real_time = real_time
        # after_prompt: nothing is written until the consent prompt has played out (a ConsentPrompt "played");
        # the reports until then are held (at most EARLY_NOTES) and written after the header
        self.waiting = consent and after_prompt
        self._early: list[tuple[float, ev.Report]] = []
        if consent and not after_prompt:
            self._open(None)

    def _open(self, prompt: ev.ConsentPrompt | None) -> None:
        """The files begin: the header (with what became of the consent prompt; None: no prompt was asked for,
        as in a replay), then the reports held until now, each at its time (negative: before the audio)."""
        self._writer = RecordingWriter(self.path, self.call_id, drops_behind=self._real_time)
        consent = None if prompt is None else prompt.record()
        self._writer.line(json.dumps(self._header(consent), default=str))
        for at, report in self._early:
            note = {"t_ms": round((at - (self._media_at or at)) * 1000.0, 1), **ev.as_json(report)}
            self._writer.line(json.dumps(note, default=str))
        self._early.clear()

    def _begin(self, prompt: ev.ConsentPrompt) -> None:
        """The consent prompt played out: the recording starts now (no frame of the prompt, none from before)."""
        self.waiting = False
        if prompt.status is not ev.ConsentStatus.PLAYED:
            self._closed = True  # never recorded: nothing is written, not even the directory
            self._early.clear()
            return
        self.agent.clear()  # the prompt's last frames, taken for the wire before its end
        self._media_at = self.clock()
        self._open(prompt)

    def _header(self, consent: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "kind": HEADER_KIND,
            "call_id": self.call_id,
            "caller": self.caller,
            "called": self.called,
            "sample_rate": SAMPLE_RATE,
            "frame_ms": FRAME_MS,
            "channels": list(CHANNELS),
            "consent": consent,
            **self.meta,
        }

    def hangup(self, reason: str | None = None) -> None:
        self._keep(ev.LegHungUp())
        self.leg.hangup(reason)

    def transfer(self, uri: str) -> None:
        self._keep(ev.LegTransferred(uri))
        self.leg.transfer(uri)

    def start_media(self, outbound: FrameSource, on_frame: FrameSink) -> None:
        if not self.consent:
            self.leg.start_media(outbound, on_frame)
            return
        if self._media_at is None and not self.waiting:
            self._media_at = self.clock()

        self.leg.start_media(_RecordedSource(outbound, self), _CallerChannel(self, on_frame))

    def uplink_offload(self, upsampler: StreamKernel) -> UplinkOffload | None:
        """Recording needs every caller frame on the loop: no offload then; otherwise the wrapped leg's."""
        return None if self.consent else self.leg.uplink_offload(upsampler)

    # -- the audio -----------------------------------------------------------------------------------------------
    @property
    def held_bytes(self) -> int:
        """The audio this recording holds in memory now (a chunk, the agent frames not yet paired)."""
        return len(self._chunk) + len(self.agent) * BYTES_PER_FRAME_PCM16

    @property
    def writer_backlog(self) -> int:
        """Writes queued for the recording's thread."""
        return self._writer.backlog if self._writer is not None else 0

    def agent_block(self, block: bytes) -> None:
        """A beat's frames the native port took at once: kept as the agent's, each beside its tick."""
        self.agent.extend(split(block))

    def unsent(self, frames: int) -> None:
        """The media port dropped its ``frames`` newest frames before sending them: not in the recording."""
        for _ in range(min(frames, len(self.agent))):
            self.agent.pop()

    def tick(self, caller: bytes) -> None:
        """One media tick: the caller's frame beside the agent frame sent at that tick."""
        self.ticks_of(exact_frame(caller))

    def ticks_of(self, block: bytes) -> None:
        """As many media ticks as ``block`` holds whole frames of the caller (a read of the native port), each
        frame beside the agent frame sent at its tick: the same samples and chunks as :meth:`tick` frame by frame."""
        if self._closed or self._writer is None:
            return  # waiting for the consent prompt (its frames are cleared at the start) or not recording
        n = len(block) // BYTES_PER_FRAME_PCM16
        if n == 0:
            return
        agent, sent = self.agent, []
        for _ in range(n):
            sent.append(agent.popleft() if agent else _SILENCE)
        agent_pcm = b"".join(sent)
        if len(agent_pcm) != n * BYTES_PER_FRAME_PCM16:  # a short or long frame among them: each one fitted
            agent_pcm = b"".join(map(exact_frame, sent))
        tick_bytes = 2 * BYTES_PER_FRAME_PCM16  # a tick of both channels
        stereo = np.empty(n * tick_bytes // 2, dtype="<i2")
        stereo[0::2] = np.frombuffer(block, "<i2", n * BYTES_PER_FRAME_PCM16 // 2)
        stereo[1::2] = np.frombuffer(agent_pcm, "<i2")
        if self.pause_on_keys:
            for k in range(n):
                if self.clock() < self._paused_until:
                    stereo[k * tick_bytes // 2 : (k + 1) * tick_bytes // 2] = 0
        samples, at = stereo.tobytes(), 0
        while at < n:  # a chunk is CHUNK_TICKS ticks, wherever a block begins
            take = min(n - at, CHUNK_TICKS - self.ticks % CHUNK_TICKS)
            self._chunk += samples[at * tick_bytes : (at + take) * tick_bytes]
            self.ticks += take
            at += take
            if self.ticks % CHUNK_TICKS == 0:
                self._flush_chunk()

    def _flush_chunk(self) -> None:
        if self._chunk and self._writer is not None:
            self._writer.audio(bytes(self._chunk))
            self._chunk.clear()

    # -- the event log -------------------------------------------------------------------------------------------
    def t_ms(self) -> float:
        """Now, as a position in ``audio.wav`` (negative before the media started)."""
        origin = self._media_at if self._media_at is not None else self._created
        return round((self.clock() - origin) * 1000.0, 1)

    def _keep(self, report: ev.Report) -> None:
        if self.waiting and len(self._early) < EARLY_NOTES:
            self._early.append((self.clock(), report))
        if self._writer is not None and not self._closed:
            note = {"t_ms": self.t_ms(), **ev.as_json(report)}  # bridge.events.decode reads it back
            self._writer.line(json.dumps(note, default=str))

    def listener(self, report: ev.Report) -> None:
        """A call-session listener: keeps every report; a key pauses the recording (``pause_on_keys``); the
        session's :class:`~bridge.events.CallEnded` closes the recording."""
        if isinstance(report, ev.KeyPressed) and self.pause_on_keys:
            self._paused_until = self.clock() + PAUSE_AFTER_KEY_S
        self._keep(report)
        if isinstance(report, ev.ConsentPrompt) and self.waiting:
            self._begin(report)
        if isinstance(report, ev.CallEnded) and self.consent:
            self.close()

    def close(self) -> Path | None:
        """Write what is left and finish the files (once). Returns the directory, or None without consent or if
        the files could not be written."""
        if self._closed or self._writer is None:
            self._closed = True  # a recording that never started stays unwritten
            return None
        self._closed = True
        self._flush_chunk()
        self.agent.clear()  # taken for the wire after the last tick: never sent
        finished = self._writer.close()
        return self.path if finished and not self._writer.failed else None


def finish_recording(directory: Path, reason: str) -> bool:
    """Close the recording of a call whose process died: the WAV header made to cover every whole frame on disk,
    and a last event (``ended``, ``reason``, outcome ``failed``, by ``fault``) at its end. False if there is no
    recording."""
    audio, events = directory / AUDIO_FILE, directory / EVENTS_FILE
    if not audio.is_file() or not events.is_file():
        return False
    with audio.open("r+b") as f:
        data = max(0, f.seek(0, os.SEEK_END) - _WAV_HEADER.size)
        data -= data % 4  # whole stereo samples only: a write cut short by the kill is left out
        f.truncate(_WAV_HEADER.size + data)
        f.seek(0)
        f.write(wav_header(data))
    t_ms = round(data / 4 / SAMPLE_RATE * 1000.0, 1)
    note = {"t_ms": t_ms, **ev.as_json(ev.CallEnded(reason, ev.CallOutcome.FAILED, ev.EndedBy.FAULT))}
    with events.open("r+b") as f:
        text = f.read()
        f.truncate(text.rfind(b"\n") + 1)  # a line cut short by the kill is left out
        f.seek(0, os.SEEK_END)
        f.write(json.dumps(note).encode() + b"\n")
    return True


def recording_dir(root: Path, call_id: str) -> Path:
    """The directory of one call's recording: ``root / call_id``, refused (``ValueError``) unless it resolves to a
    directory strictly inside ``root`` (an id is never a path, whatever made it)."""
    base = root.expanduser().resolve()
    path = (base / call_id).resolve()
    if path.parent != base or not call_id or path.name != call_id:
        raise ValueError(f"recording id {call_id[:80]!r} is not a plain name inside {base}")
    return path


def read_recording(directory: str | Path) -> tuple[bytes, bytes, dict[str, Any], list[dict[str, Any]]]:
    """(caller PCM16, agent PCM16, header, notes) of a recording directory."""
    directory = Path(directory)
    with wave.open(str(directory / AUDIO_FILE), "rb") as w:
        if w.getnchannels() != 2 or w.getsampwidth() != 2 or w.getframerate() != SAMPLE_RATE:
            raise ValueError(f"{directory / AUDIO_FILE}: expected stereo 16-bit {SAMPLE_RATE} Hz")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    lines = [json.loads(x) for x in (directory / EVENTS_FILE).read_text(encoding="utf-8").splitlines() if x.strip()]
    header = lines[0] if lines and lines[0].get("kind") == HEADER_KIND else {}
    notes = lines[1:] if header else lines
    return data[:, 0].tobytes(), data[:, 1].tobytes(), header, notes
