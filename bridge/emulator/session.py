"""One emulated Realtime session, sans I/O: client text and a clock in, server actions out (the calling convention
of :class:`~bridge.emulator.core.SessionCore`).

Everything dialect-specific is data from the dialect's table (``bridge.realtime.dialects``): client and server
event names, the client events' envelopes, the append's audio field, the shapes of its answers and the session and
request schemas (``dialect.service``). Behaviour follows the service as docs/protocol.md describes it.

:class:`EmulatorSession` holds the session's configuration and hands each client event to the collaborator whose
room it is: :class:`~bridge.emulator.turns.Turns` (input audio, VAD, commits, transcription, idle timeout),
:class:`~bridge.emulator.conversation.Conversation` (items), :class:`~bridge.emulator.replies.Replies` (what a
response says) and :class:`~bridge.emulator.responses.RealtimeResponses` (responses laid out and paced in time).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from typing import Any, ClassVar

from bridge.emulator import rules
from bridge.emulator.actions import Abort, Action, Close, Send, SendRaw
from bridge.emulator.annotations import Annotations
from bridge.emulator.config import DialectConfig, SessionView
from bridge.emulator.conversation import Conversation
from bridge.emulator.core import AudioInput, Handler, SessionCore, Timer
from bridge.emulator.faults import Settings
from bridge.emulator.record import ELIDED, AudioSegment, Listener, SessionRecord
from bridge.emulator.replies import Context, Replies
from bridge.emulator.responses import RealtimeResponses
from bridge.emulator.turns import Turns
from bridge.emulator.wire import Ids, Wire
from bridge.realtime.dialects import Dialect
from bridge.realtime.dialects.schema import ClientError

__all__ = [
    "ELIDED",
    "Abort",
    "Action",
    "AudioSegment",
    "Close",
    "EmulatorSession",
    "Handler",
    "Listener",
    "Send",
    "SendRaw",
    "SessionCore",
    "SessionRecord",
    "Timer",
]


class EmulatorSession(SessionCore):
    """The state machine of one Realtime connection. See the module docstring for the calling convention."""

    wire: Wire

    def __init__(
        self,
        dialect: Dialect,
        settings: Settings | None = None,
        *,
        model: str | None = None,
        now: float = 0.0,
        wall: float = 0.0,
        annotations: Annotations | None = None,
        initial_session: Mapping[str, Any] | None = None,
        ids: Ids | None = None,
        record: SessionRecord | None = None,
    ) -> None:
        super().__init__(dialect, settings, now=now, wall=wall, annotations=annotations, ids=ids)
        self.cfg = DialectConfig(dialect)
        self.wire = Wire(dialect, self.ids)
        self.session_id = self.ids.session()
        self.conversation_id = self.ids.conversation()
        self.session: dict[str, Any] = self.cfg.new_session(model or dialect.default_model, initial_session)
        self.view: SessionView = self.cfg.view(self.session)
        self.record = record or SessionRecord(self.session_id, dialect.name, self.view.model)
        self.record.id, self.record.model = self.session_id, self.view.model
        self.record.settings = self.settings.as_dict()
        self.conversation = Conversation(self, self.wire, self.cfg, self.record)
        self.replies = Replies(self.settings, self.ids, self.annotations, lambda: self.view)
        self.turns = Turns(self, AudioInput(self.record, self._audio_field))
        self.responses = RealtimeResponses(self)
        self.turns.reset_vad()

    # ---------------------------------------------------------------------------------------------------------
    # The calling convention

    def open(self) -> list[Action]:
        """``session.created`` (unsolicited, right after the upgrade) and the session's own timers."""
        faults = self.settings.faults
        self.send(self.wire.event("session.created", session=self._echo()), self.t0)
        self.at(self.t0 + self.cap_s, self._expire)
        if faults.drop_after_s is not None:
            self.at(self.t0 + faults.drop_after_s, lambda t: self.abort(f"drop_after_s={faults.drop_after_s}", t))
        return self._flush()

    def next_deadline(self) -> float | None:
        if self.closed:
            return None
        t = min(self._timers[0].t if self._timers else math.inf, self.responses.next_t())
        return None if t == math.inf else t

    # ---------------------------------------------------------------------------------------------------------
    # Plumbing

    def _stopped(self) -> None:
        self.responses.active = None

    def _advance(self, now: float) -> None:
        while not self.closed:
            t_timer = self._timers[0].t if self._timers else math.inf
            t_run = self.responses.next_t()
            if min(t_timer, t_run) > now:
                return
            if t_run <= t_timer:  # model output first when both are due at the same time
                self.responses.step_due()
            else:
                timer = heapq.heappop(self._timers)
                if not timer.cancelled:
                    timer.fn(timer.t)

    def _echo(self) -> dict[str, Any]:
        return self.wire.session(self.session, self.session_id, self.expires_at)

    def _expire(self, t: float) -> None:
        minutes = f"{self.cap_s / 60:g}"
        self.error("session_expired", f"Your session hit the maximum duration of {minutes} minutes.", t)
        self.close(1001, "session expired", t)

    # ---------------------------------------------------------------------------------------------------------
    # Client events

    def _on_session_update(self, ev: dict[str, Any], t: float) -> None:
        before = self.view
        self.session = self.cfg.update(self.session, ev["session"])  # raises: the update is discarded whole
        self.view = self.cfg.view(self.session)
        directive = rules.said(self.view.instructions)
        if directive is not None and directive != rules.said(before.instructions):
            self.replies.directive = directive  # new standing instructions that say "say 'X'": the next reply says X
        if (before.turn_detection, before.input_format) != (self.view.turn_detection, self.view.input_format):
            self.turns.reset_vad()
            self.turns.cancel_idle()
        self.send(self.wire.event("session.updated", session=self._echo()), t)

    def _on_append(self, ev: dict[str, Any], t: float) -> None:
        self.turns.append(ev, t)

    def _on_commit(self, ev: dict[str, Any], t: float) -> None:
        self.turns.commit(t)

    def _on_clear(self, ev: dict[str, Any], t: float) -> None:
        self.turns.clear(t)

    def _on_item_create(self, ev: dict[str, Any], t: float) -> None:
        item = self.conversation.create(ev, t)
        if item["type"] == "function_call_output":
            self.replies.context = Context("function_output", item["output"])
        elif item["type"] == "message" and item["role"] == "system":
            directive = rules.said(" ".join(c.get("text") or "" for c in item["content"]))
            if directive is not None:
                self.replies.directive = directive  # a system note that says "say 'X'": the next reply says X
        elif item["type"] == "message" and item["role"] == "user":
            text = " ".join(c.get("text") or c.get("transcript") or "" for c in item["content"]).strip()
            if text:
                self.replies.context = Context("text", text)

    def _on_truncate(self, ev: dict[str, Any], t: float) -> None:
        self.conversation.truncate(ev, t)

    def _on_delete(self, ev: dict[str, Any], t: float) -> None:
        self.conversation.delete(ev, t)

    def _on_retrieve(self, ev: dict[str, Any], t: float) -> None:
        self.conversation.retrieve(ev, t)

    def _on_response_create(self, ev: dict[str, Any], t: float) -> None:
        run = self.responses.active
        if run is not None:
            raise ClientError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {run.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        self.responses.start(self.cfg.response_params(ev.get("response")), t)

    def _on_response_cancel(self, ev: dict[str, Any], t: float) -> None:
        run = self.responses.active
        wanted = ev.get("response_id")
        if run is None or (wanted is not None and wanted != run.id):
            self.responses.cancelled(wanted, "client", t, ok=False)
            raise ClientError("response_cancel_not_active", "Cancellation failed: no active response found")
        self.responses.cancel(run, "client", t)

    def _on_output_buffer_clear(self, ev: dict[str, Any], t: float) -> None:
        kind = self.dialect.client_events["output_buffer.clear"]
        raise ClientError("invalid_value", f"{kind} is only supported for WebRTC and SIP connections.", "type")

    # canonical client key (the dialect's client_events) -> handler
    _handlers: ClassVar[Mapping[str, Handler]] = {
        "session.update": _on_session_update,
        "input.append": _on_append,
        "input.commit": _on_commit,
        "input.clear": _on_clear,
        "item.create": _on_item_create,
        "item.truncate": _on_truncate,
        "item.delete": _on_delete,
        "item.retrieve": _on_retrieve,
        "response.create": _on_response_create,
        "response.cancel": _on_response_cancel,
        "output_buffer.clear": _on_output_buffer_clear,
    }
