"""The echo set (``call_scripts/echo/``) scored: callers on lines that return the agent's audio, some of whom
interrupt the agent. Each run is replayed ``--via direct`` with the plan's echo guard on or off, and scored from
what the caller heard and what the bridge did:

* a **true barge-in** is a turn of the script with ``barge_in_after_ms`` that says words (``hears`` in
  parentheses, like ``(a cough)``, is a sound: the agent should go on); the bridge's barge-in (a ``barge_in`` or
  an echo guard's ``paused`` report: the caller stops hearing the agent) is a hit when it comes within
  :data:`HIT_WINDOW_MS` of that turn's speech onset, and its latency is the time from the onset;
* a barge-in while the caller says words of another turn (within its span as the caller's phone sent it, or
  :data:`SPAN_SLACK_MS` after: the line's delay) is the caller **talking over** the agent, not the echo: an
  agent whose answer went on past the pause the caller took for its end (a reply of two sentences, a jitter
  buffer's gap) is cut by a caller who really speaks over it; counted as ``talked_over``, neither hit nor false;
* every other barge-in is **false** (the agent cut off by its own echo, or by a cough); a pause that resumed
  is counted as ``resumed``, not as a cut.

``precision`` = hits / barge-ins, ``recall`` = hits / true barge-ins; ``false_per_turn`` = false barge-ins per agent
turn (the greeting and each annotated reply).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from bridge import events as ev
from bridge.audio.echo import dbfs, pcm
from bridge.audio.frames import BYTES_PER_FRAME_PCM16, FRAME_MS
from bridge.dialplan import Dialplan
from bridge.replay.compare import DialectRun
from bridge.replay.direct import in_fresh_loop, replay_call
from bridge.replay.script import CallScript, Turn

HIT_WINDOW_MS = 1000.0
SPAN_SLACK_MS = 300.0  # a cut this long after the caller's words ended is still theirs (the line's delay)
ONSET_DBFS = -40.0  # the caller's speech onset in their WAV: the first frame above this


@dataclass
class EchoScore:
    agent_turns: int = 0
    true_barge_ins: int = 0
    hits: int = 0
    false_barge_ins: int = 0
    resumed: int = 0  # false interruptions after which the agent went on where it was paused
    latencies_ms: list[float] = field(default_factory=list)
    talked_over: int = 0  # cuts while the caller said words outside a true barge-in (see the module doc)

    def add(self, other: EchoScore) -> None:
        """Count ``other``'s calls in too (every figure is a sum, the latencies a list)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def summary(self) -> dict[str, Any]:
        cuts = self.hits + self.false_barge_ins
        lat = self.latencies_ms
        return {
            "agent_turns": self.agent_turns,
            "true_barge_ins": self.true_barge_ins,
            "false_barge_ins": self.false_barge_ins,
            "resumed": self.resumed,
            "talked_over": self.talked_over,
            "false_per_turn": round(self.false_barge_ins / max(1, self.agent_turns), 3),
            "precision": round(self.hits / cuts, 3) if cuts else 1.0,
            "recall": round(self.hits / self.true_barge_ins, 3) if self.true_barge_ins else 1.0,
            "cut_p95_ms": round(float(np.percentile(lat, 95)), 1) if lat else None,
        }


def onset_ms(audio: bytes) -> float:
    """Where speech starts in a caller's WAV (PCM16 8 kHz)."""
    step = BYTES_PER_FRAME_PCM16
    for i in range(0, len(audio) - step + 1, step):
        if dbfs(pcm(audio[i : i + step])) > ONSET_DBFS:
            return i // step * FRAME_MS
    return 0.0


def cuts(run: DialectRun) -> list[float]:
    """When the caller stopped hearing the agent because of a barge-in (ms of the call): the barge-in itself, or
    the pause before it where the guard paused the agent first; a pause that resumed cut nothing."""
    out: list[float] = []
    paused: float | None = None
    taken = False  # a paused agent's barge-in was taken: its barge_in report is the same cut
    for t, report in run.noted_all(ev.EchoJudged, ev.BargeIn):
        match report:
            case ev.EchoJudged(outcome=ev.EchoOutcome.PAUSED):
                paused = t
            case ev.EchoJudged(outcome=ev.EchoOutcome.TAKEN) if paused is not None:
                out.append(paused)
                paused, taken = None, True
            case ev.EchoJudged(outcome=ev.EchoOutcome.RESUMED):
                paused = None
            case ev.BargeIn():
                if not taken:
                    out.append(t)
                taken = False
    return out


def is_words(turn: Turn) -> bool:
    """A turn that barges in with words; ``hears: "(a cough)"`` (in parentheses) is a sound, not words."""
    return turn.barge_in_after_ms is not None and not (turn.hears or "").startswith("(")


def score(script: CallScript, run: DialectRun) -> EchoScore:
    turns = script.model.turns
    result = EchoScore(agent_turns=1 + sum(t.reply is not None for t in turns))
    onsets: list[float] = []
    spoken: list[tuple[float, float]] = []  # the caller's words, every turn
    for start, end, label in run.caller_spans:
        if not label.startswith("turn "):
            continue
        index = int(label.split(":")[0].removeprefix("turn "))
        if is_words(turns[index]):
            onsets.append(start + onset_ms(script.caller_audio.get(index, b"")))
        if not (turns[index].hears or "").startswith("("):
            spoken.append((start, end + SPAN_SLACK_MS))
    result.true_barge_ins = sum(is_words(t) for t in turns)
    result.resumed = int(run.report.get("echo", {}).get("resumed", 0))
    for cut in cuts(run):
        hit = next((o for o in onsets if 0.0 <= cut - o <= HIT_WINDOW_MS), None)
        if hit is None and any(start <= cut <= end for start, end in spoken):
            result.talked_over += 1
        elif hit is None:
            result.false_barge_ins += 1
        else:
            onsets.remove(hit)
            result.hits += 1
            result.latencies_ms.append(cut - hit)
    return result


def guarded(plan: Dialplan, on: bool) -> Dialplan:
    """``plan`` with its echo guard switched on or off."""
    return plan.model_copy(update={"echo_guard": plan.echo_guard.model_copy(update={"enabled": on})})


def replay_guarded(script: CallScript, dialect: str, on: bool) -> DialectRun:
    """One call of ``script`` in virtual time, the echo guard on or off."""
    return in_fresh_loop(replay_call(script, dialect, plan=guarded(script.plan(dialect), on)), True)
