"""Both sides' transcripts of a call, and the caller turns still waiting for theirs.

The service transcribes a caller turn after committing it, often after its answer has played. When the call moves
to a new session (recovery, rollover), a turn committed in the old one and not yet transcribed is either handed
over (a replaced session stays open for it, see ``bridge.call.rollover``) or lost with a closed session: the new
session never heard it (:meth:`Transcripts.forget_lost`).
"""

from __future__ import annotations

from collections.abc import Callable

from bridge import events as ev
from bridge.call.report import CallReport


class Transcripts:
    def __init__(
        self,
        report: CallReport,
        emit: Callable[[ev.Report], None],
        caller_transcribed: bool,
        redact: Callable[[str], str] = str,
    ) -> None:
        self._report = report
        self._emit = emit
        self._redact = redact  # what the report and the listeners get (bridge/call/privacy.py); on_final the words
        self._transcribed = caller_transcribed  # the profile asks for input transcription
        self.untranscribed: set[str] = set()  # committed caller turns whose transcript has not come yet
        self.on_final: Callable[[str, str], None] | None = None  # (role, text) of each final transcript

    def committed(self, e: ev.InputCommitted) -> None:
        if self._transcribed:  # a transcript will come for it
            self.untranscribed.add(e.item_id)

    def caller(self, e: ev.CallerTranscript) -> None:
        if e.final:
            self.untranscribed.discard(e.item_id)
        if e.final and e.text:
            self._said("caller", e.text, self._report.caller_transcript, lambda shown: ev.CallerSaid(shown, e.item_id))

    def caller_failed(self, e: ev.CallerTranscriptFailed) -> None:
        self.untranscribed.discard(e.item_id)
        self._emit(ev.CallerNotTranscribed(e.message, e.item_id))

    def agent(self, e: ev.AgentTranscript | ev.AgentText) -> None:
        if e.final and e.text:
            self._said("agent", e.text, self._report.agent_transcript, lambda shown: ev.AgentSaid(shown, e.item_id))

    def _said(self, role: str, text: str, lines: list[str], report: Callable[[str], ev.Report]) -> None:
        """A final transcript: the report and the listeners get it redacted, ``on_final`` the words."""
        shown = self._redact(text)
        lines.append(shown)
        self._emit(report(shown))
        if self.on_final is not None:
            self.on_final(role, text)

    def hand_over(self) -> set[str]:
        """The turns still untranscribed, taken along by a replaced session."""
        taken, self.untranscribed = self.untranscribed, set()
        return taken

    def forget_lost(self) -> bool:
        """Forget the caller turns of a session that is gone (committed there, no transcript came); True if any."""
        if not self.untranscribed:
            return False
        self._emit(ev.CallerTurnLost(len(self.untranscribed), replaced=False))
        self.untranscribed.clear()
        return True
