"""One call in virtual time: the real ``CallSession`` between a fake phone and the real emulator, in memory.

::

    Phone (a PhoneLeg) ──20 ms frames──► CallSession ──commands──► InMemoryRealtime ──wire JSON──► EmulatorSession
    what the caller heard ◄── outbound.pop_frame() ◄── playout ◄── decoded server events ◄──────────────────┘

Nothing sits between the session and the wire that a real call does not have: every command is encoded to the
dialect's JSON and checked by the emulator's session logic (``bridge.emulator.session``, sans I/O), and every event
the session gets is one the emulator sent. Only the sockets are gone, and the loop's clock is virtual
(``bridge.replay.virtual``): a call of ten seconds runs in the time its CPU work takes, and the same test gives the
same call every time (seeded ids, a seeded retry jitter, no thread, no wall clock).

What a test may look at is the call's public surface: the :class:`~bridge.call.session.CallReport` that ``run()``
returns, what the phone was told and what it heard (:class:`Phone`), and the client events each emulated session
received, in order (:class:`Service`). The agent's replies are tones whose pitch the test chooses (emulator
annotations and settings), so "what the caller heard" is a list of pitched spans in virtual time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pytest

from bridge import events as ev
from bridge.audio.frames import BYTES_PER_FRAME_PCM16, FRAME_MS, FrameSink, FrameSource, StreamKernel
from bridge.audio.wav import read_wav
from bridge.call.retry import RetryPolicy
from bridge.call.session import CallOptions, CallReport, CallSession
from bridge.dialplan import BUILTIN_TOOLS, Dialplan
from bridge.emulator.annotations import Annotations
from bridge.emulator.faults import Settings
from bridge.emulator.live import LiveSession
from bridge.emulator.session import EmulatorSession
from bridge.realtime.dialects import BETA, GA, Dialect, LiveService
from bridge.realtime.profile import AgentProfile, ServerVad
from bridge.replay.direct import InMemoryRealtime
from bridge.replay.virtual import VirtualTimeLoop

FRAME_S: Final = FRAME_MS / 1000.0
APPENDS: Final = frozenset({"input_audio_buffer.append", "session.input_audio.append"})  # the caller's audio
RATE: Final = 8000
SILENCE: Final = bytes(BYTES_PER_FRAME_PCM16)
VOICED_DBFS: Final = -50.0  # a heard frame louder than this (RMS) is agent audio
# The phone's media clock runs this far behind the session's 20 ms tick (both start at the answer), as two
# unsynchronised clocks do; it keeps their ticks from being due at the same virtual instant.
MEDIA_PHASE_S: Final = 0.005
ASSETS: Final = Path(__file__).resolve().parents[3] / "bridge" / "assets"
TRANSFER_TARGET: Final = "sip:agent@example.com"
HOLD_HZ: Final = 1  # what :attr:`Phone.heard` records for a frame of the leg's hold audio (no voice is at 1 Hz)
DIALECTS: Final = pytest.mark.parametrize("dialect", [BETA, GA], ids=lambda d: d.name)  # where both behave alike
# The agent's voices: the emulator speaks each reply as a tone of the pitch its annotation (or, unscripted, the
# session's settings) gives, so the caller's ear tells the greeting, an answer and a new session's words apart.
GREETING_HZ: Final = 400
ANSWER_HZ: Final = 600
NEW_SESSION_HZ: Final = 800
HOURS: Final[Mapping[str, Any]] = {
    "greeting": {"text": "Welcome to ACME.", "tone_hz": GREETING_HZ, "duration_ms": 1000},
    "turns": [
        {
            "hears": "What are your hours?",
            "reply": {"text": "We open at nine.", "tone_hz": ANSWER_HZ, "duration_ms": 2000},
        },
        {"hears": "And on Sunday?", "reply": {"text": "Closed on Sundays.", "tone_hz": ANSWER_HZ, "duration_ms": 1000}},
        {"hears": "Thanks, bye.", "reply": {"text": "You're welcome.", "tone_hz": ANSWER_HZ, "duration_ms": 1000}},
    ],
}


# --------------------------------------------------------------------------------------------------------------
# Audio


def tone_8k(ms: float, hz: float = 300.0, dbfs: float = -20.0) -> bytes:
    """A steady tone as 8 kHz PCM16: loud enough for the service's VAD, pitched apart from the agent's tones."""
    n = round(RATE * ms / 1000.0)
    x = 32767.0 * 10.0 ** (dbfs / 20.0) * np.sin(2.0 * np.pi * hz * np.arange(n) / RATE)
    return bytes(np.round(x).astype("<i2").tobytes())


def caller_wav() -> bytes:
    """The bundled recording of a caller's question (8 kHz PCM16, about 3.2 s)."""
    return read_wav(ASSETS / "caller_hours.wav")


def _pitch(frame: bytes) -> int:
    """The dominant frequency of one heard frame, to the nearest 100 Hz (the tests' voices are 200 Hz apart and
    a reply's last frame, half tone and half silence, smears); 0 for silence."""
    x = np.frombuffer(frame, dtype="<i2").astype(np.float64)
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    if 20.0 * math.log10(max(rms, 1e-6) / 32768.0) <= VOICED_DBFS:
        return 0
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size), 800))  # zero-padded: 10 Hz bins
    return round((int(np.argmax(spectrum[1:])) + 1) * RATE / 800 / 100) * 100


# --------------------------------------------------------------------------------------------------------------
# The trace: what the phone was told and what each emulated session received, in one order


@dataclass(frozen=True)
class Entry:
    t: float  # virtual seconds
    who: str  # "leg" or "peer<n>" (the n-th Realtime session, from 0)
    what: str  # a PhoneLeg method, or a client event type
    detail: Any = None


@dataclass
class Trace:
    clock: Callable[[], float]
    entries: list[Entry] = field(default_factory=list)

    def add(self, who: str, what: str, detail: Any = None) -> None:
        self.entries.append(Entry(self.clock(), who, what, detail))

    def index(self, who: str, what: str) -> int:
        """Where the first such entry is (ValueError if none)."""
        return next(i for i, e in enumerate(self.entries) if (e.who, e.what) == (who, what))

    def of(self, who: str) -> list[Entry]:
        return [e for e in self.entries if e.who == who]

    def tail(self, n: int = 30) -> str:
        return "\n".join(f"  {e.t:8.3f} {e.who:6} {e.what}" for e in self.entries[-n:])


# --------------------------------------------------------------------------------------------------------------
# The phone


@dataclass(frozen=True)
class Span:
    """Agent audio the caller heard: ``hz`` (the reply's pitch) from ``start`` to ``end``, virtual seconds."""

    hz: int
    start: float
    end: float

    @property
    def ms(self) -> float:
        return round((self.end - self.start) * 1000.0, 1)


class Phone:
    """A :class:`~bridge.call.leg.PhoneLeg` with the caller behind it, on a 20 ms media clock in virtual time.

    Every tick it takes one frame from the bridge's playout (what the caller hears: :attr:`heard`, one pitch per
    frame) and hands one caller frame to the bridge (queued with :meth:`say`, else silence). What the bridge tells
    the leg is in :attr:`told` and in the trace. The test plays the caller: :meth:`say`, :meth:`press`,
    :meth:`notify` (the transferee's NOTIFYs) and :meth:`hang_up`.
    """

    def __init__(self, trace: Trace, clock: Callable[[], float], call_id: str = "unit-call") -> None:
        self.call_id, self.caller, self.called = call_id, "+15550100", "100"
        self.events: asyncio.Queue[ev.Event] = asyncio.Queue()
        self.disconnected = asyncio.Event()
        self.told: list[tuple[str, ...]] = []
        self.heard: list[tuple[float, int]] = []  # (time the frame was taken, its pitch; 0 is silence)
        self.said: list[tuple[float, float]] = []  # (start, end) of each utterance the caller said (not its silence)
        self.last_voiced: float | None = None  # when the caller last heard agent audio (the frame's start)
        self._trace = trace
        self._clock = clock
        self._outgoing: deque[tuple[bytes, bool, bool]] = deque()  # (frame, first of an utterance, last)
        self._utterance_start = 0.0
        self._media: asyncio.Task[None] | None = None
        self._stalled = 0  # ticks left of a stall of the caller's RTP
        self._held: list[bytes] = []  # the caller's frames held back by a stall, delivered at once after it
        self.on_hold = False  # the leg's hold (as pjsua2's): the caller hears the hold audio, the session is out
        self.caller_holding = False  # the caller's own hold key: nothing goes either way (as the SIP leg's port)

    # -- PhoneLeg ----------------------------------------------------------------------------------------------
    def _told(self, *what: str) -> None:
        self.told.append(what)
        self._trace.add("leg", what[0], what[1:] or None)

    def ringing(self) -> None:
        self._told("ringing")

    def answer(self) -> None:
        self._told("answer")

    def reject(self, code: int, reason: str | None = None, retry_after: int | None = None) -> None:
        self._told("reject", str(code))
        self._disconnect("rejected")

    def hangup(self, reason: str | None = None) -> None:
        self._told("hangup", *([reason] if reason else []))
        self._disconnect("local hangup")

    def transfer(self, uri: str) -> None:
        self._told("transfer", uri)

    def send_dtmf(self, digits: str) -> None:
        self._told("send_dtmf", digits)

    def hold(self, wav: str) -> None:
        self._told("hold")
        self.on_hold = True

    def unhold(self) -> None:
        self._told("unhold")
        self.on_hold = False

    def start_media(self, outbound: FrameSource, on_frame: FrameSink) -> None:
        self._told("start_media")
        if self._media is None:
            self._media = asyncio.create_task(self._run_media(outbound, on_frame), name=f"media-{self.call_id}")

    def uplink_offload(self, upsampler: StreamKernel) -> None:
        return None  # every caller frame goes through on_frame, on the loop, in virtual time

    # -- the caller --------------------------------------------------------------------------------------------
    def say(self, pcm8k: bytes, silence_after_ms: float = 800.0) -> None:
        """Queue an utterance (8 kHz PCM16), then silence long enough for the service's VAD to end the turn."""
        frames = [pcm8k[i : i + BYTES_PER_FRAME_PCM16] for i in range(0, len(pcm8k), BYTES_PER_FRAME_PCM16)]
        for i, frame in enumerate(frames):
            self._outgoing.append((frame.ljust(BYTES_PER_FRAME_PCM16, b"\0"), i == 0, i == len(frames) - 1))
        self._outgoing.extend((SILENCE, False, False) for _ in range(round(silence_after_ms / FRAME_MS)))

    def stall(self, ms: float) -> None:
        """The caller's RTP stalls for ``ms`` (a network hiccup), then its frames arrive at once, in a burst."""
        self._trace.add("phone", "stall", ms)
        self._stalled = round(ms / FRAME_MS)

    @property
    def saying(self) -> bool:
        """Frames of what the caller says are still queued."""
        return bool(self._outgoing)

    def hold_key(self, held: bool) -> None:
        """The caller puts the call on hold with their phone (a re-INVITE with ``a=sendonly``), or takes it off: as
        the SIP leg, the port is out of the call both ways meanwhile (nothing taken from the playout, no frame to
        the bridge), and the leg reports it."""
        self._trace.add("phone", "hold key", held)
        self.caller_holding = held
        self.events.put_nowait(ev.CallerHold(held))

    def press(self, digit: str) -> None:
        """A key press as the SIP leg reports it (RFC 4733)."""
        self._trace.add("phone", "dtmf", digit)
        self.events.put_nowait(ev.Dtmf(digit))

    def notify(self, status: int, reason: str, *, final: bool) -> None:
        """A NOTIFY of the REFER's progress (RFC 3515, a ``message/sipfrag`` status line)."""
        self._trace.add("phone", "notify", status)
        self.events.put_nowait(ev.TransferProgress(status, reason, final))

    def hang_up(self) -> None:
        """The caller hangs up (a BYE from their side)."""
        self._trace.add("phone", "bye")
        self._disconnect("")

    def _disconnect(self, reason: str) -> None:
        if not self.disconnected.is_set():
            # as the SIP leg does: whoever hung up, it reports the end of the call once
            self.events.put_nowait(ev.CallerHungUp(200, reason))
            self.disconnected.set()

    # -- the media clock -----------------------------------------------------------------------------------------
    async def _run_media(self, outbound: FrameSource, on_frame: FrameSink) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(MEDIA_PHASE_S)
        start, n = loop.time(), 0
        while not self.disconnected.is_set():
            now = self._clock()
            if self.caller_holding:  # their phone plays its own music; the bridge's port is not read or fed
                self.heard.append((now, 0))
                n += 1
                await asyncio.sleep(max(0.0, start + n * FRAME_S - loop.time()))
                continue
            # on hold the session's port is out of the call both ways: nothing is taken from it, it hears silence
            hz = HOLD_HZ if self.on_hold else _pitch(outbound.pop_frame())
            self.heard.append((now, hz))
            if hz and not self.on_hold:
                self.last_voiced = now
            frame, first, last = self._outgoing.popleft() if self._outgoing else (SILENCE, False, False)
            if self.on_hold:
                frame = SILENCE
            if first:
                self._utterance_start = now
            if last:
                self.said.append((self._utterance_start, now + FRAME_S))
            if self._stalled:
                self._stalled -= 1
                self._held.append(frame)
            else:
                for held in [*self._held, frame]:
                    on_frame(held, time.monotonic())
                self._held.clear()
            n += 1
            await asyncio.sleep(max(0.0, start + n * FRAME_S - loop.time()))

    async def stop(self) -> None:
        self.disconnected.set()
        if self._media is not None:
            self._media.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._media

    # -- what the caller heard -----------------------------------------------------------------------------------
    def spans(self, since: float = -1.0, gap_s: float = 0.05) -> list[Span]:
        """The agent audio heard after ``since``: runs of frames of one pitch, silences under ``gap_s`` bridged.
        A frame within 100 Hz of the run's pitch belongs to it (the smeared last frame of a reply cut short)."""
        out: list[Span] = []
        for t, hz in self.heard:
            if hz == 0 or t < since:
                continue
            last = out[-1] if out else None
            if last is not None and abs(last.hz - hz) <= 100 and t - last.end <= gap_s + 1e-9:
                out[-1] = Span(last.hz, last.start, t + FRAME_S)
            else:
                out.append(Span(hz, t, t + FRAME_S))
        return out

    def heard_ms(self, hz: int, since: float = -1.0, until: float = math.inf) -> float:
        """How much audio of pitch ``hz`` the caller heard between ``since`` and ``until``."""
        return sum(FRAME_MS for t, h in self.heard if h == hz and since <= t < until)

    def hearing(self) -> int:
        """The pitch of the frame the caller hears now (0: silence)."""
        return self.heard[-1][1] if self.heard else 0

    def spoken_to_since(self, t: float) -> bool:
        """The caller has heard agent audio at or after ``t``."""
        return self.last_voiced is not None and self.last_voiced >= t

    def quiet_for(self, seconds: float) -> bool:
        """The caller has heard only silence for ``seconds`` (and heard something before)."""
        last = self.last_voiced
        return last is not None and self._clock() - (last + FRAME_S) >= seconds - 1e-9


# --------------------------------------------------------------------------------------------------------------
# The service


class Service:
    """The far end: each connection a fresh :class:`~bridge.emulator.session.EmulatorSession` (the emulator's own
    session logic, in the dialect's real wire shapes), reached through :class:`InMemoryRealtime`.

    ``settings[n]`` are the emulator settings of connection ``n`` (later connections use the last entry): pace,
    voice, faults. ``annotations`` (the emulator's call-script form) script the replies; one queue across
    connections, so the conversation goes on where it was.
    """

    def __init__(
        self,
        dialect: Dialect,
        trace: Trace,
        clock: Callable[[], float],
        settings: Sequence[Mapping[str, Any]] = ({},),
        annotations: Any = None,
    ) -> None:
        self.dialect = dialect
        self.sessions: list[EmulatorSession | LiveSession] = []
        self.connected_at: list[float] = []  # when each connection was opened (virtual seconds)
        self._trace = trace
        self._clock = clock
        self._settings = list(settings) or [{}]
        self._annotations = Annotations.parse(annotations)

    async def connect(self) -> InMemoryRealtime:
        n = len(self.sessions)
        values = {"seed": 100 + n, **self._settings[min(n, len(self._settings) - 1)]}
        session_type = LiveSession if isinstance(self.dialect.service, LiveService) else EmulatorSession
        emulator = session_type(
            self.dialect,
            Settings().with_values(values),
            now=self._clock(),
            wall=1_700_000_000.0,
            annotations=self._annotations,
        )
        who = f"peer{n}"

        def listen(direction: str, t: float, obj: Any) -> None:
            if direction == "in" and isinstance(obj, dict) and obj.get("type") not in APPENDS:
                self._trace.add(who, str(obj.get("type")), obj)

        emulator.record.listener = listen
        self.sessions.append(emulator)
        self.connected_at.append(self._clock())
        client = InMemoryRealtime(self.dialect, emulator)
        await client.connect()
        return client

    def received(self, n: int, *, appends: bool = False) -> list[dict[str, Any]]:
        """The client events session ``n`` received, in order (without the caller's audio unless ``appends``)."""
        return [e for e in self.sessions[n].record.received if appends or e.get("type") not in APPENDS]

    def messages(self, n: int, role: str) -> list[str]:
        """The texts of the ``role`` messages the bridge put in session ``n`` (summaries, notices, keys pressed)."""
        out = []
        for e in self.received(n):
            item = e.get("item") or {}
            if e["type"] == "conversation.item.create" and item.get("type") == "message" and item.get("role") == role:
                out += [str(c.get("text", "")) for c in item.get("content", [])]
        return out

    def instructions(self, n: int) -> list[str]:
        """The instructions of each ``response.create`` session ``n`` received ("" where it gave none)."""
        creates = [e for e in self.received(n) if e["type"] == "response.create"]
        return [str((e.get("response") or {}).get("instructions") or "") for e in creates]

    def kinds(self, n: int) -> list[str]:
        return [str(e.get("type")) for e in self.received(n)]

    def errors(self, n: int) -> list[str]:
        """The codes of the ``error`` events session ``n`` sent: what it refused of the bridge, or its own faults."""
        return [str(e["error"].get("code")) for e in self.sessions[n].record.errors]

    def sent_at(self, n: int, kind: str) -> list[float]:
        """When session ``n`` sent each event of type ``kind`` (virtual seconds)."""
        return [t for t, direction, k in self.sessions[n].record.timeline if direction == "out" and k == kind]

    def append_times(self, n: int) -> list[float]:
        """When session ``n`` received each frame of the caller's audio (virtual seconds)."""
        return [t for t, direction, k in self.sessions[n].record.timeline if direction == "in" and k in APPENDS]


# --------------------------------------------------------------------------------------------------------------
# Plans and the runner


def plan(
    *,
    greeting: str | None = "Greet the caller briefly.",
    tools: Sequence[str] = (),
    transfer_target: str | None = None,
    interrupt_response: bool = True,
) -> Dialplan:
    """A dialplan for the tests: ``tools`` by name (the built-in ones), the service's server VAD, pcm16.
    ``interrupt_response`` False: the service does not cancel an answer when the caller speaks; only the bridge does."""
    profile = AgentProfile(
        tools=tuple(BUILTIN_TOOLS[t] for t in tools), turn_detection=ServerVad(interrupt_response=interrupt_response)
    )
    return Dialplan(name="unit", match=("100",), greeting=greeting, transfer_target=transfer_target, profile=profile)


@dataclass
class Call:
    """A call under way: the test plays the caller through :attr:`phone` and waits with :meth:`until`."""

    phone: Phone
    service: Service
    trace: Trace
    clock: Callable[[], float]
    task: asyncio.Task[CallReport]
    session: CallSession | None = None  # for what reaches a call from outside it (a supervisor's action)

    async def until(self, predicate: Callable[[], bool], within_s: float = 10.0, what: str = "") -> float:
        """Wait (in virtual time, one check per 10 ms) until ``predicate()``; returns the virtual time it held."""
        deadline = self.clock() + within_s
        while not predicate():
            if self.task.done():
                self.task.result()  # the session raised: that is the failure
                raise AssertionError(f"the call ended while waiting for {what or predicate}\n{self.trace.tail()}")
            if self.clock() > deadline:
                raise AssertionError(f"not within {within_s} s (virtual): {what or predicate}\n{self.trace.tail()}")
            await asyncio.sleep(FRAME_S / 2)
        return self.clock()

    async def idle(self, seconds: float = 0.3, within_s: float = 15.0, what: str = "the agent done talking") -> float:
        """Until the agent has spoken and then been quiet for ``seconds``."""
        return await self.until(lambda: self.phone.quiet_for(seconds), within_s, what)

    async def turn(self, pcm8k: bytes, within_s: float = 15.0) -> float:
        """The caller says ``pcm8k`` (over the agent, if it is talking); returns once the agent, heard after the
        caller's last word, has been quiet for a while."""
        said = len(self.phone.said)
        self.phone.say(pcm8k)
        await self.until(lambda: len(self.phone.said) > said, within_s, "the caller's turn said")
        end = self.phone.said[-1][1]
        await self.until(lambda: self.phone.spoken_to_since(end), within_s, "an answer")
        return await self.idle(within_s=within_s)

    @property
    def now(self) -> float:
        return self.clock()


async def one_question(call: Call) -> None:
    """A scenario: the caller speaks at once, hears the answer through, and hangs up."""
    await call.turn(tone_8k(600))
    call.phone.hang_up()


@dataclass
class Result:
    report: CallReport
    phone: Phone
    service: Service
    trace: Trace


Scenario = Callable[[Call], Awaitable[None]]


def run_call(
    scenario: Scenario,
    dialect: Dialect,
    *,
    dialplan: Dialplan | None = None,
    settings: Sequence[Mapping[str, Any]] = ({},),
    annotations: Any = None,
    max_session_s: float | None = None,
    max_reconnects: int = 20,
    retry: RetryPolicy | None = None,
    limit_s: float = 60.0,
    session_options: Mapping[str, Any] | None = None,
) -> Result:
    """Run one call in a fresh virtual-time loop: ``scenario`` plays the caller; the call ends when the session
    ends it or the scenario hangs up (:meth:`Phone.hang_up`). Fails if the session outlives the scenario by
    ``limit_s`` of virtual time, or leaves a task running after ``run()`` returned."""

    async def main() -> Result:
        loop = asyncio.get_running_loop()
        trace = Trace(loop.time)
        phone = Phone(trace, loop.time)
        service = Service(dialect, trace, loop.time, settings, annotations)
        options = CallOptions(
            clock=loop.time,
            max_reconnects=max_reconnects,
            max_session_s=max_session_s,
            retry=retry,
            rng=random.Random(7),
            **(session_options or {}),
        )
        session = CallSession(phone, dialplan or plan(), dialect, service.connect, options)
        task = asyncio.create_task(session.run(), name="call-session")
        call = Call(phone, service, trace, loop.time, task, session)
        try:
            await asyncio.wait_for(scenario(call), limit_s)
            report = await asyncio.wait_for(asyncio.shield(task), limit_s)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await phone.stop()
        for _ in range(3):  # let cancelled tasks finish unwinding
            await asyncio.sleep(0)
        me = asyncio.current_task()
        leaked = [t.get_name() for t in asyncio.all_tasks() if t is not me and not t.done()]
        assert not leaked, f"tasks still running after the call ended: {leaked}"
        return Result(report, phone, service, trace)

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main())
