"""How a call reacts to what the model and the caller's telephone tell it: speech, transcripts, responses, tool
calls, keys, errors and hang-ups. Each handler turns its event into reports and a trigger of the call's table
(:mod:`bridge.call.flow`); the table alone changes the phase. A closed or lost session is handled in
:mod:`bridge.call.changes`. Both act on the call through :class:`~bridge.call.parts.CallParts`."""

from __future__ import annotations

from bridge import events as ev
from bridge.call.flow import Trigger
from bridge.call.parts import CallParts


def on_speech_started(call: CallParts, e: ev.SpeechStarted) -> None:
    call.emit(ev.CallerSpeechStarted(e.audio_start_ms))
    call.interrupt("caller spoke over the agent", call.playback.busy, service_cancelled=call.service_interrupts)


def on_speech_stopped(call: CallParts, e: ev.SpeechStopped) -> None:
    call.caller_speaking = False
    call.latency.caller_stopped()
    call.emit(ev.CallerSpeechStopped(e.audio_end_ms))
    call.phase.fire(Trigger.CALLER_STOPPED)


def on_caller_transcript(call: CallParts, e: ev.CallerTranscript) -> None:
    if call.turns is not None and not e.final:
        call.turns.delta(e)
    else:
        call.transcripts.caller(e)


def on_agent_transcript(call: CallParts, e: ev.AgentTranscript) -> None:
    if call.turns is not None and not e.final:
        call.turns.delta(e)
    else:
        call.transcripts.agent(e)


def on_response_started(call: CallParts, e: ev.ResponseStarted) -> None:
    if call.continuous:  # the delegated backend's, not speech
        call.emit(ev.ResponseBegan(e.response_id))
        return
    call.playback.started(e.response_id, e.out_of_band)
    call.tools.line_started()
    call.emit(ev.ResponseBegan(e.response_id))
    call.phase.fire(Trigger.RESPONSE_STARTED)


def on_response_done(call: CallParts, e: ev.ResponseDone) -> None:
    call.emit(ev.ResponseEnded(e.response_id, e.status))
    call.usage.response_done(e)
    if call.continuous:  # the delegated backend's: its calls are answered now, together
        call.tools.response_done(e.response_id)
        return
    call.playback.ended(e.response_id)
    if not call.playback.had_audio and call.tools.pending is None:
        call.phase.fire(Trigger.RESPONSE_SILENT, f"response {e.status} without audio")


def on_function_call(call: CallParts, e: ev.FunctionCall) -> None:
    if call.turns is not None:
        call.turns.close_agent()  # what the model says after the tool's result is a new turn
    call.tools.call(e)
    call.phase.fire(Trigger.TOOL_CALL, f"tool {e.name}")


def on_dtmf(call: CallParts, e: ev.Dtmf) -> None:
    call.report.dtmf.append(e.digit)
    call.emit(ev.KeyPressed(e.digit, e.source))
    if e.source == "realtime":
        return  # the service already put it in the conversation
    call.interrupt("caller pressed a key", call.playback.response_id is not None)  # type-ahead cuts a prompt
    if call.turns is not None:
        call.turns.close_agent()  # the key is the caller's turn
    note = f"The caller pressed the key {e.digit} on the phone keypad."
    if call.orchestration is not None:
        # the orchestrator decides what a key does: the model gets the key as context that no dialect answers
        # (a user's note would be a turn the Live model answers on its own)
        call.link.send(ev.AddText(note, ev.Role.SYSTEM))
        call.orchestration.key()
        return
    call.link.send(ev.AddText(note))
    if not call.continuous:  # else the model answers the note on its own
        call.link.send(ev.CreateResponse())


def on_caller_hung_up(call: CallParts, e: ev.CallerHungUp) -> None:
    if call.ending:
        return  # our own hangup (end_call, transfer) comes back from the leg too: keep our reason
    call.playout.flush()
    call.end(f"caller hung up ({e.reason})" if e.reason else "caller hung up")


def on_error(call: CallParts, e: ev.ErrorEvent) -> None:
    call.barge_in.refused(e)
    # response_cancel_not_active is expected: the reply was often fully generated before the barge-in.
    if e.code != "response_cancel_not_active":
        call.report.errors.append({"class": str(e.error_class), "code": e.code, "message": e.message})
    call.emit(ev.ServiceError(e.code, str(e.error_class), e.message))
