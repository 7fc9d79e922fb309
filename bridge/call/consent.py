"""A recorded call's consent prompt, played by the bridge itself at the answer, before anything else::

    answered ──► the prompt (recording.consent_audio) plays; the model hears nothing of the caller meanwhile
               ├─ played out ──────────► "played": the recording starts now, then the model's greeting
               ├─ the caller's key or voice, with recording.consent_barge_in
               │                       ► "interrupted": the prompt stops, no recording, the greeting follows
               ├─ the caller hangs up ─► "caller_hung_up": no recording
               └─ its file unreadable ─► "not_played": no recording, the greeting follows

Without ``consent_barge_in`` (the default) the prompt always plays through: a caller who speaks or presses a key
over it is noted (``talked_over``) and their words and keys go nowhere until it has played out. The end is reported
once (:class:`~bridge.events.ConsentPrompt`: the recorder starts on ``played``, nothing else) and kept in the call's
report (``consent``), which the report line and the ``call.ended`` webhook carry.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

from bridge import events as ev
from bridge.audio import Playout
from bridge.audio.analysis import level_dbfs
from bridge.audio.frames import FRAME_MS, FrameSink
from bridge.audio.wav import WavFormatError
from bridge.call.outage import audio
from bridge.call.playback import LOCAL
from bridge.call.report import CallReport

CONSENT_ITEM: Final = f"{LOCAL}consent"  # the prompt's playout item: the bridge's own audio, in no conversation
VOICE_DBFS: Final = -35.0  # a caller frame louder than this (RMS) is voice
VOICE_FRAMES: Final = 5  # this many in a row (100 ms) are the caller speaking over the prompt


class ConsentPrompt:
    """One call's consent prompt: :meth:`start` at the answer, :meth:`beat` every tick until it ends, :meth:`close`
    as the call ends (a prompt still playing then was cut by the caller's hang-up, or by the call's end)."""

    def __init__(
        self,
        path: str,
        barge_in: bool,
        playout: Playout,
        report: CallReport,
        emit: Callable[[ev.Report], None],
        on_end: Callable[[ev.ConsentPrompt], None],
    ) -> None:
        self.path = path
        self.barge_in = barge_in
        self._playout = playout
        self._report = report
        self._emit = emit
        self._on_end = on_end
        self.playing = False
        self.result: ev.ConsentPrompt | None = None
        self._duration_ms = 0
        self._talked_over = False
        self._voiced = 0  # caller frames in a row above VOICE_DBFS

    def start(self) -> None:
        """Queue the prompt (before any other audio of the call); a file that cannot be read now ends it at once
        as ``not_played``."""
        try:
            pcm = audio(self.path)
        except (OSError, WavFormatError):
            self._end(ev.ConsentStatus.NOT_PLAYED)
            return
        self._duration_ms = len(pcm) // 16  # 8 kHz PCM16: 16 bytes a millisecond
        self.playing = True
        self._playout.push(CONSENT_ITEM, pcm)
        self._playout.end_item(CONSENT_ITEM)

    def gate(self, on_frame: FrameSink) -> FrameSink:
        """The caller's frames: heard here while the prompt plays (never sent on), then passed to ``on_frame``."""

        def gated(pcm: bytes, t_capture: float) -> None:
            if self.playing:
                self._hear(pcm)
            else:
                on_frame(pcm, t_capture)

        return gated

    def keys(self, handle: Callable[[ev.Dtmf], None]) -> Callable[[ev.Dtmf], None]:
        """The caller's keys: taken here while the prompt plays (a key over it), then passed to ``handle``."""

        def keyed(event: ev.Dtmf) -> None:
            if self.playing:
                self._over()
            else:
                handle(event)

        return keyed

    def beat(self) -> None:
        """Every tick while it plays: once its last frame has gone out, it was played."""
        if not self.playing:
            return
        # its last frame gone out on the wire, not merely handed to the media port, which holds a few ahead: the
        # recording starts once the caller has heard the whole prompt (audio queued after it plays on)
        whole = self._duration_ms % FRAME_MS == 0 and self._playout.sent_ms(CONSENT_ITEM) >= self._duration_ms
        if whole or self._playout.idle:
            self._end(ev.ConsentStatus.PLAYED)

    def close(self, ended_by: ev.EndedBy | None) -> None:
        """The call is ending: a prompt not ended yet was cut by the caller's hang-up (or never started)."""
        if self.result is not None:
            return
        if self.playing:
            self._playout.flush()
        hung_up = self.playing and ended_by in (ev.EndedBy.CALLER, ev.EndedBy.NETWORK)
        self._end(ev.ConsentStatus.CALLER_HUNG_UP if hung_up else ev.ConsentStatus.NOT_PLAYED)

    # -- inside ------------------------------------------------------------------------------------------------
    def _hear(self, pcm: bytes) -> None:
        self._voiced = self._voiced + 1 if level_dbfs(pcm) > VOICE_DBFS else 0
        if self._voiced == VOICE_FRAMES:
            self._over()

    def _over(self) -> None:
        """The caller spoke or pressed a key over the prompt: noted; it stops only where barge-in is allowed."""
        self._talked_over = True
        if self.barge_in:
            self._playout.flush()
            self._end(ev.ConsentStatus.INTERRUPTED)

    def _end(self, status: ev.ConsentStatus) -> None:
        played = self._duration_ms if status is ev.ConsentStatus.PLAYED else self._playout.played_ms(CONSENT_ITEM)
        self.playing = False
        self.result = ev.ConsentPrompt(
            status, min(played, self._duration_ms), self._duration_ms, self._talked_over, Path(self.path).name
        )
        self._report.consent = self.result.record()
        self._emit(self.result)
        self._on_end(self.result)
