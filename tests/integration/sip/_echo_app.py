"""Gateway test app, run as a subprocess by the SIP integration tests (a pjsua2 Endpoint is one per process).

It answers calls through :class:`bridge.sip.service.SipGateway`, plays a tone (or echoes the caller back),
collects what the app side sees, and on exit (SIGTERM/SIGINT, or ``--exit-after-calls``) closes the gateway and
prints one JSON report line on stdout: per call the identity fields, received audio stats, DTMF digits in order,
transfer progress, how it ended, and whether ``on_frame`` ran on the event loop thread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from prometheus_client import REGISTRY

from bridge.audio.analysis import audio_stats, tone
from bridge.audio.frames import FrameSource
from bridge.audio.wav import write_wav
from bridge.events import CallerHungUp, Dtmf, TransferProgress
from bridge.sip.crossing import FrameQueue
from bridge.sip.endpoint import CallGone, SipError
from bridge.sip.gateway import IncomingCall
from bridge.sip.phone import PcmSource
from bridge.sip.service import SipGateway
from bridge.sip.sipconfig import SipConfig


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=("tone", "echo", "silent"), default="tone")
    p.add_argument("--tone-hz", type=float, default=600.0)
    p.add_argument("--tone-dbfs", type=float, default=-12.0)
    p.add_argument("--ring", type=float, default=0.0, help="send 180, answer after this many seconds")
    p.add_argument("--reject", type=int, help="reject every call with this code")
    p.add_argument("--retry-after", type=int)
    p.add_argument("--max-active", type=int, help="app-level cap: beyond it, reject 503 with Retry-After")
    p.add_argument("--transfer-to", help="REFER the caller here after --transfer-after seconds")
    p.add_argument("--transfer-after", type=float, default=1.0)
    p.add_argument("--hangup-after", type=float, help="hang up this long after answering")
    p.add_argument("--exit-after-calls", type=int)
    p.add_argument("--send-dtmf", help="DIGITS@SECONDS: send RFC 4733 digits to the caller after answering")
    p.add_argument("--rtp-port", type=int, default=0)
    p.add_argument("--public-address", default="", help="SipConfig.public_address")
    p.add_argument("--tls-port", type=int, help="listen on TLS too (SipConfig.tls_port), with --tls-cert/--tls-key")
    p.add_argument("--tls-cert", default="")
    p.add_argument("--tls-key", default="")
    p.add_argument("--srtp", default="off", help="SipConfig.srtp")
    p.add_argument("--rtp-public-address", default="", help="SipConfig.rtp_public_address")
    p.add_argument("--rtp-range", type=int, default=0)
    p.add_argument("--status-file", help="rewrite {live, total, ended} here whenever a call comes, is answered or ends")
    p.add_argument("--media-after-answer", action="store_true", help="start_media() after answer()")
    p.add_argument("--record-dir", help="write what each call sent us to DIR/<n>.wav (8 kHz PCM16)")
    p.add_argument("--log-level", type=int, default=1)
    p.add_argument("--allow", action="append", default=[], help="SipConfig.allowed_sources entry (repeatable)")
    p.add_argument("--auth-user", action="append", default=[], metavar="USER:PASSWORD", help="digest user")
    p.add_argument("--auth-realm", default="callbridge")
    p.add_argument("--auth-exempt", action="append", default=[], help="SipConfig.auth_exempt_sources entry")
    p.add_argument("--auth-max-failures", type=int, default=10, help="SipConfig.auth_max_failures")
    p.add_argument("--nonce-ttl", type=float, default=300.0)
    p.add_argument("--allow-any", action="store_true", help="SipConfig.allow_any_source")
    p.add_argument("--rtp-timeout", type=float, default=30.0, help="SipConfig.rtp_timeout_s")
    p.add_argument("--rtp-hold-timeout", type=float, default=600.0, help="SipConfig.rtp_hold_timeout_s")
    p.add_argument("--session-expires", type=int, default=1800, help="SipConfig.session_expires_s")
    p.add_argument("--min-se", type=int, default=90, help="SipConfig.session_min_se_s")
    p.add_argument("--dialplan-allow", action="append", default=[], help="IncomingCall.enforce_sources() entry")
    p.add_argument("--trusted-front", action="append", default=[], help="SipConfig.trusted_fronts entry")
    return p.parse_args(argv)


class App:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.reports: list[dict[str, Any]] = []
        self.ended = 0
        self.stop = asyncio.Event()
        self.loop_thread = threading.get_ident()
        self.gateway: SipGateway | None = None
        self.live = 0

    def _status(self, delta: int) -> None:
        self.live += delta
        if self.args.status_file:
            tmp = Path(self.args.status_file + ".tmp")
            tmp.write_text(json.dumps({"live": self.live, "total": len(self.reports), "ended": self.ended}))
            tmp.replace(self.args.status_file)

    async def on_incoming(self, call: IncomingCall) -> None:
        args = self.args
        assert self.gateway is not None
        report: dict[str, Any] = {
            "call_id": call.call_id,
            "sip_call_id": call.sip_call_id,
            "caller": call.caller,
            "called": call.called,
            "original_called": call.original_called,
            "remote_addr": call.remote_addr,
            "remote_ip": call.remote_ip,
            "auth_user": call.auth_user,
            "user_agent": call.headers.get("user-agent"),
            "active_at_invite": self.gateway.active_calls,
            "max_calls": self.gateway.max_calls,
            "dtmf": "",
            "dtmf_sources": "",  # per digit: "r" RFC 4733, "i" SIP INFO
            "holds": [],  # IncomingCall.held transitions seen: "held", "resumed"
            "events": [],
            "transfer": [],
            "answered": False,
            "index": len(self.reports),
        }
        self.reports.append(report)
        self._status(0)
        received = bytearray()
        frame_threads: set[bool] = set()
        first_frame: list[float] = []

        def on_frame(pcm: bytes, t_capture: float) -> None:
            received.extend(pcm)
            frame_threads.add(threading.get_ident() == self.loop_thread)
            if not first_frame:
                first_frame.append(time.monotonic() - t_capture)

        try:
            if args.dialplan_allow and not call.enforce_sources(args.dialplan_allow):
                report["refused_by_dialplan"] = True
            elif args.reject:
                call.reject(args.reject, retry_after=args.retry_after)
            elif args.max_active is not None and len(self.gateway.calls) > args.max_active:
                call.reject(503, "Service Unavailable", retry_after=args.retry_after or 30)
            else:
                await self._converse(call, report, on_frame)
            await call.disconnected.wait()
        finally:
            while not call.events.empty():
                self._record_event(report, call.events.get_nowait())
            stats: dict[str, Any] = dict(audio_stats(bytes(received)))
            if args.record_dir:
                path = Path(args.record_dir) / f"{report['index']}.wav"
                write_wav(path, bytes(received))
                report["recording"] = str(path)
            report.update(
                received=stats,
                codec=call.codec,
                srtp=call.srtp,
                hangup_code=call.hangup_code,
                hangup_reason=call.hangup_reason,
                dtmf_dropped=call.dtmf_dropped,
                local_hangup=call.local_hangup,
                end_cause=call.end_cause,
                on_frame_on_loop_thread=sorted(frame_threads),
                media=call.media_counters,
                rtp_dropped=call.rtp_dropped,
                handover_delay_ms=round(first_frame[0] * 1000, 2) if first_frame else None,
            )
            self.ended += 1
            self._status(-1 if report["answered"] else 0)
            if args.exit_after_calls and self.ended >= args.exit_after_calls:
                self.stop.set()

    async def _converse(self, call: IncomingCall, report: dict[str, Any], on_frame: Any) -> None:
        args = self.args
        outbound: FrameSource
        if args.mode == "echo":
            queue = FrameQueue()

            def echo(pcm: bytes, t_capture: float) -> None:
                on_frame(pcm, t_capture)
                queue.push(pcm)

            outbound, sink = queue, echo
        elif args.mode == "tone":
            # 1 s of tone loops seamlessly when the frequency is a whole number of Hz.
            outbound, sink = PcmSource(tone(args.tone_hz, 1.0, args.tone_dbfs), loop=True), on_frame
        else:
            outbound, sink = FrameQueue(), on_frame
        if not args.media_after_answer:
            call.start_media(outbound, sink)
        if args.ring:
            call.ringing()
            await asyncio.sleep(args.ring)
        try:
            call.answer()
        except CallGone as exc:  # CANCELled while ringing (487): answer() refuses a dead call
            logging.getLogger("echo_app").warning("late answer: %r", exc)
            report["cancelled_before_answer"] = True
            return
        if args.media_after_answer:  # the order CallSession uses
            call.start_media(outbound, sink)
        report["answered"] = True
        self._status(+1)
        loop = asyncio.get_running_loop()
        answered_at = loop.time()
        transfer: asyncio.Task[None] | None = None
        dtmf_digits, _, dtmf_at = (args.send_dtmf or "").partition("@")

        async def transfer_then_leave(uri: str) -> None:
            call.transfer(uri)
            try:
                result = await call.wait_transfer()
            except SipError as exc:
                report["transfer_result"] = str(exc)
                return
            report["transfer_result"] = result.status_code
            if result.status_code // 100 == 2:
                call.hangup()  # the transferor leaves on the final 2xx NOTIFY (RFC 3515)

        while not call.disconnected.is_set():
            if call.held != (report["holds"][-1:] == ["held"]):
                report["holds"].append("held" if call.held else "resumed")
            now = loop.time() - answered_at
            if args.transfer_to and transfer is None and now >= args.transfer_after:
                transfer = asyncio.create_task(transfer_then_leave(args.transfer_to))
            if dtmf_digits and now >= float(dtmf_at or 0):
                call.send_dtmf(dtmf_digits)
                report["dtmf_sent"] = dtmf_digits
                dtmf_digits = ""
            if args.hangup_after is not None and now >= args.hangup_after:
                call.hangup()
            try:
                event = await asyncio.wait_for(call.events.get(), 0.05)
            except TimeoutError:
                continue
            self._record_event(report, event)
        if transfer is not None:
            await transfer

    @staticmethod
    def _record_event(report: dict[str, Any], event: Any) -> None:
        report["events"].append(event.kind)
        if isinstance(event, Dtmf):
            report["dtmf"] += event.digit
            report["dtmf_sources"] += "i" if event.source == "info" else "r"
        elif isinstance(event, TransferProgress):
            report["transfer"].append([event.status_code, event.final])
        elif isinstance(event, CallerHungUp):
            report["hangup_event"] = [event.sip_code, event.reason]


async def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = App(args)
    config = SipConfig(
        host=args.host,
        port=args.port,
        rtp_port=args.rtp_port,
        public_address=args.public_address,
        transports=("udp", "tcp", "tls") if args.tls_port is not None else ("udp", "tcp"),
        tls_port=args.tls_port or 0,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        srtp=args.srtp,
        rtp_public_address=args.rtp_public_address,
        rtp_port_range=args.rtp_range,
        pjsua_log_level=args.log_level,
        allowed_sources=tuple(args.allow),
        auth_users=dict(entry.split(":", 1) for entry in args.auth_user),
        auth_realm=args.auth_realm,
        auth_exempt_sources=tuple(args.auth_exempt),
        auth_max_failures=args.auth_max_failures,
        auth_nonce_ttl_s=args.nonce_ttl,
        allow_any_source=args.allow_any,
        trusted_fronts=tuple(args.trusted_front),
        rtp_timeout_s=args.rtp_timeout,
        rtp_hold_timeout_s=args.rtp_hold_timeout,
        session_expires_s=args.session_expires,
        session_min_se_s=args.min_se,
    )
    rejections: list[dict[str, Any]] = []
    gateway = SipGateway(
        config,
        app.on_incoming,
        on_rejected=lambda r: rejections.append(
            {"status": r.status_code, "reason": r.reason, "source": r.source, "detail": r.detail}
        ),
    )
    app.gateway = gateway
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.stop.set)
    await gateway.start()
    await app.stop.wait()
    refused_held = len(gateway._refused)  # before close: refused calls still held (should be 0 once they ended)
    max_calls, cap_source = gateway.max_calls, gateway.endpoint.cap_source
    crossing = gateway.endpoint.crossing
    rejected = gateway.rejected
    await gateway.close()
    log_suppressed = gateway.endpoint.log_limiter.suppressed
    print(
        json.dumps(
            {
                "calls": app.reports,
                "max_calls": max_calls,
                "cap_source": cap_source,
                "listening": gateway.endpoint.listening,
                "crossing_dropped": crossing.dropped,
                "sink_errors": crossing.sink_errors,
                "calls_total": gateway.calls_total,
                "rejected": {str(code): count for code, count in rejected.items()},
                "rejections": rejections,
                "log_suppressed": log_suppressed,
                # what /metrics would show (one process: prometheus-client's default registry)
                "rtp_foreign_dropped_metric": REGISTRY.get_sample_value("callbridge_rtp_foreign_dropped_total"),
                "refused_held": refused_held,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
