"""The pjsua2 endpoint of one process: configuration, start-up, the event pump, the port pool, and shutdown.

A pjsua2 ``Endpoint`` is a per-process singleton. :class:`SipEndpoint` owns it and runs it the way
/work/shared/PJSUA2.md found safe:

* ``threadCnt=0`` + ``mainThreadOnly=True``, and an asyncio task that calls ``libHandleEvents(0)`` every
  ``poll_interval_s`` (5 ms): every SIP callback (incoming call, call state, DTMF, transfer) runs on the event
  loop thread, inside that task. The same tick drains the inbound audio crossing (:mod:`bridge.sip.crossing`).
* No sound device (``setNullDev``): the conference bridge is clocked internally at 8 kHz, 20 ms.
* Codecs: PCMU and PCMA only (RFC 3551 payload types 0 and 8). pjsua then answers an offer with neither with
  ``488 Not Acceptable Here`` by itself, before any application callback.
* Shutdown without SIGABRT: hang up, pump, drop every pjsua2 object we hold, clear ``sys.last_traceback``,
  ``gc.collect()``, shut the accounts down, ``libDestroy()``.

The call cap is read back from the library after ``libInit`` (``pjsua_call_get_max_count()``, called through
ctypes on the already-loaded ``_pjsua2`` extension): this wheel cuts any ``maxCalls`` above 4 to 4 silently.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import gc
import importlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pjsua2 as pj

from bridge.errors import BridgeError
from bridge.sip.crossing import FRAME_MS, SAMPLE_RATE, FrameCrossing
from bridge.sip.media import BridgePort
from bridge.sip.sipmsg import parse_request_head, user_part

_LOG = logging.getLogger("bridge.sip")
_PJ_LOG = logging.getLogger("bridge.sip.pjsua")

DOCUMENTED_CALL_CAP = 4  # what this wheel allows per process (PJSUA2.md); used if the read-back fails
ALLOWED_CODECS = ("PCMU/8000/1", "PCMA/8000/1")  # first is preferred when we offer


class SipError(BridgeError):
    """A pjsua2 operation failed. ``status`` is pjlib's status code, ``reason`` its text; never a pjsua2 type."""

    def __init__(self, operation: str, reason: str, status: int = 0) -> None:
        super().__init__(f"{operation}: {reason}")
        self.operation = operation
        self.reason = reason
        self.status = status


class CallGone(SipError):
    """The call already ended (or never existed in pjsua); the operation was not performed."""


def sip_error(operation: str, exc: BaseException) -> SipError:
    """Turn a ``pj.Error`` (or anything) into a :class:`SipError` with plain Python fields."""
    reason = str(getattr(exc, "reason", "") or getattr(exc, "info", lambda: "")() or exc)
    status = int(getattr(exc, "status", 0) or 0)
    return SipError(operation, reason, status)


@dataclass(frozen=True, slots=True)
class SipConfig:
    """Where and how a process speaks SIP. The app's settings loader maps onto this."""

    host: str = "127.0.0.1"  # SIP and RTP bind address ("0.0.0.0": all interfaces)
    port: int = 5060  # SIP port for every transport; 0 picks a free one (UDP first, TCP then tries the same)
    transports: tuple[str, ...] = ("udp", "tcp")
    public_address: str = ""  # advertised in Contact/Via/SDP instead of host (behind NAT); "" = host
    rtp_port: int = 0  # first RTP port (RTCP is +1); 0: pjsua picks free ports
    rtp_port_range: int = 0  # number of ports from rtp_port to try; 0 = no limit
    max_calls: int = DOCUMENTED_CALL_CAP  # asked for; the library may cut it (see SipEndpoint.max_calls)
    user: str = "callbridge"  # user part of the local account URI
    user_agent: str = "callbridge"
    pjsua_log_level: int = 1  # pjlib log level 0-6, forwarded to logger "bridge.sip.pjsua"; 4+ logs SIP messages
    poll_interval_s: float = 0.005  # libHandleEvents / audio drain tick while calls are up
    idle_poll_interval_s: float = 0.02  # the same with no call and nothing happening (bounds INVITE pickup delay)
    shutdown_grace_s: float = 1.0  # how long close() waits for BYEs to complete


_TRANSPORT_TYPES = {"udp": pj.PJSIP_TRANSPORT_UDP, "tcp": pj.PJSIP_TRANSPORT_TCP}


def _native_library() -> ctypes.CDLL | None:
    """The loaded ``_pjsua2`` extension as a C library (dlopen returns the handle already in the process)."""
    try:
        path = importlib.import_module("pjsua2._pjsua2").__file__
        return ctypes.CDLL(path) if path else None
    except (ImportError, OSError):
        return None


_NATIVE = _native_library()


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


class _LogWriter(pj.LogWriter):  # type: ignore[misc]  # pjsua2 has no stubs, so the base class is Any
    """pjlib log lines -> ``logging`` (any thread; ``logging`` is thread-safe)."""

    # pjlib level 1 ("error") also reports expected refusals (e.g. the 488 of a codec mismatch): a warning here.
    _LEVELS: ClassVar[dict[int, int]] = {0: logging.ERROR, 1: logging.WARNING, 2: logging.WARNING, 3: logging.INFO}

    def write(self, entry: Any) -> None:
        with contextlib.suppress(BaseException):  # nothing may escape into SWIG
            _PJ_LOG.log(self._LEVELS.get(int(entry.level), logging.DEBUG), "%s", str(entry.msg).rstrip())


@dataclass(frozen=True, slots=True)
class RejectedCall:
    """An INVITE pjsua refused by itself, before any app code ran (488 no common codec, 486 call cap, ...)."""

    status_code: int
    reason: str
    call_id: str  # the SIP Call-ID
    caller: str  # user part of From
    called: str  # user part of To


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
                    call_id,
                    user_part(str(prm.remoteInfo)),
                    user_part(str(prm.localInfo)),
                )
            )
        except BaseException:
            _LOG.exception("onRejectedIncomingCall")


class _Account(pj.Account):  # type: ignore[misc]  # pjsua2 has no stubs, so the base class is Any
    """The local account incoming calls land on; ``on_incoming`` gets ``OnIncomingCallParam`` on the loop thread."""

    def __init__(self, on_incoming: Callable[[Any], None] | None) -> None:
        super().__init__()
        self._on_incoming = on_incoming

    def onIncomingCall(self, prm: Any) -> None:
        try:
            if self._on_incoming is not None:
                self._on_incoming(prm)
        except BaseException:
            _LOG.exception("incoming call handler failed")


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
        self.max_calls = DOCUMENTED_CALL_CAP
        self.cap_source = "documented"
        self.sip_port = 0
        self.local_host = ""  # the address pjsua advertises (the bound one, or the default interface's)
        self.listening: list[str] = []  # "udp 127.0.0.1:5060", ...
        self._ep: Any = None
        self._writer: Any = None
        self._accounts: list[_Account] = []
        self._ports_all: list[BridgePort] = []
        self._ports_free: list[BridgePort] = []
        self._release_hooks: list[Callable[[], None]] = []
        self._pump_task: asyncio.Task[None] | None = None
        self._closed = False
        self.rejected: collections.Counter[int] = collections.Counter()  # status code -> INVITEs pjsua refused
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
        try:
            self._init(ep, cfg)
        except BaseException:
            self._destroy_now()
            raise
        self._pump_task = loop.create_task(self._pump(), name="sip-pump")
        _LOG.info(
            "SIP listening on %s (calls per process: %d, %s)",
            ", ".join(self.listening),
            self.max_calls,
            self.cap_source,
        )

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
            self._writer = _LogWriter()
            log.writer = self._writer
        med = ep_cfg.medConfig
        med.clockRate = SAMPLE_RATE
        med.sndClockRate = SAMPLE_RATE
        med.channelCount = 1
        med.audioFramePtime = FRAME_MS
        med.ptime = FRAME_MS  # RFC 3551 §4.5: 20 ms packets for G.711
        med.noVad = True  # keep RTP flowing through silence; the Realtime side does its own VAD
        med.ecTailLen = 0  # no echo canceller: there is no sound device
        ep.libInit(ep_cfg)
        self._read_call_cap(cfg)

        for name in cfg.transports:
            kind = _TRANSPORT_TYPES.get(name.lower())
            if kind is None:
                raise SipError("transport", f"unknown transport {name!r} (expected udp or tcp)")
            tc = pj.TransportConfig()
            tc.boundAddress = "" if cfg.host in ("", "0.0.0.0") else cfg.host
            tc.port = self.sip_port or cfg.port
            if cfg.public_address:
                tc.publicAddress = cfg.public_address
            try:
                tid = ep.transportCreate(kind, tc)
            except pj.Error as exc:
                raise sip_error(f"{name} transport on {cfg.host}:{tc.port}", exc) from None
            local = str(ep.transportGetInfo(tid).localName)
            self.sip_port = self.sip_port or int(local.rsplit(":", 1)[1])
            self.local_host = self.local_host or local.rsplit(":", 1)[0]
            self.listening.append(f"{name.lower()} {local}")
        ep.libStart()
        ep.audDevManager().setNullDev()
        self._restrict_codecs(ep)

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
    def _restrict_codecs(ep: Any) -> None:
        for codec in ep.codecEnum2():
            codec_id = str(codec.codecId)
            if codec_id in ALLOWED_CODECS:
                ep.codecSetPriority(codec_id, 255 - ALLOWED_CODECS.index(codec_id))
            else:
                ep.codecSetPriority(codec_id, 0)  # priority 0 disables the codec (pjmedia codec manager)

    def _rejected(self, rejected: RejectedCall) -> None:
        self.rejected[rejected.status_code] += 1
        _LOG.info(
            "pjsua refused INVITE %s from %s: %d %s",
            rejected.call_id,
            rejected.caller,
            rejected.status_code,
            rejected.reason,
        )
        if self.on_rejected is not None:
            self.on_rejected(rejected)

    def create_account(self, on_incoming: Callable[[Any], None] | None = None) -> Any:
        """A local account (no registration) on this endpoint's transports; the first one is the default."""
        cfg = self.config
        host = cfg.public_address or self.local_host or cfg.host
        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:{cfg.user}@{host}:{self.sip_port}"
        media = acfg.mediaConfig.transportConfig
        media.port = cfg.rtp_port
        media.portRange = cfg.rtp_port_range
        if cfg.host not in ("", "0.0.0.0"):
            media.boundAddress = cfg.host
        if cfg.public_address:
            media.publicAddress = cfg.public_address
        account = _Account(on_incoming)
        try:
            account.create(acfg, not self._accounts)
        except pj.Error as exc:
            raise sip_error("account", exc) from None
        self._accounts.append(account)
        return account

    # -- running -----------------------------------------------------------------------------------------

    async def _pump(self) -> None:
        """Poll pjsua and drain the audio crossing: every ``poll_interval_s`` while calls are up or anything
        happened in the last half second, else every ``idle_poll_interval_s`` (an idle worker costs ~4x less)."""
        ep = self._ep
        crossing = self.crossing
        cfg = self.config
        busy_until = 0.0
        while True:
            now = time.monotonic()
            if self.pump_once(ep, crossing) or _native_uint("pjsua_call_get_count"):
                busy_until = now + 0.5
            await asyncio.sleep(cfg.poll_interval_s if now < busy_until else cfg.idle_poll_interval_s)

    @staticmethod
    def pump_once(ep: Any, crossing: FrameCrossing) -> int:
        """One poll: SIP events (their callbacks run here), then received frames. Returns how much happened."""
        try:
            events = int(ep.libHandleEvents(0))
        except pj.Error as exc:
            _LOG.error("libHandleEvents: %s", sip_error("libHandleEvents", exc))
            events = 0
        return events + crossing.drain()

    @property
    def active_calls(self) -> int:
        count = _native_uint("pjsua_call_get_count")
        return count if count is not None else 0

    def acquire_port(self) -> BridgePort:
        """A detached media port, reused across calls: ports are never destroyed while the clock runs."""
        if self._ports_free:
            return self._ports_free.pop()
        port = BridgePort(f"bridge{len(self._ports_all)}", self.crossing)
        self._ports_all.append(port)
        return port

    def release_port(self, port: BridgePort) -> None:
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
            self.pump_once(ep, self.crossing)
            await asyncio.sleep(cfg.poll_interval_s)
        settle = time.monotonic() + 0.2
        while time.monotonic() < settle:
            self.pump_once(ep, self.crossing)
            await asyncio.sleep(cfg.poll_interval_s)
        if self.active_calls:
            _LOG.warning("%d call(s) still up at shutdown", self.active_calls)
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
            self._pump_task = None
        self._destroy_now()

    def _destroy_now(self) -> None:
        """Drop every pjsua2 object we know of, then ``libDestroy``. Any survivor aborts the process.

        Each step runs in its own method: a loop variable (``for port in ...``) would otherwise keep the last
        object alive in this frame until ``libDestroy`` and abort the process.
        """
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
        if ep is not None:
            try:
                ep.libDestroy()
            except pj.Error as exc:
                _LOG.warning("libDestroy: %s", sip_error("libDestroy", exc))
            del ep
        self._writer = None
        SipEndpoint._started = False
        gc.collect()
        _LOG.info("SIP endpoint closed")

    def _run_release_hooks(self) -> None:
        hooks, self._release_hooks = self._release_hooks, []
        for hook in hooks:
            try:
                hook()
            except Exception:
                _LOG.exception("release hook failed")

    def _drop_ports(self) -> None:
        self.crossing.clear()
        ports, self._ports_all = self._ports_all, []
        self._ports_free.clear()
        for port in ports:
            port.detach()

    def _shutdown_accounts(self) -> None:
        accounts, self._accounts = self._accounts, []
        for account in accounts:
            try:
                account.shutdown()
            except pj.Error as exc:
                _LOG.warning("account shutdown: %s", sip_error("account.shutdown", exc))
