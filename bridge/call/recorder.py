"""Call recording: a :class:`RecordingLeg` around any phone leg writes what both sides said, aligned with the events.

::

    leg = RecordingLeg(call, Path("recordings") / call.call_id, consent=True, meta={"dialplan": plan.name})
    session = CallSession(leg, plan, dialect, connect, listeners=[leg.listener])
    await session.run()        # the session's CallEnded report closes the recording; leg.close() is idempotent

A recording is a directory:

* ``audio.wav``: stereo 8 kHz PCM16, left the caller, right the agent (what the caller heard), one 20 ms frame
  per media tick in each channel, so sample *n* of both channels is the same instant;
* ``events.jsonl``: a header line (``{"kind": "recording", ...}``) and then the session's reports, one per line
  (``kind``, ``summary`` and the report's stored fields), each with ``t_ms``: milliseconds since the media
  started, which is the position in ``audio.wav``.

Recording is opt-in per dialplan (``recording.enabled`` with a ``consent_prompt``). Without ``consent`` the leg is a
plain pass-through and writes nothing.

Threads: ``outbound.pop_frame()`` runs on the media clock thread (pjmedia), so the tap there only appends the frame
to a list (atomic under the GIL); ``on_frame`` and the listener run on the event loop thread. Files are written
once, at the end.
"""

from __future__ import annotations

import json
import logging
import time
import wave
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np

from bridge import events as ev
from bridge.audio.frames import BYTES_PER_FRAME_PCM16, FRAME_MS, SAMPLE_RATE, FrameSink, FrameSource, StreamKernel
from bridge.call.leg import LegProxy, PhoneLeg, TeeSource, UplinkOffload

log = logging.getLogger("bridge.replay")

AUDIO_FILE: Final = "audio.wav"
EVENTS_FILE: Final = "events.jsonl"
CHANNELS: Final = ("caller", "agent")


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
    ) -> None:
        super().__init__(leg)
        self.path = Path(path)
        self.consent = consent
        self.clock = clock
        self.meta = dict(meta or {})
        self.caller_frames: list[bytes] = []
        self.agent_frames: list[bytes] = []
        self.notes: list[dict[str, Any]] = []
        self._created = clock()
        self._media_at: float | None = None
        self._closed = False

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
        if self._media_at is None:
            self._media_at = self.clock()
        caller = self.caller_frames

        def tapped(pcm: bytes, t_capture: float) -> None:
            caller.append(pcm)
            on_frame(pcm, t_capture)

        self.leg.start_media(TeeSource(outbound, self.agent_frames.append), tapped)

    def uplink_offload(self, upsampler: StreamKernel) -> UplinkOffload | None:
        """Recording needs every caller frame on the loop: no offload then; otherwise the wrapped leg's."""
        return None if self.consent else self.leg.uplink_offload(upsampler)

    # -- the event log -------------------------------------------------------------------------------------------
    def t_ms(self) -> float:
        """Now, as a position in ``audio.wav`` (negative before the media started)."""
        origin = self._media_at if self._media_at is not None else self._created
        return round((self.clock() - origin) * 1000.0, 1)

    def _keep(self, report: ev.Report) -> None:
        if self.consent and not self._closed:
            self.notes.append({"t_ms": self.t_ms(), "kind": report.kind, "summary": report.summary, **report.data()})

    def listener(self, report: ev.Report) -> None:
        """A call-session listener: keeps every report; the session's :class:`~bridge.events.CallEnded` closes
        the recording."""
        self._keep(report)
        if isinstance(report, ev.CallEnded) and self.consent:
            self.close()

    def close(self) -> Path | None:
        """Write ``audio.wav`` and ``events.jsonl`` (once). Returns the directory, or None without consent."""
        if self._closed or not self.consent:
            return None
        self._closed = True
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            write_stereo(self.path / AUDIO_FILE, list(self.caller_frames), list(self.agent_frames))
            header = {
                "kind": "recording",
                "call_id": self.call_id,
                "caller": self.caller,
                "called": self.called,
                "sample_rate": SAMPLE_RATE,
                "frame_ms": FRAME_MS,
                "channels": list(CHANNELS),
                "media_started": self._media_at is not None,
                "consent": True,
                **self.meta,
            }
            with (self.path / EVENTS_FILE).open("w", encoding="utf-8") as f:
                for line in (header, *self.notes):
                    f.write(json.dumps(line, default=str) + "\n")
        except OSError:
            log.exception("recording of %s could not be written to %s", self.call_id, self.path)
            return None
        return self.path


def write_stereo(path: Path, left: list[bytes], right: list[bytes]) -> None:
    """Two lists of 20 ms PCM16 frames, frame *i* beside frame *i*; the shorter side is padded with silence."""
    n = max(len(left), len(right))
    silence = bytes(BYTES_PER_FRAME_PCM16)

    def channel(frames: list[bytes]) -> np.ndarray[Any, np.dtype[np.int16]]:
        data = b"".join(f.ljust(BYTES_PER_FRAME_PCM16, b"\0")[:BYTES_PER_FRAME_PCM16] for f in frames)
        data += silence * (n - len(frames))
        return np.frombuffer(data, dtype="<i2")

    stereo = np.stack([channel(left), channel(right)], axis=1).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(stereo.tobytes())


def read_recording(directory: str | Path) -> tuple[bytes, bytes, dict[str, Any], list[dict[str, Any]]]:
    """(caller PCM16, agent PCM16, header, notes) of a recording directory."""
    directory = Path(directory)
    with wave.open(str(directory / AUDIO_FILE), "rb") as w:
        if w.getnchannels() != 2 or w.getsampwidth() != 2 or w.getframerate() != SAMPLE_RATE:
            raise ValueError(f"{directory / AUDIO_FILE}: expected stereo 16-bit {SAMPLE_RATE} Hz")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    lines = [json.loads(x) for x in (directory / EVENTS_FILE).read_text(encoding="utf-8").splitlines() if x.strip()]
    header = lines[0] if lines and lines[0].get("kind") == "recording" else {}
    notes = lines[1:] if header else lines
    return data[:, 0].tobytes(), data[:, 1].tobytes(), header, notes
