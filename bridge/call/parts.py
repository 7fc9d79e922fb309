"""The parts of one call, built once by the session and handed as one frozen record to what acts on the call:
:mod:`bridge.call.reactions`, :mod:`bridge.call.changes`, :mod:`bridge.call.orchestration` and the table's actions
(:mod:`bridge.call.perform`). They reach the session only through its acts (:class:`~bridge.call.acts.CallActs`),
so they depend on the parts below them and the session alone depends on them.

The record is narrow: three groups by what they carry (the audio, the conversation, the model sessions) beside the
leg, the plan, the phase table and the call's time limit::

    CallParts ─┬─ call (CallActs: report, clock, emit, end, interrupt)   leg   plan   phase   limit
               ├─ audio: link, playout, playback, barge_in, latency
               ├─ talk: transcripts, turns, tools, usage, keys, hold
               └─ sessions: inbox, recovery, rollover, outage
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.audio import Playout
from bridge.call.acts import CallActs
from bridge.call.bargein import BargeIn
from bridge.call.flow import CallFlow
from bridge.call.inbox import Inbox
from bridge.call.latency import LatencyMeter
from bridge.call.leg import PhoneLeg
from bridge.call.limit import CallLimit
from bridge.call.link import Link
from bridge.call.outage import OutageAudio
from bridge.call.playback import Playback
from bridge.call.privacy import KeyMask
from bridge.call.recovery import Recovery
from bridge.call.rollover import Rollover
from bridge.call.toolcalls import ToolCalls
from bridge.call.transcripts import Transcripts
from bridge.call.turns import TurnBuilder
from bridge.call.usage import UsageMeter
from bridge.call.waiting import TurnHold
from bridge.dialplan import Dialplan
from bridge.realtime.client import RealtimeClient


@dataclass(frozen=True, slots=True)
class Audio:
    """The call's audio both ways: the caller's to the current session (``link``), the model's to the phone."""

    link: Link
    playout: Playout
    playback: Playback  # its ``continuous``: the model's audio is one stream, responses are its backend's
    barge_in: BargeIn
    latency: LatencyMeter


@dataclass(frozen=True, slots=True)
class Talk:
    """What is said: both sides' transcripts, turns rebuilt where the service marks none, tools, keys."""

    transcripts: Transcripts
    turns: TurnBuilder | None  # where the service marks no turns (bridge.call.turns)
    tools: ToolCalls
    usage: UsageMeter
    keys: KeyMask  # the plan's privacy: what the report and the listeners get of each key
    hold: TurnHold | None  # the soft hold while the answer to the caller's turn is slow


@dataclass(frozen=True, slots=True)
class Sessions:
    """The call's model sessions, one after another: their events' inbox, a lost one's recovery (and the hold
    message meanwhile), a capped one's rollover."""

    inbox: Inbox
    recovery: Recovery[RealtimeClient]
    rollover: Rollover[RealtimeClient]
    outage: OutageAudio


@dataclass(frozen=True, slots=True)
class CallParts:
    call: CallActs
    leg: PhoneLeg
    plan: Dialplan
    phase: CallFlow
    limit: CallLimit
    audio: Audio
    talk: Talk
    sessions: Sessions
