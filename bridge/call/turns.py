"""Caller and agent turns rebuilt from transcript deltas, for a dialect whose service marks no turns
(``turn_detection == "none"``): only ``CallerTranscript`` / ``AgentTranscript`` fragments with ``start_ms`` /
``end_ms`` on the session's timeline, and no final transcript.

The rule that closes a turn (docs/protocol.md, "GPT-Live"): a speaker's turn ends when the other speaker's fragment
starts at least :data:`MIN_SEPARATION_MS` after its last fragment ended (closer than that is an overlap or a
backchannel, which joins nothing and closes nothing), and the agent's turn also ends after
:data:`AGENT_SILENCE_S` without a fragment of it, or at once when the agent's turn is known to be over: the
model stopped itself after a barge-in, the caller pressed a key, or the model called a tool (what it says after the
tool's result is a new turn, as a Realtime response after a ``function_call_output`` is). A closed turn is
handed on as a final transcript, so the call report, Redis, replays and metrics read it as they read a service's
finals. What is open at the end of the call (or of its session) is closed then. Barge-ins on such a dialect come
from the bridge's own voice detection on the caller's audio (:class:`CallerVoice`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from bridge import events as ev
from bridge.audio.frames import SAMPLE_RATE
from bridge.audio.vad import EnergyVad, VadKind

MIN_SEPARATION_MS: Final = 500  # openai.lib.live's min_turn_separation_ms
AGENT_SILENCE_S: Final = 2.0  # openai.lib.live's assistant_silence_ms

# The bridge's own voice detection (:class:`CallerVoice`): an onset over the agent is a barge-in. Louder than a line's
# noise floor; no padding (only the onset's time matters).
CALLER_VAD_THRESHOLD = 0.4
CALLER_VAD_SILENCE_MS = 500.0

Speaker = Literal["caller", "agent"]


@dataclass
class _Turn:
    speaker: Speaker
    parts: list[str] = field(default_factory=list)
    end_ms: int | None = None  # the last fragment's end on the session's timeline
    heard_at: float = 0.0  # when its last fragment arrived (the call's clock)


class TurnBuilder:
    """Feed it every transcript delta (:meth:`delta`) and every beat (:meth:`beat`); closed turns go to
    ``caller(final)`` and ``agent(final)``."""

    def __init__(
        self,
        caller: Callable[[ev.CallerTranscript], None],
        agent: Callable[[ev.AgentTranscript], None],
        clock: Callable[[], float],
        caller_silence_s: float | None = None,
    ) -> None:
        self._caller, self._agent, self._clock = caller, agent, clock
        # where nobody else speaks to close a caller's turn (an orchestrated call): it ends after this long quiet
        self._caller_silence_s = caller_silence_s
        self._open: dict[Speaker, _Turn] = {}
        self.turns = 0

    def delta(self, e: ev.CallerTranscript | ev.AgentTranscript) -> None:
        speaker: Speaker = "caller" if isinstance(e, ev.CallerTranscript) else "agent"
        other = self._open.get("agent" if speaker == "caller" else "caller")
        if other is not None and (
            e.start_ms is None or other.end_ms is None or e.start_ms >= other.end_ms + MIN_SEPARATION_MS
        ):
            self._close(other)
        turn = self._open.setdefault(speaker, _Turn(speaker))
        if e.text:
            gap = turn.end_ms is not None and e.start_ms is not None and e.start_ms > turn.end_ms
            # a fragment after a pause starts a new phrase; within one, the deltas carry their own spaces
            turn.parts.append(" " + e.text if gap and turn.parts and not e.text[0].isspace() else e.text)
        if e.end_ms is not None:
            turn.end_ms = max(turn.end_ms or 0, e.end_ms)
        turn.heard_at = self._clock()

    def beat(self) -> None:
        agent = self._open.get("agent")
        if agent is not None and self._clock() - agent.heard_at >= AGENT_SILENCE_S:
            self._close(agent)
        caller, quiet_s = self._open.get("caller"), self._caller_silence_s
        if caller is not None and quiet_s is not None and self._clock() - caller.heard_at >= quiet_s:
            self._close(caller)

    def close_agent(self) -> None:
        """The agent's turn is over (see the module doc): close it if one is open."""
        agent = self._open.get("agent")
        if agent is not None:
            self._close(agent)

    def flush(self) -> None:
        """Close what is open (the call or its session ended: a new session's timeline starts again at 0)."""
        for turn in sorted(self._open.values(), key=lambda t: t.end_ms or 0):
            self._close(turn)

    def _close(self, turn: _Turn) -> None:
        del self._open[turn.speaker]
        text = "".join(turn.parts).strip()
        self.turns += 1
        item_id = f"turn-{self.turns}"
        if turn.speaker == "caller":
            self._caller(ev.CallerTranscript(item_id=item_id, text=text, final=True, end_ms=turn.end_ms))
        else:
            self._agent(ev.AgentTranscript(response_id="", item_id=item_id, text=text, final=True, end_ms=turn.end_ms))


class CallerVoice:
    """The bridge's own voice detection on the caller's 8 kHz audio, where the service marks no turns: each frame
    goes through an :class:`~bridge.audio.vad.EnergyVad` (an onset is a barge-in: ``interrupt`` with whether the
    agent is ``busy``), then to the model. ``heard`` tells the link whether the caller is speaking."""

    def __init__(
        self,
        send: Callable[[bytes, float], None],
        heard: Callable[[bool], None],
        emit: Callable[[ev.Report], None],
        interrupt: Callable[[str, bool], None],
        *,
        busy: Callable[[], bool],
        ending: Callable[[], bool],
    ) -> None:
        self._vad = EnergyVad(
            SAMPLE_RATE, threshold=CALLER_VAD_THRESHOLD, prefix_padding_ms=0, silence_duration_ms=CALLER_VAD_SILENCE_MS
        )
        self._send, self._heard, self._emit, self._interrupt = send, heard, emit, interrupt
        self._busy, self._ending = busy, ending

    def on_frame(self, pcm: bytes, t_capture: float) -> None:
        """A caller frame: through our voice detection, then to the model (a barge-in judged on this frame decides
        what the model hears of it: :meth:`bridge.call.echo.EchoGuarding.uplink`)."""
        for vad in self._vad.feed(pcm):
            if self._ending():
                break
            if vad.kind is VadKind.START:
                self._heard(True)
                self._emit(ev.CallerSpeechStarted(int(vad.ms)))
                self._interrupt("caller spoke over the agent", self._busy())
            else:
                # the model decides whether to answer: no phase pretends it will (THINKING is for what it owes)
                self._heard(False)
                self._emit(ev.CallerSpeechStopped(int(vad.ms)))
        self._send(pcm, t_capture)
