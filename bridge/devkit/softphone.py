"""A pjsua2 softphone for tests, QA and the demo: place a call (play a WAV, record, send DTMF, hang up) or listen.

::

    callbridge call sip:100@127.0.0.1:5060 ...       # = python -m bridge.devkit.softphone call ...
    callbridge phone listen --port 5070 ...          # = python -m bridge.devkit.softphone listen ...

    python -m bridge.devkit.softphone call sip:100@127.0.0.1:5060 --play caller.wav --record heard.wav \\
        --dtmf 12#@1.5 --hangup-after 6 --json
    python -m bridge.devkit.softphone listen --port 5070 --record agent.wav --duration 20 --calls 1 --json

As the transferee of a blind transfer (RFC 3515), it follows a REFER by itself: ``onCallTransferRequest`` hands
pjsua a new Call object (kept here), pjsua calls the target, and the WAV goes on playing into the new call
while recording goes on from it. A process holds one pjsua2 endpoint, hence at most 4 calls (the wheel's cap).

The summary (``place_call`` / ``listen`` return it; ``--json`` prints it) is a plain dict::

    {"uri", "call_id", "sip_status", "reason", "answered", "duration_s", "hangup_by", "disconnect_code",
     "received": {"ms", "active_ms", "rms_dbfs", "peak_hz", "frames"}, "dtmf_sent", "dtmf_received",
     "transfer": None | {"target", "sip_status", "answered", "received", ...}, "legs": [...]}

``sip_status`` is the final response to our INVITE (200, 486, 488, ...); ``received`` measures what this phone
heard (levels in dBFS, see :mod:`bridge.audio.analysis`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pjsua2 as pj

from bridge.audio.analysis import audio_stats
from bridge.audio.frames import FRAME_BYTES, SILENCE
from bridge.audio.wav import read_wav, write_wav
from bridge.sip.crossing import MediaPort
from bridge.sip.endpoint import SipConfig, SipEndpoint, sip_error
from bridge.sip.gateway import DTMF_DIGITS, call_op, first_audio
from bridge.sip.sipmsg import host_part, user_part

_LOG = logging.getLogger("bridge.devkit.softphone")

DtmfPlan = Sequence[tuple[str, float]]


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


@dataclass(eq=False)
class _Leg:
    """One pjsua2 call of this phone: the call we placed, one a REFER made us place, or one we answered."""

    session: _Session
    role: str  # "caller" | "transfer" | "callee"
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
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    # -- loop-thread callbacks ----------------------------------------------------------------------------

    def on_state(self, info: Any) -> None:
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

    def on_media(self) -> None:
        call = self.call
        if call is None or self.ended.is_set():
            return
        found = first_audio(call)
        if found is None:
            return
        audio, _index = found
        if self.port is None:
            self.port = self.session.phone.endpoint.acquire_port()
        self.session.on_media(self)
        try:
            self.port.connect(audio)
        except pj.Error as exc:
            _LOG.error("connecting media failed: %s", sip_error("connect", exc))

    def on_frame(self, pcm: bytes, _t_capture: float) -> None:
        self.received += pcm
        self.frames += 1
        self.session.recording += pcm

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
            call.leg = None
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
        }


class _PhoneCall(pj.Call):  # type: ignore[misc]  # pjsua2 has no stubs, so the base class is Any
    def __init__(self, account: Any, leg: _Leg, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        self.leg: _Leg | None = leg

    def onCallState(self, prm: Any) -> None:
        try:
            if self.leg is not None:
                self.leg.on_state(self.getInfo())
        except BaseException:
            _LOG.exception("onCallState")

    def onCallMediaState(self, prm: Any) -> None:
        try:
            if self.leg is not None:
                self.leg.on_media()
        except BaseException:
            _LOG.exception("onCallMediaState")

    def onDtmfDigit(self, prm: Any) -> None:
        try:
            if self.leg is not None:
                self.leg.dtmf_received += str(prm.digit)
        except BaseException:
            _LOG.exception("onDtmfDigit")

    def onCallTransferRequest(self, prm: Any) -> None:
        try:
            if self.leg is not None:
                self.leg.session.on_refer(self.leg, prm)
        except BaseException:
            _LOG.exception("onCallTransferRequest")


class _Session:
    """Everything one ``call()`` or ``listen()`` does: its legs, the shared WAV source, the recording."""

    def __init__(self, phone: Softphone, source: PcmSource | None, answer_after: float | None = None) -> None:
        self.phone = phone
        self.source = source
        self.answer_after = answer_after
        self.legs: list[_Leg] = []
        self.recording = bytearray()
        self.all_ended = asyncio.Event()
        self.first_answer = asyncio.Event()
        self.answered_at: float | None = None

    def new_leg(self, role: str, uri: str) -> _Leg:
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
            if other is not leg and other.port is not None and leg.role == "transfer":
                other.port.attach(None, other.on_frame)

    def on_refer(self, leg: _Leg, prm: Any) -> None:
        """Transferee side of RFC 3515: accept (202) and give pjsua the Call object for the new INVITE."""
        target = str(prm.dstUri)
        _LOG.info("REFER to %s", target)
        new = self.new_leg("transfer", target)
        prm.newCall = new.call

    def on_incoming(self, prm: Any, refuse: int = 0) -> None:
        leg = _Leg(self, "callee", "")
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


class Softphone:
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

    async def __aenter__(self) -> Softphone:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

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

    async def call(
        self,
        uri: str,
        *,
        play: str | Path | bytes | None = None,
        loop_play: bool = False,
        record: str | Path | None = None,
        dtmf: DtmfPlan = (),
        hangup_after: float | None = None,
        answer_timeout: float = 30.0,
        max_duration: float = 3600.0,
    ) -> dict[str, Any]:
        """Call ``uri`` and return the summary (see the module docstring). Never raises for SIP failures."""
        for digits, _at in dtmf:
            if set(digits) - DTMF_DIGITS:
                raise ValueError(f"not DTMF digits: {digits!r}")
        source = _source(play, loop_play)
        session = _Session(self, source)
        self._sessions.append(session)
        leg = session.new_leg("caller", uri)
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
        await _first_of(leg.answered, leg.ended, within=answer_timeout)
        if not leg.answered.is_set() and not leg.ended.is_set():
            leg.reason = f"no answer within {answer_timeout:g} s"
            leg.hangup()
        sent: list[str] = []
        if leg.answered.is_set():
            for digits, at in dtmf:
                loop.call_later(max(0.0, at), _send_dtmf, session, digits, sent)
            limit = hangup_after if hangup_after is not None else max_duration
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.all_ended.wait(), limit)
            session.hangup_all()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.all_ended.wait(), 5.0)
        if record is not None:
            write_wav(record, bytes(session.recording))
        return _call_summary(session, leg, "".join(sent))

    async def listen(
        self,
        *,
        record: str | Path | None = None,
        play: str | Path | bytes | None = None,
        loop_play: bool = False,
        answer_after: float = 0.0,
        duration: float = 10.0,
        calls: int | None = None,
    ) -> dict[str, Any]:
        """Answer incoming calls for ``duration`` seconds (or until ``calls`` calls have ended); record them."""
        session = _Session(self, _source(play, loop_play), answer_after=answer_after)
        self._sessions.append(session)
        self._listener = session
        deadline = time.monotonic() + duration
        try:
            while time.monotonic() < deadline:
                done = [leg for leg in session.legs if leg.ended.is_set()]
                if calls is not None and len(done) >= calls and not session.live_legs():
                    break
                await asyncio.sleep(0.05)
        finally:
            self._listener = None
            session.hangup_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.all_ended.wait(), 5.0)
        if record is not None and session.legs:
            base = Path(record)
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
    transfer = next((each for each in legs if each["role"] == "transfer"), None)
    first = legs[0]
    last = session.legs[-1]
    return {
        "uri": leg.uri,
        "call_id": leg.call_id,
        "sip_status": leg.sip_status,
        "reason": leg.reason,
        "answered": start is not None,
        "duration_s": round(end - start, 3) if start is not None else 0.0,
        "hangup_by": "local" if last.local_hangup else ("remote" if last.ended_at is not None else None),
        "disconnect_code": first["disconnect_code"],
        "received": stats,
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


def _default_host(uri: str) -> str:
    """Bind to loopback for a loopback target (tests), else to all interfaces."""
    host = host_part(uri).split(":", 1)[0].strip("[]")
    try:
        return "127.0.0.1" if ipaddress.ip_address(host).is_loopback else "0.0.0.0"
    except ValueError:
        return "127.0.0.1" if host == "localhost" else "0.0.0.0"


# -- public coroutine API ----------------------------------------------------------------------------------


async def place_call(
    uri: str,
    play: str | Path | bytes | None = None,
    record: str | Path | None = None,
    dtmf: DtmfPlan = (),
    hangup_after: float | None = None,
    local_port: int = 0,
    timeout: float = 30.0,  # noqa: ASYNC109 (bounds only the ringing phase, as the CLI's --timeout does)
    *,
    loop_play: bool = False,
    host: str | None = None,
    log_level: int = 0,
    auth: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Start an endpoint, place one call, close the endpoint, return the summary. One per process at a time.

    ``auth`` (user, password) answers a digest challenge (401) from the called side."""
    config = SipConfig(
        host=host or _default_host(uri),
        port=local_port,
        transports=("udp",),
        user="softphone",
        user_agent="callbridge-softphone",
        pjsua_log_level=log_level,
    )
    async with Softphone(config, auth=auth) as phone:
        return await phone.call(
            uri,
            play=play,
            loop_play=loop_play,
            record=record,
            dtmf=dtmf,
            hangup_after=hangup_after,
            answer_timeout=timeout,
        )


async def listen(
    port: int,
    record: str | Path | None = None,
    answer_after: float = 0.0,
    duration: float = 10.0,
    *,
    play: str | Path | bytes | None = None,
    loop_play: bool = False,
    calls: int | None = None,
    host: str = "127.0.0.1",
    log_level: int = 0,
) -> dict[str, Any]:
    """Answer calls on ``host:port`` (UDP and TCP) for ``duration`` s or until ``calls`` calls have ended."""
    config = SipConfig(
        host=host,
        port=port,
        transports=("udp", "tcp"),
        user="agent",
        user_agent="callbridge-softphone",
        pjsua_log_level=log_level,
    )
    async with Softphone(config) as phone:
        return await phone.listen(
            record=record, play=play, loop_play=loop_play, answer_after=answer_after, duration=duration, calls=calls
        )


# -- command line ------------------------------------------------------------------------------------------


def parse_auth(text: str) -> tuple[str, str]:
    """``"trunk1:secret"`` -> ``("trunk1", "secret")`` (the password may contain colons)."""
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise argparse.ArgumentTypeError("expected USER:PASSWORD")
    return user, password


def parse_dtmf(text: str) -> tuple[str, float]:
    """``"12#@1.5"`` -> ``("12#", 1.5)``: digits and seconds after the answer (``@`` part optional: 1 s)."""
    digits, _, at = text.partition("@")
    if not digits or set(digits) - DTMF_DIGITS:
        raise argparse.ArgumentTypeError(f"bad DTMF digits in {text!r} (0-9, *, #, A-D)")
    try:
        seconds = float(at) if at else 1.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad time in {text!r}: expected DIGITS@SECONDS") from None
    return digits, seconds


def add_call_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("uri", help="SIP URI to call, e.g. sip:100@127.0.0.1:5060")
    parser.add_argument("--play", metavar="WAV", help="8 kHz mono PCM16 or G.711 WAV to send")
    parser.add_argument("--loop", action="store_true", help="repeat --play until the call ends")
    parser.add_argument("--record", metavar="WAV", help="write what this phone hears (8 kHz PCM16)")
    parser.add_argument(
        "--dtmf",
        metavar="DIGITS@SECONDS",
        type=parse_dtmf,
        action="append",
        default=[],
        help="send RFC 4733 digits this many seconds after the answer (repeatable)",
    )
    parser.add_argument("--hangup-after", metavar="S", type=float, help="hang up S seconds after the answer")
    parser.add_argument("--timeout", metavar="S", type=float, default=30.0, help="give up if not answered")
    parser.add_argument("--local-port", type=int, default=0, help="local SIP port (default: any)")
    parser.add_argument("--host", help="local bind address (default: loopback for loopback targets)")
    parser.add_argument("--log-level", type=int, default=0, help="pjsua log level 0-6 (to stderr)")
    parser.add_argument(
        "--auth",
        metavar="USER:PASSWORD",
        type=parse_auth,
        help="answer a digest challenge (401) with these credentials (default: $CALLBRIDGE_SIP_AUTH)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def add_listen_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=5070, help="SIP port to listen on (UDP and TCP)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address")
    parser.add_argument("--record", metavar="WAV", help="record each call (2nd call: NAME-1.wav, ...)")
    parser.add_argument("--play", metavar="WAV", help="WAV to play into answered calls")
    parser.add_argument("--loop", action="store_true", help="repeat --play")
    parser.add_argument("--answer-after", metavar="S", type=float, default=0.0, help="ring this long first")
    parser.add_argument("--duration", metavar="S", type=float, default=60.0, help="stop listening after S")
    parser.add_argument("--calls", type=int, help="stop after this many calls have ended")
    parser.add_argument("--log-level", type=int, default=0, help="pjsua log level 0-6 (to stderr)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run_call(args: argparse.Namespace) -> int:
    """Exit status: 0 answered, 2 not answered (rejected, failed, timed out)."""
    summary = asyncio.run(
        place_call(
            args.uri,
            play=args.play,
            record=args.record,
            dtmf=args.dtmf,
            hangup_after=args.hangup_after,
            local_port=args.local_port,
            timeout=args.timeout,
            loop_play=args.loop,
            host=args.host,
            log_level=args.log_level,
            auth=args.auth or _env_auth(),
        )
    )
    _print(summary, args.json)
    return 0 if summary["answered"] else 2


def _env_auth() -> tuple[str, str] | None:
    """``CALLBRIDGE_SIP_AUTH=USER:PASSWORD``: keeps the password off the command line (and out of ``ps``)."""
    text = os.environ.get("CALLBRIDGE_SIP_AUTH", "")
    return parse_auth(text) if text else None


def run_listen(args: argparse.Namespace) -> int:
    summary = asyncio.run(
        listen(
            args.port,
            record=args.record,
            answer_after=args.answer_after,
            duration=args.duration,
            play=args.play,
            loop_play=args.loop,
            calls=args.calls,
            host=args.host,
            log_level=args.log_level,
        )
    )
    _print(summary, args.json)
    return 0


def _print(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary), flush=True)
        return
    calls = summary.get("calls", [summary])
    for item in calls:
        received = item["received"]
        print(
            f"{item.get('uri', '')} status={item['sip_status']} {item['reason']} answered={item['answered']} "
            f"duration={item['duration_s']}s heard={received['ms']}ms rms={received['rms_dbfs']}dBFS "
            f"peak={received['peak_hz']}Hz",
            flush=True,
        )


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """``call`` and ``listen`` subcommands (``python -m bridge.devkit.softphone``)."""
    parser = parser or argparse.ArgumentParser(
        prog="python -m bridge.devkit.softphone", description="pjsua2 softphone for tests, QA and demos"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    call = sub.add_parser("call", help="place a call")
    add_call_arguments(call)
    call.set_defaults(run=run_call)
    lis = sub.add_parser("listen", help="answer and record incoming calls")
    add_listen_arguments(lis)
    lis.set_defaults(run=run_listen)
    return parser


def _configure_logging(level: int) -> None:
    """pjsua chatter only when asked for; no-op if the caller (``callbridge``) configured logging already."""
    logging.basicConfig(
        level=logging.INFO if level else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


def call_main(argv: Sequence[str] | None = None) -> int:
    """``callbridge call URI [--play WAV] [--record WAV] [--dtmf DIGITS@SECONDS] [--hangup-after S] [--json]``."""
    parser = argparse.ArgumentParser(prog="callbridge call", description="place a call with the pjsua2 softphone")
    add_call_arguments(parser)
    args = parser.parse_args(argv)
    _configure_logging(args.log_level)
    return run_call(args)


def phone_main(argv: Sequence[str] | None = None) -> int:
    """``callbridge phone listen --port P [--record WAV] [--answer-after S] [--duration S] [--calls N] [--json]``."""
    parser = argparse.ArgumentParser(prog="callbridge phone", description="pjsua2 softphone utilities")
    sub = parser.add_subparsers(dest="command", required=True)
    lis = sub.add_parser("listen", help="answer and record incoming calls (e.g. the agent of a transfer)")
    add_listen_arguments(lis)
    args = parser.parse_args(argv)
    _configure_logging(args.log_level)
    return run_listen(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.log_level)
    run: Any = args.run
    return int(run(args))


if __name__ == "__main__":
    sys.exit(main())
