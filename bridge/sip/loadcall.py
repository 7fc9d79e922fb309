"""Load on the telephone side in C media only, for ``callbridge bench calls``: no Python media port anywhere.

::

    caller = LoadCaller(Path("speech.wav"))     # one endpoint, its calls play the recording, looped
    caller.start()
    caller.place(["sip:4000@127.0.0.1:5062"])   # up to the wheel's 4 calls per process
    # LoadCaller(play, "mandatory", tls_ca="cert.pem") places sips: calls over TLS, SDES SRTP offered
    first = caller.snapshot()                   # each call's RTP and jitter-buffer counters (None: not up)
    last = caller.snapshot()
    rows = caller.rows(first, last)             # per call: the counters' change between the two, set-up time
    await caller.hang_up()
    await caller.close()

    callee = LoopbackCallee(port, play=None)    # the ceiling: answers, loops each call's audio back to itself
    # LoadCaller(play, port=5070, rtp_port=20000, rtp_port_range=16), LoopbackCallee(port, rtp_port=..., ...): SIP
    # and RTP on those ports (the bench passes ports of CALLBRIDGE_PORT_RANGE); by default any free ones
    # LoopbackCallee(port, also=hook, loop=False): neither loops nor plays; ``hook(endpoint, media)`` routes it
    # LoadCaller(play, record=Path("dir")) also records what each call hears to dir/call-N.wav
    callee.start()
    ...
    await callee.close()

What a load caller hears goes to the (null) sound device: the conference bridge then pulls every call's stream
each 20 ms, as a phone's speaker would, so its jitter buffer plays out (with no listener it only fills up).

Every pjsua2 object lives in a ``_held`` dict only, emptied by the endpoint's release hook: a pjsua2 object still
referenced at ``libDestroy`` aborts the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pjsua2 as pj

from bridge.sip.endpoint import SipEndpoint, sip_error
from bridge.sip.legs import call_op, first_audio
from bridge.sip.sipconfig import SipConfig
from bridge.sip.sipmsg import Transport
from bridge.sip.transports import secure_media

# The counters a snapshot takes whose change over the window is the call's result.
COUNTERS = ("t", "rx_pkt", "rx_loss", "tx_pkt", "rx_bytes", "tx_bytes", "jb_lost", "jb_empty", "jb_discard")
CONTACT_HOSTPORT = re.compile(r"sips?:(?:[^@>;]*@)?([^;>]+)")  # a Contact's host:port, e.g. <sip:127.0.0.1:5061;ob>
HANGUP_POLLS = 150  # up to 3 s in 20 ms polls for the BYEs to complete
HANGUP_POLL_S = 0.02

Snapshot = dict[str, float]


def _endpoint(
    port: int,
    user: str,
    user_agent: str,
    srtp: str = "off",
    tls_ca: str = "",
    *,
    tls_port: int = 0,
    rtp_port: int = 0,
    rtp_port_range: int = 0,
) -> SipEndpoint:
    """An endpoint on UDP ``port``; with ``tls_ca``, on TLS ``tls_port`` too, verifying the far end against that CA
    (``sips:`` calls). Its calls' RTP ports: ``rtp_port_range`` ports from ``rtp_port`` (as ``SipConfig``'s; 0:
    pjsua picks). A port 0: any free one."""
    transports = (Transport.UDP, Transport.TLS) if tls_ca else (Transport.UDP,)
    config = SipConfig(
        port=port,
        transports=transports,
        tls_port=tls_port,
        tls_ca=tls_ca,
        user=user,
        user_agent=user_agent,
        pjsua_log_level=0,
        srtp=srtp,
        rtp_port=rtp_port,
        rtp_port_range=rtp_port_range,
    )
    endpoint = SipEndpoint(config)
    endpoint.start()
    return endpoint


def _hold_player(endpoint: SipEndpoint, held: dict[str, Any], play: Path) -> None:
    """A looped player of ``play`` and the null sound device, kept in ``held``."""
    held["player"] = pj.AudioMediaPlayer()
    held["player"].createPlayer(str(play), 0)  # 0: loop
    held["speaker"] = endpoint.native.audDevManager().getPlaybackDevMedia()


class _LoadCall(pj.Call):  # type: ignore[misc]  # pjsua2 has no stubs
    def __init__(self, account: Any, uri: str, on_media: Callable[[_LoadCall], None]) -> None:
        super().__init__(account)
        self.uri = uri
        self.on_media = on_media
        self.status: int | None = None
        self.answered = False
        self.ended = False
        self.media: Any = None
        self.index = -1
        self.why = ""  # why a snapshot found it not up (the bench step's unanswered_why)
        self.placed_at = 0.0
        self.answered_at = 0.0
        self.worker = ""  # HOST:PORT of the callee that answered (its Contact): behind a front, a worker
        self.srtp = False  # its audio ran SRTP (RTP/SAVP)

    def onCallState(self, prm: Any) -> None:
        try:
            info = self.getInfo()
            if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
                self.answered, self.status = True, int(info.lastStatusCode) or 200
                self.answered_at = self.answered_at or time.monotonic()
                found = CONTACT_HOSTPORT.search(info.remoteContact or "")
                self.worker = self.worker or (found.group(1) if found else "")
            elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self.ended = True
                self.status = self.status or int(info.lastStatusCode)
        except BaseException:
            pass

    def onCallMediaState(self, prm: Any) -> None:
        try:
            found = first_audio(self)
            if found is not None and self.media is None:
                self.media, self.index = found
                self.srtp = secure_media(self, self.index)
                self.on_media(self)
        except BaseException:
            pass

    def not_up(self) -> str:
        """Why the call is not up ("" if it is)."""
        if self.ended:
            return "ended"
        if not self.answered:
            return "not answered"
        return "no audio stream yet" if self.media is None else ""


class LoadCaller:
    """One endpoint placing calls that play ``play`` in a loop, their audio heard by the null sound device. With
    ``tls_ca`` (a PEM CA list) it also speaks TLS: a ``sips:`` URI is called over TLS, the callee's certificate
    verified against that CA (the workers accept SDES keys over TLS only). It listens on SIP ``port`` (UDP) and
    ``tls_port`` (TLS), its calls' RTP on ``rtp_port_range`` ports from ``rtp_port``: as ``SipConfig``'s, 0 any."""

    def __init__(
        self,
        play: Path,
        srtp: str = "off",
        tls_ca: str = "",
        record: Path | None = None,
        *,
        port: int = 0,
        tls_port: int = 0,
        rtp_port: int = 0,
        rtp_port_range: int = 0,
    ) -> None:
        self.play = play
        self.srtp = srtp  # SipConfig.srtp of the calls it places ("mandatory": SDES SRTP offered, RFC 4568)
        self.tls_ca = tls_ca
        self.record = record  # a directory: each call's audio as heard is also recorded there, call-N.wav
        self.port, self.tls_port = port, tls_port
        self.rtp_port, self.rtp_port_range = rtp_port, rtp_port_range
        self._endpoint: SipEndpoint | None = None
        self._held: dict[str, Any] = {}

    def start(self) -> None:
        endpoint = self._endpoint = _endpoint(
            self.port,
            "load",
            "callbridge-bench",
            self.srtp,
            self.tls_ca,
            tls_port=self.tls_port,
            rtp_port=self.rtp_port,
            rtp_port_range=self.rtp_port_range,
        )
        self._held.update(calls=[], account=endpoint.create_account(None))
        _hold_player(endpoint, self._held, self.play)
        endpoint.on_release(self._release)

    def _release(self) -> None:
        for call in self._held.get("calls", []):
            call.media = None
        self._held.clear()

    @property
    def _calls(self) -> list[_LoadCall]:
        calls: list[_LoadCall] = self._held["calls"]
        return calls

    def _connect(self, call: _LoadCall) -> None:
        self._held["player"].startTransmit(call.media)
        call.media.startTransmit(self._held["speaker"])
        if self.record is not None:  # what the caller hears, in C too (pjmedia's WAV writer)
            recorder = pj.AudioMediaRecorder()
            recorder.createRecorder(str(self.record / f"call-{self._calls.index(call)}.wav"))
            self._held[f"recorder-{id(call)}"] = recorder
            call.media.startTransmit(recorder)

    def place(self, uris: Sequence[str]) -> None:
        """Place a call to each of ``uris``. With RTP ports given, each call's pair is drawn among the block's pairs
        free just then (:meth:`SipEndpoint.note_call_setup`, as a softphone does before each call): the account's
        ports run only from its last draw to the block's end, and once drawn near that end, a few calls would fill
        them and the next one could not get media sockets (its ``makeCall`` fails, and it ends here unsent)."""
        endpoint = self._endpoint
        assert endpoint is not None, "start() first"
        for uri in uris:
            call = _LoadCall(self._held["account"], uri, self._connect)
            self._calls.append(call)
            call.placed_at = time.monotonic()
            endpoint.note_call_setup()  # this call's RTP pair: a free one of the block (none given: nothing drawn)
            try:
                call.makeCall(uri, call_op())
            except pj.Error as exc:
                call.ended, call.status = True, 0
                print(f"{sip_error('makeCall', exc)} (to {uri})", file=sys.stderr)

    def snapshot(self) -> list[Snapshot | None]:
        """Each call's counters now, in the order placed; None for a call not up (its ``why`` says what)."""
        return [self._snap(call) for call in self._calls]

    @staticmethod
    def _snap(call: _LoadCall) -> Snapshot | None:
        why = call.not_up()
        if why:
            call.why = why
            return None
        try:
            st = call.getStreamStat(call.index)
        except pj.Error as exc:
            call.why = f"stat: {exc}"
            return None
        rx, jb = st.rtcp.rxStat, st.jbuf
        return {
            "t": time.monotonic(),
            "rx_pkt": rx.pkt,
            "rx_loss": rx.loss,
            "tx_pkt": st.rtcp.txStat.pkt,
            "rx_bytes": rx.bytes,  # RTP payload
            "tx_bytes": st.rtcp.txStat.bytes,
            "jb_lost": jb.lost,
            "jb_empty": jb.empty,
            "jb_discard": jb.discard,
            "jb_avg_delay_ms": jb.avgDelayMsec,
            "jb_max_delay_ms": jb.maxDelayMsec,
            "jitter_max_us": rx.jitterUsec.max,
        }

    def rows(self, first: Sequence[Snapshot | None], last: Sequence[Snapshot | None]) -> list[dict[str, Any]]:
        """Per call: answered (up at both snapshots), SIP status, why not, who answered, set-up time, and the
        counters' change between the snapshots."""
        return [_row(call, a, b) for call, a, b in zip(self._calls, first, last, strict=True)]

    async def hang_up(self) -> None:
        """Hang up every call still there and wait (up to 3 s) for the BYEs to complete."""
        for call in self._calls:
            if not call.ended:
                with contextlib.suppress(pj.Error):
                    call.hangup(call_op())
        for _ in range(HANGUP_POLLS):
            if all(call.ended for call in self._calls):
                break
            await asyncio.sleep(HANGUP_POLL_S)

    async def close(self) -> None:
        gc.collect()
        if self._endpoint is not None:
            await self._endpoint.close()


def _row(call: _LoadCall, a: Snapshot | None, b: Snapshot | None) -> dict[str, Any]:
    row: dict[str, Any] = {"uri": call.uri, "answered": a is not None and b is not None, "status": call.status}
    row["why"] = call.why
    row["worker"] = call.worker
    row["srtp"] = call.srtp
    if call.answered_at and call.placed_at:
        row["setup_ms"] = round(1000 * (call.answered_at - call.placed_at), 1)
    if a is not None and b is not None:
        row.update({k: b[k] - a[k] for k in COUNTERS})
        row.update(jb_avg_delay_ms=b["jb_avg_delay_ms"], jb_max_delay_ms=b["jb_max_delay_ms"])
        row.update(jitter_max_us=b["jitter_max_us"])
    return row


class _LoopCall(pj.Call):  # type: ignore[misc]  # pjsua2 has no stubs
    def __init__(self, account: Any, call_id: int, on_media: Callable[[Any], None]) -> None:
        super().__init__(account, call_id)
        self.media: Any = None
        self.on_media = on_media

    def onCallMediaState(self, prm: Any) -> None:
        try:
            found = first_audio(self)
            if found is not None and self.media is None:
                self.media = found[0]
                self.on_media(self.media)
        except BaseException:
            pass


class LoopbackCallee:
    """The ceiling's callee: answers up to the wheel's 4 calls on ``port``. Each call's audio is looped back to
    itself in the conference bridge, or with ``play``, the call hears that recording, looped, and its own audio
    goes to the null sound device: what it sends then no longer depends on what it receives, as in the bridge.
    Its calls' RTP: ``rtp_port_range`` ports from ``rtp_port`` (as ``SipConfig``'s; 0: pjsua picks), the next call's
    pair drawn among the free ones as each call comes in (the endpoint's account does it, as a worker's)."""

    def __init__(
        self,
        port: int,
        play: Path | None = None,
        also: Callable[[SipEndpoint, Any], None] | None = None,
        loop: bool = True,
        *,
        rtp_port: int = 0,
        rtp_port_range: int = 0,
    ) -> None:
        self.port = port
        self.rtp_port, self.rtp_port_range = rtp_port, rtp_port_range
        self.play = play
        self.also = also  # called with the endpoint and each call's audio as it comes up (the bench's streams)
        self.loop = loop  # False: neither looped nor played; the call's audio goes only where ``also`` routes it
        self._endpoint: SipEndpoint | None = None
        self._held: dict[str, Any] = {"calls": []}

    def start(self) -> None:
        endpoint = self._endpoint = _endpoint(
            self.port, "loop", "callbridge-loopback", rtp_port=self.rtp_port, rtp_port_range=self.rtp_port_range
        )
        self._held["account"] = endpoint.create_account(self._incoming)
        if self.play is not None:
            _hold_player(endpoint, self._held, self.play)
        endpoint.on_release(self._release)

    @property
    def sip_port(self) -> int:
        assert self._endpoint is not None
        return self._endpoint.sip_port

    @property
    def max_calls(self) -> int:
        assert self._endpoint is not None
        return self._endpoint.max_calls

    def _incoming(self, prm: Any) -> None:
        call = _LoopCall(self._held["account"], prm.callId, self._connect)
        self._held["calls"].append(call)
        with contextlib.suppress(pj.Error):
            call.answer(call_op(200))

    def _connect(self, media: Any) -> None:
        if not self.loop:
            pass
        elif self._held.get("player") is None:
            media.startTransmit(media)  # the call's audio back to itself, in the conference bridge
        else:
            self._held["player"].startTransmit(media)
            media.startTransmit(self._held["speaker"])
        if self.also is not None and self._endpoint is not None:
            self.also(self._endpoint, media)

    def _release(self) -> None:
        for call in self._held.get("calls", []):
            call.media = None
        self._held.clear()

    async def close(self) -> None:
        if self._endpoint is not None:
            await self._endpoint.close()
