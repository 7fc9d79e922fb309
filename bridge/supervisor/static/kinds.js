// Generated from bridge/events.py by `python -m bridge.supervisor.kinds --js bridge/supervisor/static/kinds.js`:
// do not edit. KIND: the kind of each report a call's stream entry stores; the rest: the values of the
// closed sets the scripts compare (members by their Python names).

export const KIND = Object.freeze({
  AGENT_TRANSCRIPT: "agent_transcript",
  ANSWERED: "answered",
  BARGE_IN: "barge_in",
  CALLER_HELD: "caller_held",
  CALLER_RESUMED: "caller_resumed",
  CALLER_TRANSCRIPT: "caller_transcript",
  CALLER_TRANSCRIPT_FAILED: "caller_transcript_failed",
  CALLER_TURN_LOST: "caller_turn_lost",
  CONVERSATION_READY: "conversation_ready",
  DTMF: "dtmf",
  ECHO_JUDGED: "echo_judged",
  ENDED: "ended",
  ERROR: "error",
  FAILED_OVER: "failed_over",
  FILLER: "filler",
  HANGUP: "hangup",
  HOLD_ENDED: "hold_ended",
  HOLD_STARTED: "hold_started",
  IDLE_TIMEOUT: "idle_timeout",
  LATENCY: "latency",
  LEG_HANGUP: "leg_hangup",
  LEG_TRANSFER: "leg_transfer",
  LONGEST_SILENCE: "longest_silence",
  LONGEST_WAIT: "longest_wait",
  MEDIA_DROPPED: "media_dropped",
  ORCHESTRATOR_DECISION: "orchestrator_decision",
  ORCHESTRATOR_ERROR: "orchestrator_error",
  ORCHESTRATOR_FILLER: "orchestrator_filler",
  OUTAGE_ENDED: "outage_ended",
  OUTPUT_ITEM: "output_item",
  PHASE: "phase",
  PLAYOUT: "playout",
  REALTIME_CLOSED: "realtime_closed",
  REALTIME_UNAVAILABLE: "realtime_unavailable",
  RECONNECT_FAILED: "reconnect_failed",
  RECOVERED: "recovered",
  RECOVERY_FAILED: "recovery_failed",
  RESPONSE_DONE: "response_done",
  RESPONSE_STARTED: "response_started",
  RINGING: "ringing",
  ROLLOVER: "rollover",
  ROLLOVER_FAILED: "rollover_failed",
  ROLLOVER_READY: "rollover_ready",
  SESSION_CONFIGURED: "session_configured",
  SESSION_READY: "session_ready",
  SPEECH_STARTED: "speech_started",
  SPEECH_STOPPED: "speech_stopped",
  SUPERVISOR: "supervisor",
  TALKED_OVER: "talked_over",
  TOOL_CALL: "tool_call",
  TOOL_RESULT: "tool_result",
  TOOL_STARTED: "tool_started",
  TRANSFER: "transfer",
  TRANSFER_DECIDED: "transfer_decided",
  TRANSFER_LINE_INTERRUPTED: "transfer_line_interrupted",
  TRANSFER_OUTCOME: "transfer_outcome",
  TRANSFER_PROGRESS: "transfer_progress",
  TRANSFER_STEP: "transfer_step",
  TRUNCATE: "truncate",
  TRUNCATE_REFUSED: "truncate_refused",
  TRUNCATED: "truncated",
  UNKNOWN_EVENT: "unknown_event",
  USAGE: "usage",
  WAIT_HOLD: "wait_hold",
});

export const PHASE = Object.freeze({
  IDLE: "IDLE",
  LISTENING: "LISTENING",
  THINKING: "THINKING",
  SPEAKING: "SPEAKING",
  CANCELLING: "CANCELLING",
  RECOVERING: "RECOVERING",
  ENDED: "ENDED",
});

export const ITEM_TYPE = Object.freeze({
  MESSAGE: "message",
  FUNCTION_CALL: "function_call",
  FUNCTION_CALL_OUTPUT: "function_call_output",
  OTHER: "other",
});

export const ROW_STATUS = Object.freeze({
  LIVE: "live",
  LOST: "lost",
});

export const EDITOR = Object.freeze({
  WEIGHTS: "weights",
  SWITCH: "switch",
  VARIANT_NUMBERS: "variant-numbers",
});

export const MARK_LABEL = Object.freeze({
  error: "error",
  outage: "outage",
  on_hold: "on hold",
  slow_agent: "slow agent",
  long_silence: "long silence",
  barge_ins: "barge-ins",
  recovered: "recovered",
  caller_hold: "held by caller",
});
