"""How a call reacts to what the model and the caller's telephone tell it: speech, transcripts, responses, tool
calls, keys, errors and hang-ups. Each handler turns its event into reports and a trigger of the call's table
(:mod:`bridge.call.flow`); the table alone changes the phase. A closed or lost session is handled in
:mod:`bridge.call.changes`. :class:`Reactions` gets the call's parts
(:class:`~bridge.call.parts.CallParts`), and of the session only its acts."""

from __future__ import annotations

from bridge import events as ev
from bridge.call.acts import OrchestratedTurns
from bridge.call.flow import Trigger
from bridge.call.inbox import Handlers
from bridge.call.parts import CallParts
from bridge.call.peer import note_peer, peer_end
from bridge.call.privacy import MASK

SHUTDOWN_HANGUP = "hung up by the bridge: its worker closed"  # the end reason of a call its gateway hung up


class Reactions:
    def __init__(self, parts: CallParts, orchestration: OrchestratedTurns | None = None) -> None:
        self._call, self._phase, self._audio, self._talk = parts.call, parts.phase, parts.audio, parts.talk
        self._keys_to_model = parts.plan.privacy.dtmf_to_model
        self._orchestration = orchestration
        self._held_at: float | None = None  # the caller has the call on hold since (the call's clock)

    def handlers(self) -> Handlers:
        """The table of what each event does; the session adds the changes of its model session."""
        emit, transcripts = self._call.emit, self._talk.transcripts
        return (
            Handlers()
            .on(ev.SessionReady, lambda e: emit(ev.SessionOpened(e.session_id)))  # session_id reaches Redis
            .on(ev.SessionConfigured, lambda e: emit(ev.SessionAccepted(e.session_id)))
            .on(ev.ConversationReady, lambda e: emit(ev.ConversationOpened(e.conversation_id)))
            .on(ev.OutputItemAdded, lambda e: emit(ev.OutputItem(e.item_type, e.item_id)))
            .on(ev.AudioChunk, self.on_audio)
            .on(ev.AudioDone, lambda e: self._audio.playback.audio_done(e.response_id, e.item_id))
            .on(ev.SpeechStarted, self.on_speech_started)
            .on(ev.SpeechStopped, self.on_speech_stopped)
            .on(ev.InputCommitted, transcripts.committed)
            .on(ev.CallerTranscript, self.on_caller_transcript)
            .on(ev.CallerTranscriptFailed, transcripts.caller_failed)
            .on(ev.AgentTranscript, self.on_agent_transcript)
            .on(ev.AgentText, transcripts.agent)
            .on(ev.ResponseStarted, self.on_response_started)
            .on(ev.ResponseDone, self.on_response_done)
            .on(ev.UsageUpdated, self._talk.usage.updated)
            .on(ev.FunctionCall, self.on_function_call)
            .on(ev.Dtmf, self.on_dtmf)
            .on(ev.CallerHungUp, self.on_caller_hung_up)
            .on(ev.MediaDropped, lambda e: emit(ev.CallerAudioDropped(e.dropped, e.admitted, e.source)))
            .on(ev.CallerHold, self.on_caller_hold)
            .on(ev.ItemTruncated, self._audio.barge_in.confirmed)
            .on(ev.ErrorEvent, self.on_error)
            .on(ev.IdleTimeout, lambda e: emit(ev.CallerSilent(e.audio_start_ms, e.audio_end_ms, e.item_id)))
            .on(ev.UnknownEvent, lambda e: emit(ev.UnknownServerEvent(e.type)))
        )

    def on_audio(self, chunk: ev.AudioChunk) -> bool:
        """The model's audio, into the playout buffer (the session also calls it on the decoding stack); dropped
        while a supervisor has the call (``Link.muted``). True: a response's chunk was queued, and the item's later
        chunks need nothing more of the loop (the session may arm the C downlink's sink for it)."""
        if self._audio.link.muted:
            return False
        playback = self._audio.playback
        if playback.continuous:
            opened = playback.stream(chunk)
            if opened is None:  # silence, or the model still talking after a barge-in
                return False
            if opened:
                self._talk.tools.line_started()  # the model speaks on its own: a tool's line is the speech that follows
        else:
            if self._talk.hold is not None and chunk.response_id not in playback.cancelled:
                self._talk.hold.agent_audio()  # flushed before the agent's first frame is queued: never both
            if not playback.push(chunk):  # in flight when we barged in
                return False
        self._phase.fire(Trigger.MODEL_AUDIO)
        return not playback.continuous

    def talked_over(self, ms: float) -> None:
        """A model that stops itself went on this long over the caller after a barge-in."""
        self._call.report.talk_over_ms.append(round(ms, 1))
        self._call.emit(ev.TalkedOver(round(ms, 1)))
        if self._talk.turns is not None:
            self._talk.turns.close_agent()  # the model stopped itself: what it says next is a new turn

    def on_speech_started(self, e: ev.SpeechStarted) -> None:
        call = self._call
        if self._talk.hold is not None:
            self._talk.hold.stop()  # the caller speaks over the hold: it stops; the agent is busy only if it was
        call.emit(ev.CallerSpeechStarted(e.audio_start_ms))
        call.interrupt(
            "caller spoke over the agent", self._audio.playback.busy, service_cancelled=call.service_interrupts
        )

    def on_speech_stopped(self, e: ev.SpeechStopped) -> None:
        self._audio.link.heard_caller(False)
        self._audio.latency.caller_stopped(self._audio.link.session_sent_ms, e.audio_end_ms)
        if self._talk.hold is not None:
            self._talk.hold.turn_ended(self._audio.latency.speech_ended_at)
        self._call.emit(ev.CallerSpeechStopped(e.audio_end_ms))
        self._phase.fire(Trigger.CALLER_STOPPED)

    @property
    def caller_holds(self) -> bool:
        """The caller has the call on hold with their phone now."""
        return self._held_at is not None

    def on_caller_hold(self, e: ev.CallerHold) -> None:
        """The caller put the call on hold, or took it off: on the timeline, and the time held is no wait for the
        agent (the agent's audio waited for the caller, nothing went out)."""
        now = self._call.clock()
        if e.held and self._held_at is None:
            self._held_at = now
            self._call.emit(ev.CallerHeld())
        elif not e.held and self._held_at is not None:
            held_s = now - self._held_at
            self._held_at = None
            self._audio.latency.caller_held(held_s, now)
            self._call.emit(ev.CallerResumed(round(held_s, 3)))

    def on_caller_transcript(self, e: ev.CallerTranscript) -> None:
        if self._talk.turns is not None and not e.final:
            self._talk.turns.delta(e)
        else:
            self._talk.transcripts.caller(e)

    def on_agent_transcript(self, e: ev.AgentTranscript) -> None:
        if self._talk.turns is not None and not e.final:
            self._talk.turns.delta(e)
        else:
            self._talk.transcripts.agent(e)

    def on_response_started(self, e: ev.ResponseStarted) -> None:
        playback = self._audio.playback
        if playback.continuous:  # the delegated backend's, not speech
            self._call.emit(ev.ResponseBegan(e.response_id))
            return
        playback.started(e.response_id, e.out_of_band)
        self._talk.tools.line_started()
        self._call.emit(ev.ResponseBegan(e.response_id))
        self._phase.fire(Trigger.RESPONSE_STARTED)
        if self._audio.link.muted:  # taken over: an answer to words cut short by the take-over is never heard
            self._audio.barge_in.refuse(e.response_id)

    def on_response_done(self, e: ev.ResponseDone) -> None:
        self._call.emit(ev.ResponseEnded(e.response_id, e.status, e.usage))
        self._talk.usage.response_done(e)
        playback = self._audio.playback
        if playback.continuous:  # the delegated backend's: its calls are answered now, together
            self._talk.tools.response_done(e.response_id)
            return
        playback.ended(e.response_id)
        if not playback.had_audio and self._talk.tools.pending is None:
            self._phase.fire(Trigger.RESPONSE_SILENT, f"response {e.status} without audio")

    def on_function_call(self, e: ev.FunctionCall) -> None:
        if self._talk.turns is not None:
            self._talk.turns.close_agent()  # what the model says after the tool's result is a new turn
        self._talk.tools.call(e)
        self._phase.fire(Trigger.TOOL_CALL, f"tool {e.name}")

    def on_dtmf(self, e: ev.Dtmf) -> None:
        shown = self._talk.keys.shown(e.digit)
        self._call.report.pressed.append(e.digit)
        self._call.report.dtmf.append(shown)
        self._call.emit(ev.KeyPressed(shown, e.source))
        if e.source == "realtime":
            return  # the service already put it in the conversation
        busy = self._audio.playback.response_id is not None  # type-ahead cuts a prompt
        self._call.interrupt("caller pressed a key", busy)
        if self._talk.turns is not None:
            self._talk.turns.close_agent()  # the key is the caller's turn
        hidden = not self._keys_to_model and shown == MASK
        key = "a key (withheld for privacy)" if hidden else f"the key {e.digit}"
        note = f"The caller pressed {key} on the phone keypad."
        if self._orchestration is not None:
            # the orchestrator decides what a key does: the model gets the key as context that no dialect answers
            # (a user's note would be a turn the Live model answers on its own)
            self._audio.link.send(ev.AddText(note, ev.Role.SYSTEM))
            self._orchestration.key()
            return
        self._audio.link.send(ev.AddText(note))
        if not self._audio.playback.continuous:  # else the model answers the note on its own
            self._audio.link.send(ev.CreateResponse())

    def on_caller_hung_up(self, e: ev.CallerHungUp) -> None:
        if self._call.ending:
            return  # our own hangup (end_call, transfer) comes back from the leg too: keep our reason
        self._audio.playout.flush()
        note_peer(e.peer, self._call.report, self._call.emit)  # what the caller's side's BYE said of the end
        if e.bound == ev.NO_ACK:  # the caller never saw the call up: the bridge's failure (bridge/sip/bounds.py)
            self._call.end(e.bound, ev.EndedBy.FAULT, ev.CallOutcome.FAILED)
        elif e.bound:  # the bridge ended a call whose caller went quiet or stopped refreshing: say which bound
            self._call.end(e.bound, ev.EndedBy.LIMIT)
        elif e.local:  # the bridge hung up with nothing of the call's own asking: its worker closed
            self._call.end(SHUTDOWN_HANGUP, ev.EndedBy.SHUTDOWN)
        elif (ending := peer_end(e.peer)) is not None:  # the network ended it (bridge/call/peer.py)
            self._call.end(*ending)
        else:
            self._call.end(f"caller hung up ({e.reason})" if e.reason else "caller hung up", ev.EndedBy.CALLER)

    def on_error(self, e: ev.ErrorEvent) -> None:
        self._audio.barge_in.refused(e)
        # response_cancel_not_active is expected: the reply was often fully generated before the barge-in.
        if e.code != "response_cancel_not_active":
            self._call.report.errors.append({"class": str(e.error_class), "code": e.code, "message": e.message})
        self._call.emit(ev.ServiceError(e.code, e.error_class, e.message))
