"""The softphone's command line and one-call helpers, for tests, QA and the demo: place a call (play a WAV, record,
send DTMF, hang up) or listen. The user agent itself is :class:`bridge.sip.phone.Softphone`.

::

    callbridge call sip:100@127.0.0.1:5060 ...       # = python -m bridge.devkit.softphone call ...
    callbridge phone listen --port 5070 ...          # = python -m bridge.devkit.softphone listen ...

    python -m bridge.devkit.softphone call sip:100@127.0.0.1:5060 --play caller.wav --record heard.wav \\
        --dtmf 12#@1.5 --hangup-after 6 --json
    python -m bridge.devkit.softphone listen --port 5070 --record agent.wav --duration 20 --calls 1 --json

``--json`` prints the summary :mod:`bridge.sip.phone` describes.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.audio.line import LineEcho
from bridge.devkit.timeline import call_timeline, timeline_line
from bridge.sip.legs import DTMF_DIGITS
from bridge.sip.phone import CallPlan, ListenPlan, Softphone
from bridge.sip.sipconfig import SipConfig, SrtpMode
from bridge.sip.sipmsg import Transport, host_part


def _default_host(uri: str) -> str:
    """Bind to loopback for a loopback target (tests), else to all interfaces."""
    host = host_part(uri).split(":", 1)[0].strip("[]")
    try:
        return "127.0.0.1" if ipaddress.ip_address(host).is_loopback else "0.0.0.0"
    except ValueError:
        return "127.0.0.1" if host == "localhost" else "0.0.0.0"


SIP_TRACE_CHARS = 64_000  # the softphone's SIP trace keeps whole packets (escaped as every log line is)


# -- public coroutine API ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PhoneSetup:
    """This phone's end of a call it places (:meth:`config`) or answers (:meth:`answering`): where it binds (``host``
    None: loopback when answering or calling a loopback target, else all interfaces; ``port`` 0: any), pjsua's log
    level, ``auth`` (user, password) for a digest challenge (401) from the called side, ``concealment`` False to
    record a frame that came too late as silence (no packet loss concealment, as a measuring phone should),
    ``jitter_buffer_ms`` its jitter buffer's floor (0: pjmedia's defaults, as most phones keep them;
    :attr:`SipConfig.jitter_buffer_ms`). A ``sips:`` URI is called over TLS (verified against ``tls_ca`` if given)
    with SRTP ``srtp`` (None: mandatory for ``sips:``, off otherwise)."""

    host: str | None = None
    port: int = 0
    log_level: int = 0
    auth: tuple[str, str] | None = None
    concealment: bool = True
    jitter_buffer_ms: int = 0
    srtp: SrtpMode | None = None
    tls_ca: str | Path | None = None
    rtp_port: int = 0  # its first RTP port (RTCP +1; the next pairs up if taken); 0: any

    def config(self, uri: str) -> SipConfig:
        """The endpoint that calls ``uri``."""
        secure = uri.lower().startswith("sips:")
        return self._endpoint(
            self.host or _default_host(uri),
            "softphone",
            (Transport.UDP, Transport.TLS) if secure else (Transport.UDP,),
            tls_ca=str(self.tls_ca or ""),
            srtp=self.srtp or (SrtpMode.MANDATORY if secure else SrtpMode.OFF),
        )

    def answering(self) -> SipConfig:
        """The endpoint that answers calls on ``host`` (None: loopback) and ``port``, UDP and TCP, as ``agent``."""
        return self._endpoint(self.host or "127.0.0.1", "agent", (Transport.UDP, Transport.TCP))

    def _endpoint(
        self, host: str, user: str, transports: tuple[Transport, ...], *, tls_ca: str = "", srtp: str = SrtpMode.OFF
    ) -> SipConfig:
        """The softphone's endpoint on ``host`` as ``user``: this setup's port, log, concealment, jitter buffer and
        RTP port, whichever end of the call it is."""
        return SipConfig(
            host=host,
            port=self.port,
            transports=transports,
            tls_ca=tls_ca,
            srtp=srtp,
            user=user,
            user_agent="callbridge-softphone",
            pjsua_log_level=self.log_level,
            pjsua_log_chars=SIP_TRACE_CHARS,
            concealment=self.concealment,
            jitter_buffer_ms=self.jitter_buffer_ms,
            rtp_port=self.rtp_port,
        )


async def place_call(uri: str, plan: CallPlan, setup: PhoneSetup = PhoneSetup()) -> dict[str, Any]:
    """Start an endpoint, place one call as ``plan`` says, close the endpoint, return the summary. One per process
    at a time."""
    async with Softphone(setup.config(uri), auth=setup.auth) as phone:
        return await phone.call(uri, plan)


async def listen(
    port: int,
    plan: ListenPlan,
    *,
    host: str = "127.0.0.1",
    log_level: int = 0,
    jitter_buffer_ms: int = 0,
    rtp_port: int = 0,
) -> dict[str, Any]:
    """Answer calls on ``host:port`` (UDP and TCP) as ``plan`` says; ``rtp_port``: the first RTP port (RTCP +1; the
    next pairs up if taken; 0: any)."""
    setup = PhoneSetup(host=host, port=port, log_level=log_level, jitter_buffer_ms=jitter_buffer_ms, rtp_port=rtp_port)
    async with Softphone(setup.answering()) as phone:
        return await phone.listen(plan)


# -- command line ------------------------------------------------------------------------------------------


def parse_auth(text: str) -> tuple[str, str]:
    """``"trunk1:secret"`` -> ``("trunk1", "secret")`` (the password may contain colons)."""
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise argparse.ArgumentTypeError("expected USER:PASSWORD")
    return user, password


def parse_echo(text: str) -> LineEcho:
    """``"-14@120"`` -> the line returns what the phone hears 14 dB down, 120 ms late; ``"-14@120/-55"`` adds
    white noise at -55 dBFS."""
    level, _, rest = text.partition("@")
    delay, _, noise = rest.partition("/")
    try:
        return LineEcho(float(level), float(delay), float(noise) if noise else None)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad echo {text!r}: expected DB@MS or DB@MS/NOISE_DBFS ({exc})") from None


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
    parser.add_argument("uri", help="SIP URI to call, e.g. sip:100@127.0.0.1:5060 (sips:...: TLS and SRTP)")
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
    parser.add_argument(
        "--rtp-port", type=int, default=0, metavar="P", help="local RTP port, RTCP on P+1 (default: any free one)"
    )
    parser.add_argument("--host", help="local bind address (default: loopback for loopback targets)")
    parser.add_argument("--log-level", type=int, default=0, help="pjsua log level 0-6 (to stderr)")
    parser.add_argument(
        "--auth",
        metavar="USER:PASSWORD",
        type=parse_auth,
        help="answer a digest challenge (401) with these credentials (default: $CALLBRIDGE_SIP_AUTH)",
    )
    parser.add_argument(
        "--no-plc",
        action="store_true",
        help="no packet loss concealment: a frame that comes too late is recorded as silence (for measuring)",
    )
    _add_jitter_buffer(parser)
    parser.add_argument(
        "--srtp",
        type=SrtpMode,
        choices=tuple(SrtpMode),
        help="SRTP (SDES) of the call; default: mandatory for a sips: URI (over TLS), off otherwise",
    )
    parser.add_argument("--tls-ca", metavar="PEM", help="verify the called side's TLS certificate against this CA")
    echo = "the line returns what this phone hears DB down (e.g. -14), MS late, with white noise at NOISE dBFS"
    parser.add_argument("--echo", metavar="DB@MS[/NOISE]", type=parse_echo, help=echo)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="print what this phone saw and heard, second by second after the answer (as `callbridge demo` does)",
    )


def _add_jitter_buffer(parser: argparse.ArgumentParser) -> None:
    help_ = "the jitter buffer's floor in ms (0: pjmedia's adaptive defaults, from one frame)"
    parser.add_argument("--jitter-buffer-ms", type=int, default=0, metavar="MS", help=help_)


def add_listen_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=5070, help="SIP port to listen on (UDP and TCP)")
    parser.add_argument(
        "--rtp-port", type=int, default=0, metavar="P", help="local RTP port, RTCP on P+1 (default: any free one)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address")
    parser.add_argument("--record", metavar="WAV", help="record each call (2nd call: NAME-1.wav, ...)")
    parser.add_argument("--play", metavar="WAV", help="WAV to play into answered calls")
    parser.add_argument("--loop", action="store_true", help="repeat --play")
    parser.add_argument("--answer-after", metavar="S", type=float, default=0.0, help="ring this long first")
    parser.add_argument("--duration", metavar="S", type=float, default=60.0, help="stop listening after S")
    parser.add_argument("--calls", type=int, help="stop after this many calls have ended")
    _add_jitter_buffer(parser)
    parser.add_argument("--log-level", type=int, default=0, help="pjsua log level 0-6 (to stderr)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def call_plan(args: argparse.Namespace) -> tuple[CallPlan, PhoneSetup]:
    """What ``callbridge call``'s arguments ask for: the call, and this phone's end of it."""
    plan = CallPlan(
        play=args.play,
        loop_play=args.loop,
        record=args.record,
        dtmf=args.dtmf,
        hangup_after=args.hangup_after,
        answer_timeout=args.timeout,
        echo=args.echo,
    )
    setup = PhoneSetup(
        host=args.host,
        port=args.local_port,
        log_level=args.log_level,
        auth=args.auth or _env_auth(),
        concealment=not args.no_plc,
        jitter_buffer_ms=args.jitter_buffer_ms,
        srtp=args.srtp,
        tls_ca=args.tls_ca,
        rtp_port=args.rtp_port,
    )
    return plan, setup


def run_call(args: argparse.Namespace) -> int:
    """Exit status: 0 answered, 2 not answered (rejected, failed, timed out)."""
    plan, setup = call_plan(args)
    summary = asyncio.run(place_call(args.uri, plan, setup))
    _print(summary, args.json)
    if args.timeline and not args.json:
        for t_ms, kind, text in call_timeline(summary, args.dtmf):
            print(timeline_line(t_ms, kind, text), flush=True)
    return 0 if summary["answered"] else 1  # not answered: the work failed (2 is a usage error)


def _env_auth() -> tuple[str, str] | None:
    """``CALLBRIDGE_SIP_AUTH=USER:PASSWORD``: keeps the password off the command line (and out of ``ps``)."""
    text = os.environ.get("CALLBRIDGE_SIP_AUTH", "")
    return parse_auth(text) if text else None


def listen_plan(args: argparse.Namespace) -> ListenPlan:
    """What ``callbridge phone listen``'s arguments ask for."""
    return ListenPlan(
        record=args.record,
        play=args.play,
        loop_play=args.loop,
        answer_after=args.answer_after,
        duration=args.duration,
        calls=args.calls,
    )


def run_listen(args: argparse.Namespace) -> int:
    run = listen(
        args.port,
        listen_plan(args),
        host=args.host,
        log_level=args.log_level,
        jitter_buffer_ms=args.jitter_buffer_ms,
        rtp_port=args.rtp_port,
    )
    _print(asyncio.run(run), args.json)
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
