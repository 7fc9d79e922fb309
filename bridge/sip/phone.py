"""A pjsua2 user agent that places and takes test calls: plays a WAV, records what it hears, sends DTMF, hangs up.

:class:`Softphone` is one process's phone (one pjsua2 endpoint and a local account); ``bridge.devkit.softphone``
is its command line (``callbridge call``, ``callbridge phone listen``) for tests, QA and the demo.

As the transferee of a blind transfer (RFC 3515), it follows a REFER by itself: ``onCallTransferRequest`` hands
pjsua a new Call object (kept here), pjsua calls the target, and the WAV goes on playing into the new call
while recording goes on from it. A process holds one pjsua2 endpoint, hence at most 4 calls (the wheel's cap).

The summary (:meth:`Softphone.call` and :meth:`Softphone.listen` return it) is a plain dict::

    {"uri", "call_id", "sip_status", "reason", "answered", "duration_s", "hangup_by", "disconnect_code",
     "received": {"ms", "active_ms", "rms_dbfs", "peak_hz", "frames"}, "heard_spans": [[start_ms, end_ms, dbfs], ...],
     "dtmf_sent", "dtmf_received",
     "transfer": None | {"target", "sip_status", "answered", "received", ...}, "legs": [...]}

``sip_status`` is the final response to our INVITE (200, 486, 488, ...); ``received`` measures what this phone
heard (levels in dBFS, see :mod:`bridge.audio.analysis`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pjsua2 as pj

from bridge.audio.analysis import audio_stats, heard_spans
from bridge.audio.frames import FRAME_BYTES, SILENCE
from bridge.audio.line import EchoingLine, LineEcho
from bridge.audio.wav import read_wav, write_wav
from bridge.events import DtmfSource
from bridge.runtime.service import Service
from bridge.sip.crossing import MediaPort
from bridge.sip.endpoint import SipEndpoint, for_handle, sip_error
from bridge.sip.legs import DTMF_DIGITS, LegCall, call_op, first_audio
from bridge.sip.sipconfig import SipConfig
from bridge.sip.sipmsg import user_part
from bridge.sip.transports import secure_media

_LOG = logging.getLogger("bridge.sip.phone")

DtmfPlan = Sequence[tuple[str, float]]  # (digits, seconds after the answer)


@dataclass(frozen=True, slots=True)
class CallPlan:
    """What one placed call does (:meth:`Softphone.call`): play ``play`` (a WAV path or PCM16 bytes; in a loop with
    ``loop_play``), record what it hears to ``record``, send ``dtmf``, hang up ``hangup_after`` s after the answer
    (else when the far end does, at most ``max_duration`` s), give up unanswered after ``answer_timeout`` s.
    ``echo``: the line returns what this phone hears, that much down and that late (:class:`EchoingSource`)."""

    play: str | Path | bytes | None = None
    loop_play: bool = False
    record: str | Path | None = None
    dtmf: DtmfPlan = ()
    hangup_after: float | None = None
    answer_timeout: float = 30.0
    max_duration: float = 3600.0
    echo: LineEcho | None = None


@dataclass(frozen=True, slots=True)
class ListenPlan:
    """What a listening phone does (:meth:`Softphone.listen`): answer each call ``answer_after`` s after it rings,
    play ``play`` into it, record each call (the n-th after the first to ``NAME-n.wav``); stop after ``duration``
    s or once ``calls`` calls have ended."""

    record: str | Path | None = None
    play: str | Path | bytes | None = None
    loop_play: bool = False
    answer_after: float = 0.0
    duration: float = 10.0
    calls: int | None = None


class PcmSource:
    """Plays PCM16 8 kHz audio once (then silence) or in a loop. ``pop_frame`` runs on the clock thread."""

    def __init__(self, pcm: bytes, loop: bool = False) -> None:
        usable = pcm[: len(pcm) - len(pcm) % 2]
        self._frames = [
            usable[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\0") for i in range(0, len(usable), FRAME_BYTES)
        ]
        self._loop = loop and bool(self._frames)
        self._next = 0
        self.played = 0

    @property
    def finished(self) -> bool:
        return not self._loop and self._next >= len(self._frames)

    def pop_frame(self) -> bytes:
        index = self._next
        frames = self._frames
        if index >= len(frames):
            if not self._loop:
                return SILENCE
            index = 0
        self._next = index + 1
        self.played += 1
        return frames[index]


class EchoingSource:
    """A phone whose line returns what it hears (a hybrid, a speakerphone): each frame it sends is its own (the
    WAV, or silence) plus a frame it heard, through an :class:`~bridge.audio.line.EchoingLine`. Frames are paired
    by count, not by arrival: the n-th frame sent carries the echo of the (n - :data:`DEPTH`)-th frame heard, so
    the echo's delay stays constant (the line's plus DEPTH frames) however the loop bunches them. ``heard`` runs
    on the loop, ``pop_frame`` where the media port pulls (a dict item set and get between them)."""

    DEPTH = 6  # frames: more than the loop ever bunches, so the frame to return is always there

    def __init__(self, source: PcmSource | None, echo: LineEcho) -> None:
        self._source = source
        self._line = EchoingLine(echo)
        self._heard: dict[int, bytes] = {}
        self._received = 0
        self._sent = 0

    @property
    def finished(self) -> bool:
        return self._source is None or self._source.finished

    def heard(self, pcm: bytes) -> None:
        """What the phone heard, in any number of whole frames (the port may hand over several at once)."""
        for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
            self._heard[self._received] = pcm[i : i + FRAME_BYTES]
            self._heard.pop(self._received - 500, None)  # 10 s kept at most
            self._received += 1

    def pop_frame(self) -> bytes:
        said = self._source.pop_frame() if self._source is not None else SILENCE
        back = self._heard.get(self._sent - self.DEPTH, SILENCE)
        self._sent += 1
        return self._line.step(back, said)


class LegRole(enum.StrEnum):
    """Which of a phone's calls a leg is: the one it placed, one a REFER made it place, or one it answered."""

    CALLER = "caller"
    TRANSFER = "transfer"
    CALLEE = "callee"


@dataclass(eq=False)
class _Leg:
    """One pjsua2 call of this phone: the call we placed, one a REFER made us place, or one we answered."""

    session: _Session
    role: LegRole
    uri: str
    call: _PhoneCall | None = None
    port: MediaPort | None = None
    call_id: str = ""
    remote: str = ""
    sip_status: int | None = None
    reason: str = ""
    answered_at: float | None = None
    ended_at: float | None = None
    disconnect_code: int | None = None
    local_hangup: bool = False
    received: bytearray = field(default_factory=bytearray)
    frames: int = 0
    dtmf_received: str = ""
    srtp: bool = False  # the audio ran SRTP (RTP/SAVP)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    # -- loop-thread callbacks ----------------------------------------------------------------------------

    def _on_state(self, info: Any, received: str | None) -> None:
        self.call_id = self.call_id or str(info.callIdString)
        self.remote = self.remote or str(info.remoteUri)
        state = info.state
        if state in (pj.PJSIP_INV_STATE_CONNECTING, pj.PJSIP_INV_STATE_CONFIRMED):
            if self.answered_at is None:
                self.answered_at = time.monotonic()
                self.sip_status = int(info.lastStatusCode) or 200
                self.reason = str(info.lastReason)
                self.answered.set()
                self.session.on_answered(self)
        elif state == pj.PJSIP_INV_STATE_DISCONNECTED and not self.ended.is_set():
            self.ended_at = time.monotonic()
            self.disconnect_code = int(info.lastStatusCode)
            if self.answered_at is None:
                self.sip_status = int(info.lastStatusCode)
                self.reason = self.reason or str(info.lastReason)  # keep "no answer within ..." if we gave up
            self.ended.set()
            asyncio.get_running_loop().call_soon(self.release)
            self.session.on_ended(self)

    def _on_media_state(self) -> None:
        call = self.call
        if call is None or self.ended.is_set():
            return
        found = first_audio(call)
        if found is None:
            return
        audio, index = found
        with contextlib.suppress(pj.Error):
            self.srtp = secure_media(call, index)
        if self.port is None:
            self.port = self.session.phone.endpoint.acquire_port()
        self.session.on_media(self)
        try:
            self.port.connect(audio)
        except pj.Error as exc:
            _LOG.error("connecting media failed: %s", sip_error("connect", exc))

    def _on_dtmf(self, digit: str, source: DtmfSource) -> None:
        self.dtmf_received += digit

    def on_frame(self, pcm: bytes, _t_capture: float) -> None:
        self.received += pcm
        self.frames += 1
        self.session.recording += pcm
        if isinstance(self.session.source, EchoingSource):
            self.session.source.heard(pcm)

    def hangup(self, status: int = 0) -> None:
        if self.call is None or self.ended.is_set():
            return
        self.local_hangup = True
        try:
            self.call.hangup(call_op(status))
        except pj.Error as exc:
            _LOG.debug("hangup: %s", sip_error("hangup", exc))

    def release(self) -> None:
        call, self.call = self.call, None
        if call is not None:
            call.handle = None
        port, self.port = self.port, None
        if port is not None:
            self.session.phone.endpoint.release_port(port)

    def summary(self) -> dict[str, Any]:
        end = self.ended_at or time.monotonic()
        stats = dict(audio_stats(bytes(self.received)))
        stats["frames"] = self.frames
        return {
            "role": self.role,
            "uri": self.uri,
            "call_id": self.call_id,
            "remote": user_part(self.remote) or self.remote,
            "sip_status": self.sip_status,
            "reason": self.reason,
            "answered": self.answered_at is not None,
            "duration_s": round(end - self.answered_at, 3) if self.answered_at is not None else 0.0,
            "hangup_by": None if self.ended_at is None else ("local" if self.local_hangup else "remote"),
            "disconnect_code": self.disconnect_code,
            "received": stats,
            "dtmf_received": self.dtmf_received,
            "srtp": self.srtp,
        }


class _PhoneCall(LegCall):
    """A test phone's call: as the transferee of a blind transfer it follows a REFER (RFC 3515)."""

    def __init__(self, account: Any, leg: _Leg, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        self.handle = leg

    @for_handle
    def onCallTransferRequest(self, leg: _Leg, prm: Any) -> None:
        leg.session.on_refer(leg, prm)


class _Session:
    """Everything one ``call()`` or ``listen()`` does: its legs, the shared WAV source, the recording."""

    def __init__(
        self, phone: Softphone, source: PcmSource | EchoingSource | None, answer_after: float | None = None
    ) -> None:
        self.phone = phone
        self.source = source
        self.answer_after = answer_after
        self.legs: list[_Leg] = []
        self.recording = bytearray()
        self.all_ended = asyncio.Event()
        self.first_answer = asyncio.Event()
        self.answered_at: float | None = None

    def new_leg(self, role: LegRole, uri: str) -> _Leg:
        leg = _Leg(self, role, uri)
        leg.call = _PhoneCall(self.phone.account, leg)
        self.legs.append(leg)
        self.all_ended.clear()
        return leg

    def on_answered(self, leg: _Leg) -> None:
        if self.answered_at is None:
            self.answered_at = leg.answered_at
            self.first_answer.set()

    def on_ended(self, leg: _Leg) -> None:
        if all(other.ended.is_set() for other in self.legs):
            self.all_ended.set()

    def on_media(self, leg: _Leg) -> None:
        """The newest leg with media gets the WAV; older ones (a transferred-away call) keep recording only."""
        assert leg.port is not None
        leg.port.attach(self.source, leg.on_frame)
        for other in self.legs:
            if other is not leg and other.port is not None and leg.role is LegRole.TRANSFER:
                other.port.attach(None, other.on_frame)

    def on_refer(self, leg: _Leg, prm: Any) -> None:
        """Transferee side of RFC 3515: accept (202) and give pjsua the Call object for the new INVITE."""
        target = str(prm.dstUri)
        _LOG.info("REFER to %s", target)
        new = self.new_leg(LegRole.TRANSFER, target)
        prm.newCall = new.call

    def on_incoming(self, prm: Any, refuse: int = 0) -> None:
        leg = _Leg(self, LegRole.CALLEE, "")
        leg.call = _PhoneCall(self.phone.account, leg, prm.callId)
        self.legs.append(leg)
        self.all_ended.clear()
        info = leg.call.getInfo()
        leg.call_id = str(info.callIdString)
        leg.remote = str(info.remoteUri)
        leg.uri = str(info.localUri)
        if refuse:
            leg.hangup(refuse)
            return
        try:
            leg.call.answer(call_op(180))
        except pj.Error as exc:
            _LOG.warning("180: %s", sip_error("ringing", exc))
        delay = self.answer_after or 0.0
        asyncio.get_running_loop().call_later(delay, self._answer, leg)

    def _answer(self, leg: _Leg) -> None:
        if leg.call is None or leg.ended.is_set():
            return
        try:
            leg.call.answer(call_op(200))
        except pj.Error as exc:
            _LOG.warning("answer: %s", sip_error("answer", exc))

    def live_legs(self) -> list[_Leg]:
        return [leg for leg in self.legs if not leg.ended.is_set()]

    def hangup_all(self) -> None:
        for leg in self.live_legs():
            leg.hangup()


class Softphone(Service):
    """One process's softphone: an endpoint plus a local account. Use as ``async with Softphone(...) as phone``.

    ``auth`` (user, password) answers digest challenges of the called side (a gateway with ``auth_users``).
    """

    def __init__(self, config: SipConfig | None = None, auth: tuple[str, str] | None = None) -> None:
        self.config = config or SipConfig(
            port=0, transports=("udp",), user="softphone", user_agent="callbridge-softphone", pjsua_log_level=0
        )
        self.auth = auth
        self.endpoint = SipEndpoint(self.config)
        self.account: Any = None
        self._sessions: list[_Session] = []
        self._listener: _Session | None = None

    async def start(self) -> None:
        self.endpoint.start()
        self.account = self.endpoint.create_account(self._incoming, self.auth)
        self.endpoint.on_release(self._drop_all)

    async def close(self) -> None:
        await self.endpoint.close()

    @property
    def sip_port(self) -> int:
        return self.endpoint.sip_port

    def _incoming(self, prm: Any) -> None:
        if self._listener is not None:
            self._listener.on_incoming(prm)
            return
        # Not listening: refuse, but keep the Call object until it has ended (a dropped Call hangs up with 603).
        refused = _Session(self, None)
        self._sessions.append(refused)
        refused.on_incoming(prm, refuse=486)

    def _drop_all(self) -> None:
        for session in self._sessions:
            for leg in session.legs:
                leg.release()
        self._sessions.clear()
        self._listener = None
        self.account = None

    async def call(self, uri: str, plan: CallPlan = CallPlan()) -> dict[str, Any]:
        """Call ``uri`` as ``plan`` says and return the summary (see the module docstring). Never raises for SIP
        failures."""
        for digits, _at in plan.dtmf:
            if set(digits) - DTMF_DIGITS:
                raise ValueError(f"not DTMF digits: {digits!r}")
        plain = _source(plan.play, plan.loop_play)
        session = _Session(self, plain if plan.echo is None else EchoingSource(plain, plan.echo))
        self._sessions.append(session)
        leg = session.new_leg(LegRole.CALLER, uri)
        assert leg.call is not None
        self.endpoint.note_call_setup()
        try:
            leg.call.makeCall(uri, call_op())
        except pj.Error as exc:
            error = sip_error("makeCall", exc)
            leg.reason = error.reason
            leg.ended.set()
            leg.release()
            return _call_summary(session, leg, "")
        loop = asyncio.get_running_loop()
        await _first_of(leg.answered, leg.ended, within=plan.answer_timeout)
        if not leg.answered.is_set() and not leg.ended.is_set():
            leg.reason = f"no answer within {plan.answer_timeout:g} s"
            leg.hangup()
        sent: list[str] = []
        if leg.answered.is_set():
            for digits, at in plan.dtmf:
                loop.call_later(max(0.0, at), _send_dtmf, session, digits, sent)
            limit = plan.hangup_after if plan.hangup_after is not None else plan.max_duration
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.all_ended.wait(), limit)
            session.hangup_all()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.all_ended.wait(), 5.0)
        if plan.record is not None:
            write_wav(plan.record, bytes(session.recording))
        return _call_summary(session, leg, "".join(sent))

    async def listen(self, plan: ListenPlan = ListenPlan()) -> dict[str, Any]:
        """Answer incoming calls as ``plan`` says; record them. Returns ``{"port", "calls": [leg summaries]}``."""
        session = _Session(self, _source(plan.play, plan.loop_play), answer_after=plan.answer_after)
        self._sessions.append(session)
        self._listener = session
        deadline = time.monotonic() + plan.duration
        try:
            while time.monotonic() < deadline:
                done = [leg for leg in session.legs if leg.ended.is_set()]
                if plan.calls is not None and len(done) >= plan.calls and not session.live_legs():
                    break
                await asyncio.sleep(0.05)
        finally:
            self._listener = None
            session.hangup_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.all_ended.wait(), 5.0)
        if plan.record is not None and session.legs:
            base = Path(plan.record)
            for number, leg in enumerate(session.legs):
                path = base if number == 0 else base.with_name(f"{base.stem}-{number}{base.suffix}")
                write_wav(path, bytes(leg.received))
        return {"port": self.sip_port, "calls": [leg.summary() for leg in session.legs]}


def _source(play: str | Path | bytes | None, loop_play: bool) -> PcmSource | None:
    if play is None:
        return None
    pcm = play if isinstance(play, bytes) else read_wav(play)
    return PcmSource(pcm, loop=loop_play)


def _send_dtmf(session: _Session, digits: str, sent: list[str]) -> None:
    live = session.live_legs()
    if not live or live[-1].call is None or live[-1].answered_at is None:
        return
    try:
        live[-1].call.dialDtmf(digits)  # RFC 4733 telephone-events
        sent.append(digits)
    except pj.Error as exc:
        _LOG.warning("dialDtmf(%s): %s", digits, sip_error("dialDtmf", exc))


async def _first_of(*events: asyncio.Event, within: float) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def _call_summary(session: _Session, leg: _Leg, dtmf_sent: str) -> dict[str, Any]:
    legs = [each.summary() for each in session.legs]
    start = session.answered_at
    end = max((each.ended_at or time.monotonic()) for each in session.legs)
    stats = dict(audio_stats(bytes(session.recording)))
    stats["frames"] = sum(each.frames for each in session.legs)
    roles = [each.role for each in session.legs]
    transfer = legs[roles.index(LegRole.TRANSFER)] if LegRole.TRANSFER in roles else None
    first = legs[0]
    last = session.legs[-1]
    return {
        "uri": leg.uri,
        "call_id": leg.call_id,
        "sip_status": leg.sip_status,
        "reason": leg.reason,
        "answered": start is not None,
        "srtp": leg.srtp,  # the audio ran SRTP (RTP/SAVP)
        "duration_s": round(end - start, 3) if start is not None else 0.0,
        "hangup_by": "local" if last.local_hangup else ("remote" if last.ended_at is not None else None),
        "disconnect_code": first["disconnect_code"],
        "received": stats,
        "heard_spans": [list(span) for span in heard_spans(bytes(session.recording))],
        "dtmf_sent": dtmf_sent,
        "dtmf_received": "".join(each.dtmf_received for each in session.legs),
        "transfer": (
            {
                "target": transfer["uri"],
                "sip_status": transfer["sip_status"],
                "answered": transfer["answered"],
                "duration_s": transfer["duration_s"],
                "received": transfer["received"],
            }
            if transfer is not None
            else None
        ),
        "legs": legs,
    }
