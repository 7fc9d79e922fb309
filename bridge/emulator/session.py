"""One emulated Realtime session, sans I/O: client text and a clock in, server actions out (the calling convention
of :class:`~bridge.emulator.core.SessionCore`).

Everything dialect-specific is data from the dialect's table (``bridge.realtime.dialects``): client and server
event names, the client events' envelopes, the append's audio field, the shapes of its answers and the session and
request schemas (``dialect.service``). Behaviour follows the service as docs/protocol.md describes it.

:class:`EmulatorSession` owns the session's state (:class:`~bridge.emulator.state.RealtimeState`: configuration,
conversation, what the next response answers, the caller's audio) and hands it, with each client event, to the part
whose room it is: :class:`~bridge.emulator.turns.Turns` (input audio, VAD, commits, transcription),
:class:`~bridge.emulator.conversation.Conversation` (items), :class:`~bridge.emulator.replies.Replies` (what a
response says) and :class:`~bridge.emulator.responses.RealtimeResponses` (responses laid out and paced in time).
What one part's work asks of another (the caller's speech cuts a response, a turn asks for one, a response that
spoke arms GA's idle timeout) the parts return and the session carries out.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Unpack

from bridge.audio.vad import VadKind
from bridge.emulator import rules
from bridge.emulator.actions import Abort, Action, Close, Send, SendRaw
from bridge.emulator.config import DialectConfig, ResponseParams, SessionView
from bridge.emulator.conversation import Conversation
from bridge.emulator.core import AudioInput, Handler, Opening, SessionCore, Timer
from bridge.emulator.faults import Settings
from bridge.emulator.record import ELIDED, AudioSegment, Listener, SessionRecord
from bridge.emulator.replies import Context, ContextKind, Replies
from bridge.emulator.responses import RealtimeResponses
from bridge.emulator.scheduler import CancelledBy
from bridge.emulator.state import RealtimeState
from bridge.emulator.turns import Turns
from bridge.emulator.wire import Id, Wire
from bridge.realtime.dialects import Dialect
from bridge.realtime.dialects.common import post_call_form
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

    def __init__(self, dialect: Dialect, settings: Settings | None = None, **opening: Unpack[Opening]) -> None:
        super().__init__(dialect, settings, **opening)
        cfg = DialectConfig(dialect)
        self.wire = Wire(dialect, self.ids)
        session_id, conversation_id = self.ids.new(Id.SESSION), self.ids.new(Id.CONVERSATION)
        config = cfg.new_session(self.model_asked, opening.get("initial_session"))
        view = cfg.view(config)
        self.record = SessionRecord(session_id, dialect.name, view.model, settings=self.settings.as_dict())
        self.state = RealtimeState(
            core=self,
            wire=self.wire,
            cfg=cfg,
            session_id=session_id,
            conversation_id=conversation_id,
            config=config,
            view=view,
            conversation=Conversation(self, self.wire, cfg, self.record),
            replies=Replies(
                self.settings,
                self.ids,
                self.annotations,
                lambda: self.state.view,
                lambda: self.state.conversation.lines(),
            ),
            input=AudioInput(self.record, self._audio_field),
        )
        self.turns = Turns(self.state)
        self.responses = RealtimeResponses(self.state)
        self._idle: Timer | None = None  # GA's idle timeout
        self.turns.reset_vad()

    @property
    def view(self) -> SessionView:
        return self.state.view

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
                spoke_ms = self.responses.step_due()
                if spoke_ms is not None:
                    self._arm_idle(t_run, spoke_ms)
            else:
                timer = heapq.heappop(self._timers)
                if not timer.cancelled:
                    timer.fn(timer.t)

    def _echo(self) -> dict[str, Any]:
        return self.wire.session(self.state.config, self.state.session_id, self.expires_at)

    def _expire(self, t: float) -> None:
        minutes = f"{self.cap_s / 60:g}"
        self.error("session_expired", f"Your session hit the maximum duration of {minutes} minutes.", t)
        self.close(1001, "session expired", t)

    def _respond(self, params: ResponseParams, t: float) -> None:
        """A response starts: the idle timeout waits for its end."""
        self._cancel_idle()
        self.responses.start(params, t)

    # ---------------------------------------------------------------------------------------------------------
    # GA's idle timeout

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancelled = True
            self._idle = None

    def _arm_idle(self, t: float, audio_ms: float) -> None:
        """After a response that spoke (``audio_ms`` of it): the idle timeout, if the turn detection has one."""
        self._cancel_idle()
        deadline = self.turns.idle_deadline(t, audio_ms)
        if deadline is not None:
            self._idle = self.at(deadline, self._idle_timeout)

    def _idle_timeout(self, t: float) -> None:
        self._idle = None
        if self.responses.active is None:
            self.turns.timed_out(t)
            self._respond(ResponseParams(), t)

    # ---------------------------------------------------------------------------------------------------------
    # Client events

    def _on_session_update(self, ev: dict[str, Any], t: float) -> None:
        state = self.state
        before = state.view
        state.config = state.cfg.update(state.config, ev["session"])  # raises: the update is discarded whole
        state.view = state.cfg.view(state.config)
        directive = rules.said(state.view.instructions)
        if directive is not None and directive != rules.said(before.instructions):
            state.replies.directive = directive  # new standing instructions that say "say 'X'": the next reply says X
        if (before.turn_detection, before.input_format) != (state.view.turn_detection, state.view.input_format):
            self.turns.reset_vad()
            self._cancel_idle()
        self.send(self.wire.event("session.updated", session=self._echo()), t)

    def _on_append(self, ev: dict[str, Any], t: float) -> None:
        for e in self.turns.append(ev):
            if e.kind is VadKind.START:
                interrupts = self.turns.speech_started(e, t)
                self._cancel_idle()
                run = self.responses.active
                if interrupts and run is not None and not run.out_of_band:
                    self.responses.cancel(run, CancelledBy.TURN_DETECTED, t)
            elif self.turns.speech_stopped(e, t) and self.responses.active is None:
                self._respond(ResponseParams(), t)

    def _on_commit(self, ev: dict[str, Any], t: float) -> None:
        self.turns.commit(t)

    def _on_clear(self, ev: dict[str, Any], t: float) -> None:
        self.turns.clear(t)

    def _on_item_create(self, ev: dict[str, Any], t: float) -> None:
        item = self.state.conversation.create(ev, t)
        replies = self.state.replies
        if item["type"] == "function_call_output":
            replies.context = Context(ContextKind.FUNCTION_OUTPUT, item["output"])
        elif item["type"] == "message" and item["role"] == "system":
            directive = rules.said(" ".join(c.get("text") or "" for c in item["content"]))
            if directive is not None:
                replies.directive = directive  # a system note that says "say 'X'": the next reply says X
        elif item["type"] == "message" and item["role"] == "user":
            text = " ".join(c.get("text") or c.get("transcript") or "" for c in item["content"]).strip()
            if text:
                replies.context = Context(ContextKind.TEXT, text)

    def _on_truncate(self, ev: dict[str, Any], t: float) -> None:
        self.state.conversation.truncate(ev, t)

    def _on_delete(self, ev: dict[str, Any], t: float) -> None:
        self.state.conversation.delete(ev, t)

    def _on_retrieve(self, ev: dict[str, Any], t: float) -> None:
        self.state.conversation.retrieve(ev, t)

    def _on_response_create(self, ev: dict[str, Any], t: float) -> None:
        run = self.responses.active
        if run is not None:
            raise ClientError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {run.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        params = self.state.cfg.response_params(ev.get("response"))
        if self.settings.faults.drop_on_post_call and params.out_of_band and post_call_form(params.instructions):
            self.abort("drop_on_post_call", t)  # the session lost just as the call's summary is asked for
            return
        self._respond(params, t)

    def _on_response_cancel(self, ev: dict[str, Any], t: float) -> None:
        run = self.responses.active
        wanted = ev.get("response_id")
        if run is None or (wanted is not None and wanted != run.id):
            self.responses.cancelled(wanted, CancelledBy.CLIENT, t, ok=False)
            raise ClientError("response_cancel_not_active", "Cancellation failed: no active response found")
        self.responses.cancel(run, CancelledBy.CLIENT, t)

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
