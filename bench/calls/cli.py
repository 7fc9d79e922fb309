"""``callbridge bench calls``'s command line, and the roles its subprocesses run (``--role caller|loopback``)."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import bench.calls
from bridge.audio.frames import BEAT_FRAMES, MAX_BEAT_FRAMES
from bridge.runtime.sched import MAX_PRIORITY, use_realtime


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callbridge bench calls", description=(bench.calls.__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per step and line, then a summary")
    parser.add_argument("--max-calls", type=int, default=16, help="largest step (default 16)")
    parser.add_argument("--step", type=int, default=4, help="calls added per step (default 4)")
    parser.add_argument("--seconds", type=float, default=12.0, help="measured window per step (default 12)")
    parser.add_argument(
        "--steps",
        help="comma-separated call counts to run instead of --step/--max-calls, e.g. 112,128,144 (to probe near "
        "the limits a full ladder found; the summary then counts only these steps)",
    )
    parser.add_argument(
        "--only", choices=("bridge", "ceiling"), help="run one path only (with --front: bridge and front)"
    )
    _path_arguments(parser)
    parser.add_argument(
        "--ceiling",
        default="loop",
        help="the ceiling's callee, or several comma-separated (the first is the ceiling path, each other a path "
        "of its own name, in the same run): loop each call's audio back to itself in the conference bridge "
        "(default), or play a looped recording to it and take its audio in (what it sends then does not depend on "
        "what it receives, as in the bridge), or (stream) loop it back and also send it to a socket as a worker "
        "sends it to the model, from the clock thread in C, or (duplex) send it so and play the model's audio "
        "deltas the socket brings back, read, decoded and downsampled in C (the floor of the model's I/O both ways), "
        "or (equal) do so with a worker's work: the C echo guard on every call, the model's audio at the workers' "
        "pace (the equal-work floor), or (wss) that over TLS through the native TLS engine both ways",
    )
    parser.add_argument(
        "--every-step",
        action="store_true",
        help="run every step of every path even after one failed (to compare CPU per call at each step on a busy "
        "machine; the capacities are then read from the pass column, not the summary's first failure)",
    )
    parser.add_argument(
        "--realtime-priority",
        type=int,
        default=0,
        help="run the system under test (bridge workers, loopback apps) SCHED_RR at this priority, as "
        "`serve --realtime-priority` does; the load callers and the emulator stay ordinary (default 0: none)",
    )
    parser.add_argument(
        "--media-beat",
        type=int,
        default=BEAT_FRAMES,
        help=f"the bridge workers' media beat in 20 ms ticks, as `serve`'s media_beat_frames (default {BEAT_FRAMES})",
    )
    parser.add_argument(
        "--redis",
        action="store_true",
        help="the bridge paths' workers write their calls to a private redis-server, and each step reports the "
        "Redis commands and bytes per call-second over its window, by key kind",
    )
    parser.add_argument(
        "--count-calls",
        action="store_true",
        help="the bridge paths' workers count their event loop's Python and builtin calls per beat per call "
        "(sys.setprofile: a figure the machine's load does not move), while the model's audio arrives and when "
        "none does, each step and the summary against the goal (<= 15 Python calls while it arrives); the "
        "profiler slows the workers, so that run's CPU figures are not comparable",
    )
    _role_arguments(parser)
    return parser


def _path_arguments(parser: argparse.ArgumentParser) -> None:
    """The paths run beside the bridge's, each compared with it in the same run."""
    parser.add_argument(
        "--front",
        choices=("kamailio",),
        help="also run the bridge's workers behind Kamailio, every call to its one address (the front path), and "
        "compare: capacity, Kamailio's CPU per call, added set-up time",
    )
    parser.add_argument(
        "--srtp",
        action="store_true",
        help="also run the bridge path with SRTP (the workers' srtp: mandatory, SDES offered by the callers over "
        "TLS, AES_CM_128_HMAC_SHA1_80) and compare the workers' CPU per call with the plain path's in the same run",
    )
    parser.add_argument(
        "--model-tls",
        action="store_true",
        help="also run the bridge path with the model over TLS (wss://, as OpenAI is reached: an emulator with a "
        "self-signed certificate the workers trust) and compare the workers' CPU per call and inbound latency "
        "with the plain ws:// path's in the same run",
    )
    parser.add_argument(
        "--otel",
        action="store_true",
        help="also run the bridge path with every call traced (tracing: otlp, sampling 100%%, spans exported to a "
        "local OTLP/HTTP receiver) and compare the workers' CPU per call with the untraced path's in the same run "
        "(goal <= 1.05x)",
    )
    parser.add_argument(
        "--echo-off",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the bridge path with the plan's echo guard off (echo_off; the bridge path runs the plan's "
        "defaults, the guard on) and compare the workers' CPU per call in the same run (default: on; "
        "--no-echo-off skips it)",
    )


def _role_arguments(parser: argparse.ArgumentParser) -> None:
    """The internal roles' arguments (the benchmark's subprocesses), hidden from --help."""
    parser.add_argument("--role", choices=("bench", "caller", "loopback"), default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--uris", help=argparse.SUPPRESS)
    parser.add_argument("--play", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--tls-port", dest="tls_port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rtp-port", dest="rtp_port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rtp-port-range", dest="rtp_port_range", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--srtp-mode", dest="srtp_mode", default="off", help=argparse.SUPPRESS)
    parser.add_argument("--tls-ca", dest="tls_ca", default="", help=argparse.SUPPRESS)
    parser.add_argument("--sink", default="", help=argparse.SUPPRESS)
    parser.add_argument("--duplex", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--equal-hold", dest="equal_hold", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--sink-ca", dest="sink_ca", default="", help=argparse.SUPPRESS)
    parser.add_argument("--record", default="", help=argparse.SUPPRESS)


def _run_role(args: argparse.Namespace) -> int:
    from bench.calls.callers import RolePorts, run_caller, run_loopback

    ports = RolePorts(args.port, args.tls_port, args.rtp_port, args.rtp_port_range)
    if args.role == "caller":
        record = Path(args.record) if args.record else None
        uris, play = args.uris.split(","), Path(args.play)
        result = asyncio.run(run_caller(uris, play, args.srtp_mode, args.tls_ca, record, ports))
        print(json.dumps(result), flush=True)
        return 0
    use_realtime(args.realtime_priority)  # before pjsua starts, as a worker does
    played = Path(args.play) if args.play else None
    return asyncio.run(run_loopback(ports, played, args.sink, args.duplex, args.equal_hold, args.sink_ca))


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.max_calls < 1 or args.step < 1 or args.seconds <= 0:
        parser.error("--max-calls, --step and --seconds must be positive")
    if not 0 <= args.realtime_priority <= MAX_PRIORITY:
        parser.error(f"--realtime-priority must be 0..{MAX_PRIORITY}")
    if not 1 <= args.media_beat <= MAX_BEAT_FRAMES:
        parser.error(f"--media-beat must be 1..{MAX_BEAT_FRAMES}")


CEILINGS = ("loop", "play", "stream", "duplex", "equal", "wss")


def _ceilings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    kinds = [k.strip() for k in args.ceiling.split(",") if k.strip()]
    wrong = [k for k in kinds if k not in CEILINGS]
    if not kinds or wrong or len(set(kinds)) != len(kinds):
        parser.error(f"--ceiling must be one or more of {', '.join(CEILINGS)}, comma-separated, each once")
    return kinds


def _steps(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[int]:
    steps = list(range(args.step, args.max_calls + 1, args.step)) or [args.max_calls]
    if args.steps:
        try:
            steps = sorted({int(x) for x in args.steps.split(",") if x.strip()})
        except ValueError:
            parser.error(f"--steps must be comma-separated positive integers, not {args.steps!r}")
        if not steps or steps[0] < 1:
            parser.error("--steps must be comma-separated positive integers")
    return steps


def _paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    kinds = _ceilings(parser, args)
    paths = [args.only] if args.only else ["bridge", "ceiling"]
    if "ceiling" in paths:  # each further kind of ceiling right after the first, a path of its own name
        paths[paths.index("ceiling") + 1 : paths.index("ceiling") + 1] = kinds[1:]
    if args.front:
        from bridge.serve.front import require_kamailio
        from bridge.serve.front_files import FrontError

        try:
            require_kamailio()
        except FrontError as exc:
            parser.error(str(exc))
        paths = ["bridge", "front"] + [p for p in paths if p == "ceiling" or p in CEILINGS]
    if args.srtp:
        if "bridge" not in paths:
            parser.error("--srtp compares with the bridge path: not with --only ceiling")
        paths.insert(paths.index("bridge") + 1, "srtp")
    if args.model_tls:
        if "bridge" not in paths:
            parser.error("--model-tls compares with the bridge path: not with --only ceiling")
        paths.insert(paths.index("bridge") + 1, "model_tls")
    if args.otel:
        if "bridge" not in paths:
            parser.error("--otel compares with the bridge path: not with --only ceiling")
        paths.insert(paths.index("bridge") + 1, "otel")
    if args.echo_off and "bridge" in paths:
        paths.insert(paths.index("bridge") + 1, "echo_off")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.role != "bench":
        return _run_role(args)
    from bench.calls.ladder import run_bench

    _check(parser, args)
    steps = _steps(parser, args)
    paths = _paths(parser, args)
    return asyncio.run(
        run_bench(
            steps,
            args.seconds,
            args.json,
            paths,
            args.realtime_priority,
            args.media_beat,
            args.ceiling,
            args.every_step,
            args.redis,
            args.count_calls,
        )
    )
