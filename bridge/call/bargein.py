"""Barge-in: the caller speaks (or presses a key) over the agent. The session flushes the playout, cancels only an
active response (and only when the service has not: with ``interrupt_response`` its VAD cancels on its own),
truncates each item to what the caller actually heard of it (``conversation.item.truncate``, so the model's memory
of its answer matches what was said), and listens again. A dialect without cancel or truncate (its model stops
itself when the caller speaks) gets only the flush.

The truncates stay outstanding until the service answers: ``conversation.item.truncated``, or an ``error`` event
that refuses one. The call does not wait for that answer (the caller is already talking), so it is not a phase:
:attr:`BargeIn.awaiting_truncate` only decides how such an error is read.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge import events as ev
from bridge.call.playback import Cut, Playback
from bridge.call.report import CallReport

# Error codes with which the service refuses a truncate (an item id it no longer has, an offset past the audio).
TRUNCATE_REFUSALS = frozenset({"invalid_value", "unsupported_content_type", "item_not_found"})


class BargeIn:
    def __init__(
        self,
        playback: Playback,
        send: Callable[[ev.Command], None],
        emit: Callable[[ev.Report], None],
        report: CallReport,
        *,
        cancel: bool = True,
        truncate: bool = True,
    ) -> None:
        self._cancel, self._truncate = cancel, truncate  # the dialect's capabilities: without them, only the flush
        self._playback = playback
        self._send = send
        self._emit = emit
        self._report = report
        self.awaiting_truncate = False  # a truncate was sent and the service has not answered it yet
        self.last_cut: Cut | None = None  # what the latest barge-in cut

    def cut(self, why: str, *, service_cancelled: bool = False) -> None:
        """``service_cancelled``: the service's VAD has cancelled the active response itself (``interrupt_response``);
        a cancel of ours would only meet ``response_cancel_not_active``."""
        cut = self.last_cut = self._playback.cut()
        if cut.cancel is not None and self._cancel and not service_cancelled:
            self._send(ev.CancelResponse(cut.cancel))
        for item_id, played_ms in cut.truncates if self._truncate else ():
            self._send(ev.Truncate(item_id=item_id, audio_end_ms=played_ms))
            self.awaiting_truncate = True
            self._report.truncates.append({"item_id": item_id, "audio_end_ms": played_ms})
            self._emit(ev.TruncateSent(item_id, played_ms))
        self._report.barge_ins += 1
        self._emit(ev.BargeIn(why, cut.error_ms))

    def refuse(self, response_id: str) -> None:
        """A response the caller will not hear (the call is taken over; its audio is dropped): cancelled where the
        service can cancel, so the model does not go on as if it had been said."""
        if self._cancel:
            self._send(ev.CancelResponse(response_id))

    def confirmed(self, e: ev.ItemTruncated) -> None:
        self.awaiting_truncate = False
        self._emit(ev.Truncated(e.item_id, e.audio_end_ms))

    def refused(self, e: ev.ErrorEvent) -> bool:
        """True if ``e`` answers an outstanding truncate (reported as refused)."""
        if not (self.awaiting_truncate and e.code in TRUNCATE_REFUSALS):
            return False
        self.awaiting_truncate = False
        self._emit(ev.TruncateRefused(e.message))
        return True
