"""The pjsua2 endpoint of one process: configuration, start-up, the event pump, the port pool, and shutdown.

A pjsua2 ``Endpoint`` is a per-process singleton. :class:`SipEndpoint` owns it and runs it the way
docs/pjsip.md found safe:

* ``threadCnt=0`` + ``mainThreadOnly=True``, and ``libHandleEvents(0)`` called on every beat of the loop's
  metronome (:mod:`bridge.runtime.metronome`, 20 ms, or the media beat of ``media_beat_frames`` ticks with native
  ports, 60 ms by default), and after SIP traffic every ``busy_poll_interval_s``, 5 ms, for as long as polls find
  more (bursts are read before the socket buffer overflows), backing off to the beat when they find none
  (:class:`BurstPolls`): every SIP callback (incoming call, call state, DTMF, transfer)
  runs on the event loop thread. With native media ports the beat rides on the media clock's eventfd wake-up,
  so the SIP poll and every call's tick cost no wake-up of their own. Audio does not wait for the poll: the
  clock thread wakes the loop when a tick's first frame arrives (a caller frame the loop must send) or a
  playout ring runs low (once per beat). ``libHandleEvents(0)``
  costs about 100 µs a call here; polled every 5 ms for as long as calls were up, it was 2 % of a core per busy
  worker.
* No sound device (``setNullDev``): the conference bridge is clocked internally at 8 kHz, 20 ms.
* Codecs: PCMU and PCMA (RFC 3551 payload types 0 and 8), and G.722 (payload type 9, 16 kHz: the conference bridge
  resamples its stream to the bridge's 8 kHz and back) for a caller that offers nothing else. pjsua answers an offer
  with none of them with ``488 Not Acceptable Here`` by itself, before any application callback.
* Shutdown without SIGABRT: hang up, pump, drop every pjsua2 object we hold, clear ``sys.last_traceback``,
  ``gc.collect()``, shut the accounts down, ``libDestroy()``.

The call cap is read back from the library after ``libInit`` (``pjsua_call_get_max_count()``, called through
ctypes on the already-loaded ``_pjsua2`` extension): this wheel cuts any ``maxCalls`` above 4 to 4 silently.

What the network can do to the process is bounded here too: :class:`SetupBudget` paces SIP intake so
that a burst of short calls or refused INVITEs cannot exhaust pjmedia's 64-socket table (which aborts the
process), and :class:`LogLimiter` cuts and rate-limits pjsip's log lines (pjsip logs each dropped packet with
its content). Access settings (``allowed_sources``, ``auth_*``) are validated when a :class:`SipConfig` is built.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import functools
import gc
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import pjsua2 as pj
from pjsua2 import _pjsua2  # the SWIG module's C functions: the poll calls one without its Python wrapper

from bridge.audio.frames import FRAME_MS, SAMPLE_RATE
from bridge.audio.frames import PERIOD_S as TICK_S
from bridge.errors import BridgeError
from bridge.privacy.masking import mask_number, mask_sip_numbers
from bridge.runtime.metronome import for_loop as metronome_for
from bridge.runtime.sched import realtime_priority
from bridge.sip.cport import PJSUA, NativeHub, NativePort, native_ports
from bridge.sip.crossing import FrameCrossing, MediaPort
from bridge.sip.media import BridgePort
from bridge.sip.rtpguard import random_rtp_start
from bridge.sip.sipconfig import DOCUMENTED_CALL_CAP, JitterBuffer, MediaPortKind, SipConfig
from bridge.sip.sipmsg import SIP_CALL_ID_CHARS, Transport, clean_text, parse_request_head, user_part
from bridge.sip.transports import TRANSPORT_TYPES, account_config, sip_listen_port, transport_config

_LOG = logging.getLogger("bridge.sip")
_PJ_LOG = logging.getLogger("bridge.sip.pjsua")

# first is preferred when we offer. G.722 last: the bridge runs at 8 kHz (the conference bridge resamples a G.722
# stream's 16 kHz to it and back), so it buys the caller no bandwidth, only a caller that offers nothing else
ALLOWED_CODECS = ("PCMU/8000/1", "PCMA/8000/1", "G722/16000/1")
# a refused caller's number in the log keeps its last digits, as a dialplan's default privacy does
# (bridge.dialplan.Privacy.caller_visible_digits): no plan has taken the call
REFUSED_CALLER_VISIBLE_DIGITS = 4


class SipError(BridgeError):
    """A pjsua2 operation failed. ``status`` is pjlib's status code, ``reason`` its text; never a pjsua2 type."""

    def __init__(self, operation: str, reason: str, status: int = 0) -> None:
        super().__init__(f"{operation}: {reason}")
        self.operation = operation
        self.reason = reason
        self.status = status


class CallGone(SipError):
    """The call already ended (or never existed in pjsua); the operation was not performed."""


_Obj = TypeVar("_Obj")  # a pjsua2 object (Call, Account) whose callback is wrapped


def pjsua_callback(method: Callable[[_Obj, Any], None]) -> Callable[[_Obj, Any], None]:
    """A pjsua2 callback (pjsua calls it from C, on the loop thread): whatever it raises is logged here, never handed
    back to pjsua."""

    @functools.wraps(method)
    def guarded(obj: _Obj, prm: Any) -> None:
        try:
            method(obj, prm)
        except BaseException:
            _LOG.exception("%s.%s", type(obj).__name__, method.__name__)

    return guarded


def for_handle(method: Callable[[_Obj, Any, Any], None]) -> Callable[[_Obj, Any], None]:
    """A pjsua2 call's callback, run for the object the call forwards to (its ``handle``) while it has one; guarded
    as :func:`pjsua_callback`."""

    @functools.wraps(method)
    def forward(call: _Obj, prm: Any) -> None:
        handle = getattr(call, "handle", None)
        if handle is not None:
            method(call, handle, prm)

    return pjsua_callback(forward)


def sip_error(operation: str, exc: BaseException) -> SipError:
    """Turn a ``pj.Error`` (or anything) into a :class:`SipError` with plain Python fields."""
    reason = str(getattr(exc, "reason", "") or getattr(exc, "info", lambda: "")() or exc)
    status = int(getattr(exc, "status", 0) or 0)
    return SipError(operation, reason, status)


_NATIVE = PJSUA


def _native_uint(name: str) -> int | None:
    func = getattr(_NATIVE, name, None) if _NATIVE is not None else None
    if func is None:
        return None
    func.restype = ctypes.c_uint
    func.argtypes = []
    return int(func())


def _set_pjlib_log_level(level: int) -> None:
    """Quiet pjlib before ``libCreate`` (which logs to stdout before any LogConfig applies)."""
    func = getattr(_NATIVE, "pj_log_set_level", None) if _NATIVE is not None else None
    if func is not None:
        func.argtypes = [ctypes.c_int]
        func(level)


class LogLimiter:
    """Bounds what the network can make us log: pjsip logs every packet it drops *with the packet*, so a flood of
    garbage datagrams would become a flood of log lines (60 KB each) and stall the process on a slow log sink.

    Each line is cut to ``max_chars``; beyond ``per_second`` lines in a second (token bucket, ``burst`` deep) lines
    are dropped and counted, and the next line that passes says how many were suppressed. Thread-safe.
    """

    def __init__(
        self,
        per_second: float = 50.0,
        burst: float = 200.0,
        max_chars: int = 2000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_second = per_second
        self.burst = burst
        self.max_chars = max_chars
        self.suppressed = 0  # total, for tests and metrics
        self._pending = 0  # suppressed since the last line that passed
        self._tokens = burst
        self._last = clock()
        self._clock = clock
        self._lock = threading.Lock()

    def admit(self, text: str) -> str | None:
        """The line to log (cut, with a note of what was suppressed before it), or None to drop it."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.per_second)
            self._last = now
            if self._tokens < 1.0:
                self.suppressed += 1
                self._pending += 1
                return None
            self._tokens -= 1.0
            pending, self._pending = self._pending, 0
        if len(text) > self.max_chars:
            text = f"{text[: self.max_chars]}... [{len(text) - self.max_chars} more chars]"
        if pending:
            text = f"[{pending} pjsip log lines suppressed] {text}"
        return text


class _LogWriter(pj.LogWriter):  # type: ignore[misc]  # pjsua2 has no stubs, so the base class is Any
    """pjlib log lines -> ``logging`` (any thread; ``logging`` is thread-safe), through a :class:`LogLimiter`."""

    # pjlib level 1 ("error") also reports expected refusals (e.g. the 488 of a codec mismatch): a warning here.
    _LEVELS: ClassVar[dict[int, int]] = {0: logging.ERROR, 1: logging.WARNING, 2: logging.WARNING, 3: logging.INFO}

    def __init__(self, limiter: LogLimiter) -> None:
        super().__init__()
        self.limiter = limiter

    def write(self, entry: Any) -> None:
        with contextlib.suppress(BaseException):  # nothing may escape into SWIG
            text = self.limiter.admit(str(entry.msg).rstrip())
            if text is not None:  # a packet dump: cut, its numbers masked (the formatter escapes its newlines)
                text = mask_sip_numbers(text, REFUSED_CALLER_VISIBLE_DIGITS)
                _PJ_LOG.log(self._LEVELS.get(int(entry.level), logging.DEBUG), "%s", text)


@dataclass(frozen=True, slots=True)
class RejectedCall:
    """An INVITE refused before the app took it.

    By pjsua itself: 488 no common codec, 486 call cap, 400 bad SDP or missing Contact, 420 unknown Require, ...
    By the gateway's screening: 403 source not allowed, 401 digest challenge, 403 bad credentials, 400 short
    body (see :mod:`bridge.sip.service`); or by :meth:`IncomingCall.enforce_sources` (per-dialplan allowlist).
    """

    status_code: int
    reason: str
    call_id: str  # the SIP Call-ID (cleaned: sipmsg.clean_text; no call of the bridge's was made for it)
    caller: str  # user part of From (cleaned)
    called: str  # user part of To (cleaned)
    source: str = ""  # "ip:port" the INVITE came from
    detail: str = ""  # why, for logs (never a credential)


class _Endpoint(pj.Endpoint):  # type: ignore[misc]  # pjsua2 has no stubs, so the base class is Any
    """``onRejectedIncomingCall`` (loop thread) -> the owner's hook."""

    def __init__(self, on_rejected: Callable[[RejectedCall], None]) -> None:
        super().__init__()
        self._on_rejected = on_rejected

    def onRejectedIncomingCall(self, prm: Any) -> None:
        try:
            head = parse_request_head(str(prm.rdata.wholeMsg))
            call_id = head.headers.get("call-id", "") if head else ""
            self._on_rejected(
                RejectedCall(
                    int(prm.statusCode),
                    str(prm.reason),
                    clean_text(call_id, SIP_CALL_ID_CHARS),
                    clean_text(user_part(str(prm.remoteInfo))),
                    clean_text(user_part(str(prm.localInfo))),
                    source=str(prm.rdata.srcAddress),
                    detail="refused by pjsua",
                )
            )
        except BaseException:
            _LOG.exception("onRejectedIncomingCall")


class BurstPolls:
    """The SIP polls after traffic, between the beat's own: every ``fast_s`` while they find events, twice as long
    after each one that finds none, and none once the wait would reach ``slow_s`` (the beat polls then). A flood
    keeps the fast pace; a lone request (a front's OPTIONS probe, every second on every worker) costs two more
    polls, where a fixed half-second of fast polls cost a hundred (about 10 ms of CPU a probe)."""

    def __init__(self, fast_s: float, slow_s: float) -> None:
        self.fast_s, self.slow_s = fast_s, slow_s
        self._wait = fast_s

    def after(self, found: bool) -> float | None:
        """The wait before the next poll, given whether this one found events; None: the burst is over."""
        self._wait = self.fast_s if found else self._wait * 2
        return self._wait if self._wait < self.slow_s else None


class SetupBudget:
    """Keeps call set-ups under what pjsua's media socket table survives.

    Measured here: pjmedia's ioqueue (``select()``, 64 handles, assertions compiled in) aborts the process
    (SIGABRT in ``pj_ioqueue_register_sock2``) once about 32 calls have been set up within half a second, even if
    each ended at once: every call opens an RTP and an RTCP socket before ``onIncomingCall`` runs, and a closed
    socket's slot is reused only 500 ms later (``PJ_IOQUEUE_KEY_FREE_DELAY``). Refused INVITEs (403, 401), calls
    cancelled at once, and floods reach that rate easily. So the endpoint counts set-ups, and once ``limit`` of them
    happened within ``window_s``, it stops polling SIP until the window has room again: new INVITEs wait in the
    socket buffer (or are retransmitted) instead of killing the worker and every call on it.
    """

    def __init__(self, limit: int = 20, window_s: float = 0.7) -> None:
        self.limit = limit
        self.window_s = window_s
        self.pauses = 0  # how many times intake was paused (for logs and tests)
        self._times: collections.deque[float] = collections.deque()
        self._paused = False
        self.quiet = True  # no set-up within the window at the last look: polling is allowed without one

    def count_setup(self, now: float) -> None:
        self._times.append(now)
        self.quiet = False

    def allows(self, now: float) -> bool:
        """May SIP be polled now?"""
        times = self._times
        while times and now - times[0] > self.window_s:
            times.popleft()
        allowed = len(times) < self.limit
        if not allowed and not self._paused:
            self.pauses += 1
            if self.pauses <= 10 or self.pauses % 100 == 0:
                _LOG.warning(
                    "SIP intake paused: %d call set-ups in %.1f s (pjsua's media socket table; pause #%d)",
                    len(times),
                    self.window_s,
                    self.pauses,
                )
        self._paused = not allowed
        self.quiet = not times
        return allowed


class _Account(pj.Account):  # type: ignore[misc]  # pjsua2 has no stubs, so the base class is Any
    """The local account incoming calls land on; ``on_incoming`` gets ``OnIncomingCallParam`` on the loop thread."""

    def __init__(self, on_incoming: Callable[[Any], None] | None, on_setup: Callable[[], None], config: Any) -> None:
        super().__init__()
        self.config = config  # the AccountConfig it was created with (modified to draw RTP ports)
        self._on_incoming = on_incoming
        self._on_setup = on_setup

    @pjsua_callback
    def onIncomingSubscribe(self, prm: Any) -> None:
        # pjsua's presence server would accept any out-of-dialog SUBSCRIBE (200) from anyone and send it NOTIFYs:
        # state and traffic on behalf of strangers. This endpoint has no presence to offer (RFC 6665 §4.2.1.2).
        prm.code = 403
        prm.reason = "Forbidden (no subscriptions here)"

    @pjsua_callback
    def onIncomingCall(self, prm: Any) -> None:
        self._on_setup()  # pjsua opened this call's media sockets before calling us
        if self._on_incoming is not None:
            self._on_incoming(prm)


def _draw_rtp_port(media: Any, cfg: SipConfig) -> bool:
    """Start a ``TransportConfig``'s RTP ports at a random even port of the configured range, another than the one
    it starts at now while another is free; False: no range."""
    if not (cfg.rtp_port and cfg.rtp_port_range > 2):
        return False
    host = "" if cfg.host in ("", "0.0.0.0") else cfg.host
    media.port = random_rtp_start(cfg.rtp_port, cfg.rtp_port_range - 1, host, avoid=int(media.port))
    media.portRange = cfg.rtp_port + cfg.rtp_port_range - media.port
    return True


def _pjsua2_survivors() -> list[str]:
    """Python wrappers of pjsua2 calls and media still alive (each one aborts ``libDestroy``)."""
    found: list[str] = []
    for obj in gc.get_objects():
        if isinstance(obj, pj.Call | pj.AudioMedia | pj.Account):
            found.append(type(obj).__name__)
    return found


class SipEndpoint:
    """The process's pjsua2 endpoint. Create, :meth:`start` on the event loop thread, :meth:`close` once."""

    _started: ClassVar[bool] = False

    def __init__(self, config: SipConfig) -> None:
        self.config = config
        self.crossing = FrameCrossing()
        self.max_calls, self.cap_source = DOCUMENTED_CALL_CAP, "documented"
        self.sip_port = 0
        self.tls_port = 0  # the TLS listener's, when "tls" is among the transports
        self.local_host = ""  # the address pjsua advertises (the bound one, or the default interface's)
        self.listening: list[str] = []  # "udp 127.0.0.1:5060", ...
        self._ep: Any = None
        self._handle_events: Callable[[int], int] | None = None  # the poll's libHandleEvents (start)
        self._writer: Any = None
        self._accounts: list[_Account] = []
        self._ports_all: list[MediaPort] = []
        self._ports_free: list[MediaPort] = []
        self.hub: NativeHub | None = None  # native media ports' loop side (None: Python ports)
        self.media_port_kind: MediaPortKind = MediaPortKind.PYTHON
        self._reader: tuple[asyncio.AbstractEventLoop, int] | None = None
        self._release_hooks: list[Callable[[], None]] = []
        self._stop_polling: Callable[[], None] | None = None  # removes the SIP poll from the loop's metronome
        self._burst: asyncio.Task[None] | None = None  # the 5 ms polls after SIP traffic
        self._closed = False
        # pjsip's log lines, bounded (garbage floods would flood the log; a packet dump is cut to its head)
        self.log_limiter = LogLimiter(max_chars=config.pjsua_log_chars)
        self.setup_budget = SetupBudget()  # call set-ups per window, bounded (see SetupBudget)
        self._refusal_log = LogLimiter(per_second=20.0, burst=100.0, max_chars=500)  # one line per refused INVITE
        self.rejected: collections.Counter[int] = collections.Counter()  # status code -> INVITEs refused
        self.on_rejected: Callable[[RejectedCall], None] | None = None

    # -- start-up ----------------------------------------------------------------------------------------

    @property
    def native(self) -> Any:
        """The pjsua2 ``Endpoint`` (only bridge.sip modules use it)."""
        if self._ep is None:
            raise SipError("endpoint", "not started")
        return self._ep

    def start(self) -> None:
        """Create and start the library. Must run on the event loop thread: it becomes pjsua's main thread."""
        if SipEndpoint._started:
            raise SipError("endpoint", "a pjsua2 Endpoint already exists in this process")
        loop = asyncio.get_running_loop()
        cfg = self.config
        _set_pjlib_log_level(cfg.pjsua_log_level)
        ep = _Endpoint(self._rejected)
        ep.libCreate()
        SipEndpoint._started = True
        self._ep = ep
        # libHandleEvents without its SWIG wrapper: a Python call less on every beat (_poll)
        self._handle_events = functools.partial(_pjsua2.Endpoint_libHandleEvents, ep)
        try:
            self._init(ep, cfg)
        except BaseException:
            self._destroy_now()
            raise
        crossing = self.crossing
        self.crossing.wake_with(lambda: loop.call_soon_threadsafe(crossing.drain))
        self._start_native_ports(loop)
        self._stop_polling = metronome_for(loop).add(self._on_beat)
        _LOG.info(
            "SIP listening on %s (calls per process: %d, %s; %s media ports)",
            ", ".join(self.listening),
            self.max_calls,
            self.cap_source,
            self.media_port_kind,
        )

    def _start_native_ports(self, loop: asyncio.AbstractEventLoop) -> None:
        wanted = MediaPortKind(self.config.media_port)
        if wanted is MediaPortKind.PYTHON:
            return
        available = native_ports()
        if available.lib is None:
            if wanted is MediaPortKind.NATIVE:
                self._destroy_now()
                raise SipError("media_port", f"native media ports unavailable: {available.why}")
            _LOG.warning("native media ports unavailable, using Python ports: %s", available.why)
            return
        # never below the loop thread that drains it: a worker at SCHED_RR N gets its clock at N, not 1
        clock_priority = max(1, realtime_priority()) if self.config.clock_realtime else 0
        beat = self.config.media_beat_frames
        hub = NativeHub(available.lib, self.config.playout_lead_frames, clock_priority, beat)
        metronome = metronome_for(loop)
        metronome.set_period(beat * TICK_S)
        hub.after_drain = metronome.beat  # the media clock's wake-up, once per beat, carries the process's beat
        hub.after_last = metronome.undriven  # no port left: the metronome's own timer beats again
        metronome.kept(hub.keep(metronome.hold_s()))  # a port nobody reads still wakes the loop: no watchdog timer
        loop.add_reader(hub.fd, hub.on_readable)
        self._reader = (loop, hub.fd)
        self.hub = hub
        self.crossing.also_drain(hub.drain)
        self.media_port_kind = MediaPortKind.NATIVE

    def _init(self, ep: Any, cfg: SipConfig) -> None:
        ep_cfg = pj.EpConfig()
        ua = ep_cfg.uaConfig
        ua.threadCnt = 0
        ua.mainThreadOnly = True
        ua.maxCalls = cfg.max_calls
        ua.userAgent = cfg.user_agent
        log = ep_cfg.logConfig
        log.level = cfg.pjsua_log_level
        log.consoleLevel = cfg.pjsua_log_level
        log.msgLogging = cfg.pjsua_log_level >= 4
        if cfg.pjsua_log_level > 0:
            self._writer = _LogWriter(self.log_limiter)
            log.writer = self._writer
        med = ep_cfg.medConfig
        med.clockRate = SAMPLE_RATE
        med.sndClockRate = SAMPLE_RATE
        med.channelCount = 1
        med.audioFramePtime = FRAME_MS
        med.ptime = FRAME_MS  # RFC 3551 §4.5: 20 ms packets for G.711
        med.noVad = True  # keep RTP flowing through silence; the Realtime side does its own VAD
        med.ecTailLen = 0  # no echo canceller: there is no sound device
        if jb := JitterBuffer.for_floor(cfg.jitter_buffer_ms):
            med.jbInit, med.jbMinPre = jb.init_ms, jb.min_prefetch_ms
            med.jbMaxPre, med.jbMax = jb.max_prefetch_ms, jb.max_ms
        ep.libInit(ep_cfg)
        self._read_call_cap(cfg)

        self.sip_port = self.sip_port or sip_listen_port(cfg)
        for name in cfg.transports:
            self._listen(ep, Transport(name))
        ep.libStart()
        ep.audDevManager().setNullDev()
        self._restrict_codecs(ep, cfg.concealment)

    def _listen(self, ep: Any, name: Transport) -> None:
        cfg = self.config
        port = cfg.tls_port if name is Transport.TLS else self.sip_port or cfg.port
        try:
            tid = ep.transportCreate(TRANSPORT_TYPES[name], transport_config(name, cfg, port))
        except pj.Error as exc:
            raise sip_error(f"{name} transport on {cfg.host}:{port}", exc) from None
        local = str(ep.transportGetInfo(tid).localName)
        if name is Transport.TLS:
            self.tls_port = int(local.rsplit(":", 1)[1])
            if not cfg.tls_verify:
                _LOG.warning(
                    "TLS: the far end's certificate is not verified on connections this side opens (tls_verify off)"
                )
        else:
            self.sip_port = self.sip_port or int(local.rsplit(":", 1)[1])
        self.local_host = self.local_host or local.rsplit(":", 1)[0]
        self.listening.append(f"{name} {local}")

    def _read_call_cap(self, cfg: SipConfig) -> None:
        actual = _native_uint("pjsua_call_get_max_count")
        if actual:
            self.max_calls = actual
            self.cap_source = "pjsua_call_get_max_count()"
        else:
            self.max_calls = min(cfg.max_calls, DOCUMENTED_CALL_CAP)
            self.cap_source = "documented cap"
        if cfg.max_calls > self.max_calls:
            _LOG.warning("max_calls=%d asked, the library allows %d per process", cfg.max_calls, self.max_calls)

    @staticmethod
    def _restrict_codecs(ep: Any, concealment: bool) -> None:
        for codec in ep.codecEnum2():
            codec_id = str(codec.codecId)
            if codec_id in ALLOWED_CODECS:
                ep.codecSetPriority(codec_id, 255 - ALLOWED_CODECS.index(codec_id))
                if not concealment:
                    param = ep.codecGetParam(codec_id)
                    param.setting.plc = False
                    ep.codecSetParam(codec_id, param)
            else:
                ep.codecSetPriority(codec_id, 0)  # priority 0 disables the codec (pjmedia codec manager)

    def _rejected(self, rejected: RejectedCall) -> None:
        self.count_rejected(rejected)

    def count_rejected(self, rejected: RejectedCall) -> None:
        """Count a refused INVITE by status code, log it, and tell ``on_rejected`` (loop thread)."""
        self.rejected[rejected.status_code] += 1
        line = self._refusal_log.admit(
            f"refused INVITE {rejected.call_id} from {mask_number(rejected.caller, REFUSED_CALLER_VISIBLE_DIGITS)} "
            f"({rejected.source}) to {rejected.called}: "
            f"{rejected.status_code} {rejected.reason} ({rejected.detail})"
        )
        if line is not None:
            _LOG.log(logging.WARNING if rejected.status_code in (403, 513) else logging.INFO, "%s", line)
        if self.on_rejected is not None:
            try:
                self.on_rejected(rejected)
            except Exception:
                _LOG.exception("on_rejected hook raised")

    def create_account(
        self, on_incoming: Callable[[Any], None] | None = None, credentials: tuple[str, str] | None = None
    ) -> Any:
        """A local account (no registration) on this endpoint's transports; the first one is the default.

        ``credentials`` (user, password) answer digest challenges (401/407) to the calls it places, in any realm.
        """
        cfg = self.config
        host = cfg.public_address or self.local_host or cfg.host
        acfg = account_config(cfg, host, self.tls_port if "tls" in cfg.transports else self.sip_port, credentials)
        _draw_rtp_port(acfg.mediaConfig.transportConfig, cfg)
        account = _Account(on_incoming, self.note_call_setup, acfg)
        try:
            account.create(acfg, not self._accounts)
        except pj.Error as exc:
            raise sip_error("account", exc) from None
        self._accounts.append(account)
        return account

    # -- running -----------------------------------------------------------------------------------------

    def _poll(self) -> bool:
        """One poll: SIP events (unless :attr:`setup_budget` is spent: then SIP intake pauses, audio still flows),
        and the Python ports' crossing (a safety net: frames wake the loop themselves). Native ports are not
        served here: their eventfd reader is level-triggered and cannot miss a frame. True if SIP events ran."""
        budget, handle = self.setup_budget, self._handle_events
        handled = False
        if handle is not None and (budget.quiet or budget.allows(time.monotonic())):
            try:
                handled = bool(handle(0))
            except pj.Error as exc:
                _LOG.error("libHandleEvents: %s", sip_error("libHandleEvents", exc))
        if self.crossing.queue:
            self.crossing.drain(also=False)
        return handled

    def _on_beat(self) -> None:
        """The metronome's chore: the regular poll, every 20 ms on the loop's shared beat. SIP traffic starts a
        burst of faster polls (:class:`BurstPolls`), so that bursts are read before the socket buffer overflows."""
        if self._burst is not None:
            return
        if self._poll():
            self._burst = asyncio.get_running_loop().create_task(self._poll_burst(), name="sip-burst")

    async def _poll_burst(self) -> None:
        cfg = self.config
        polls = BurstPolls(cfg.busy_poll_interval_s, cfg.poll_interval_s)
        wait: float | None = polls.fast_s
        try:
            while wait is not None:
                await asyncio.sleep(wait)
                wait = polls.after(self._poll())
        finally:
            self._burst = None

    def note_call_setup(self) -> None:
        """A call got media sockets (an incoming call reached ``onIncomingCall``, or we placed one); the next call's
        RTP port is drawn at random within the range (pjsua's ``randomizePort`` draws only the first one)."""
        self.setup_budget.count_setup(time.monotonic())
        cfg = self.config
        if not self._accounts:
            return
        account = self._accounts[0]
        media = account.config.mediaConfig.transportConfig
        before = int(media.port)
        if not _draw_rtp_port(media, cfg):
            return
        try:
            if media.port == before:  # pjsua_acc_modify restarts at the configured port only when it changes
                media.port = cfg.rtp_port if before != cfg.rtp_port else cfg.rtp_port + 2
                account.modify(account.config)
                media.port = before
            account.modify(account.config)  # the next call's RTP port is the one drawn
        except pj.Error as exc:
            _LOG.warning("RTP port draw: %s", sip_error("account.modify", exc))

    @property
    def active_calls(self) -> int:
        count = _native_uint("pjsua_call_get_count")
        return count if count is not None else 0

    def acquire_port(self) -> MediaPort:
        """A detached media port, reused across calls: ports are never destroyed while the clock runs."""
        if self._ports_free:
            return self._ports_free.pop()
        name = f"bridge{len(self._ports_all)}"
        port: MediaPort = self.hub.new_port(name) if self.hub is not None else BridgePort(name, self.crossing)
        self._ports_all.append(port)
        return port

    def release_port(self, port: MediaPort) -> None:
        port.detach()
        if port not in self._ports_free:
            self._ports_free.append(port)

    def on_release(self, hook: Callable[[], None]) -> None:
        """Register a hook that drops the owner's pjsua2 objects (calls) before ``libDestroy``."""
        self._release_hooks.append(hook)

    # -- shutdown ----------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Hang up everything and destroy the library. Safe to call twice."""
        if self._closed or self._ep is None:
            return
        self._closed = True
        ep = self._ep
        cfg = self.config
        try:
            ep.hangupAllCalls()
        except pj.Error as exc:
            _LOG.warning("hangupAllCalls: %s", sip_error("hangupAllCalls", exc))
        # Pump until the BYEs are answered (or the grace runs out), then a little longer so that pjmedia
        # finishes tearing the streams down and the last size-0 frames have gone by.
        deadline = time.monotonic() + cfg.shutdown_grace_s
        while self.active_calls and time.monotonic() < deadline:
            self._poll()
            await asyncio.sleep(cfg.poll_interval_s)
        settle = time.monotonic() + 0.2
        while time.monotonic() < settle:
            self._poll()
            await asyncio.sleep(cfg.poll_interval_s)
        if self.active_calls:
            _LOG.warning("%d call(s) still up at shutdown", self.active_calls)
        if self._stop_polling is not None:
            self._stop_polling()
            self._stop_polling = None
        if self._burst is not None:
            self._burst.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._burst
        self._destroy_now()

    def _destroy_now(self) -> None:
        """Drop every pjsua2 object we know of, then ``libDestroy``. Any survivor aborts the process.

        Each step runs in its own method: a loop variable (``for port in ...``) would otherwise keep the last
        object alive in this frame until ``libDestroy`` and abort the process.
        """
        with contextlib.suppress(Exception):
            self._ep.audDevManager().setNoDev()  # stop the media clock: no frame callback during teardown
        self._run_release_hooks()
        self._drop_ports()
        # An exception that escaped into an interactive hook keeps its frames (and their locals) alive.
        sys.last_type = sys.last_value = sys.last_traceback = None
        if hasattr(sys, "last_exc"):  # Python 3.12
            sys.last_exc = None
        gc.collect()
        self._shutdown_accounts()
        gc.collect()
        survivors = _pjsua2_survivors()
        if survivors:
            _LOG.error("pjsua2 objects still alive before libDestroy (the process may abort): %s", survivors)
        ep, self._ep = self._ep, None
        self._handle_events = None
        if ep is not None:
            try:
                ep.libDestroy()
            except pj.Error as exc:
                _LOG.warning("libDestroy: %s", sip_error("libDestroy", exc))
            del ep
        self._writer = None
        SipEndpoint._started = False
        gc.collect()
        suppressed = self.log_limiter.suppressed + self._refusal_log.suppressed
        if suppressed:
            _LOG.warning("%d SIP log lines were suppressed by the rate limit", suppressed)
        _LOG.info("SIP endpoint closed")

    def _run_release_hooks(self) -> None:
        hooks, self._release_hooks = self._release_hooks, []
        for hook in hooks:
            try:
                hook()
            except Exception:
                _LOG.exception("release hook failed")

    def _drop_ports(self) -> None:
        self.crossing.wake_with(None)
        self.crossing.also_drain(None)
        self.crossing.clear()
        if self._reader is not None:
            loop, fd = self._reader
            with contextlib.suppress(Exception):  # the loop may already be closed
                loop.remove_reader(fd)
            self._reader = None
            metronome_for(loop).kept(False)  # no keeper from now on: the metronome keeps its own watch
        if self.hub is not None:
            self.hub.keep(0)  # nobody reads the eventfd any more
        ports, self._ports_all = self._ports_all, []
        self._ports_free.clear()
        for port in ports:
            if isinstance(port, NativePort):
                port.remove()  # out of the conference bridge; its memory stays (see cport.c)
            else:
                port.detach()

    def _shutdown_accounts(self) -> None:
        accounts, self._accounts = self._accounts, []
        for account in accounts:
            try:
                account.shutdown()
            except pj.Error as exc:
                _LOG.warning("account shutdown: %s", sip_error("account.shutdown", exc))
