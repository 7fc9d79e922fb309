"""What one call used of the model service, for its cost: the session's audio time where the dialect counts that
(``usage`` "audio_seconds": Live's cumulative ``session.usage.updated``), and the tokens of every response (Realtime
responses, or a Live session's delegated backend), summed over all of the call's sessions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bridge import events as ev


@dataclass
class UsageMeter:
    audio_seconds: float = 0.0  # the sessions already replaced
    session_seconds: float = 0.0  # the current session's total so far (cumulative in its events)
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    def updated(self, e: ev.UsageUpdated) -> None:
        self.session_seconds = max(self.session_seconds, e.seconds)

    def response_done(self, e: ev.ResponseDone) -> None:
        if e.usage is not None:
            self.input_tokens += e.usage.input_tokens
            self.output_tokens += e.usage.output_tokens
            self.total_tokens += e.usage.total_tokens

    def new_session(self) -> None:
        """The call moved to another session: its count starts again at zero."""
        self.audio_seconds, self.session_seconds = self.audio_seconds + self.session_seconds, 0.0

    def ended(
        self, final_seconds: float | None, by_audio: bool, emit: Callable[[ev.Report], None]
    ) -> dict[str, float | int]:
        """The call is over: ``final_seconds``, the figure the final model session sent with its close (Live's
        ``session.closed``); reported where the dialect prices by session time (``by_audio``). Returns the totals."""
        if final_seconds is not None:
            self.updated(ev.UsageUpdated(final_seconds, final=True))
        totals = self.totals()
        if by_audio:
            emit(ev.UsageTotals(totals["audio_seconds"], int(totals["input_tokens"]), int(totals["output_tokens"])))
        return totals

    def totals(self) -> dict[str, float | int]:
        return {
            "audio_seconds": round(self.audio_seconds + self.session_seconds, 3),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }
