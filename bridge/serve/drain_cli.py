"""``callbridge drain``: stop new calls to a node or a worker behind the front (its calls go on), or take them again
(``--undo``), through the front's control socket; ``list`` its workers and their states."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bridge.config import load_settings
from bridge.errors import ConfigError
from bridge.serve.front_files import FrontError, front_run_dir
from bridge.serve.front_rpc import ACTIVE, DRAINED, destinations_of, rpc_call, set_state


def drain_main(argv: list[str]) -> int:
    from bridge.cli import build_parser
    from bridge.config import add_config_flag

    parser = build_parser(
        "drain", "stop new calls to a node or a worker behind the front (its calls go on); --undo to resume"
    )
    parser.add_argument(
        "target",
        help='a worker "HOST:PORT", a node "HOST" (all its workers), or "all"; "list"; "node": this node\'s serve '
        "(its workers answer new calls 503, the front takes them out; SIGUSR1)",
    )
    parser.add_argument("--undo", action="store_true", help="take calls again")
    parser.add_argument("--front-dir", type=Path, help="the front's run directory (default: from the settings)")
    add_config_flag(parser)
    parser.add_argument("--sip-host", help="the node's SIP address (as serve)")
    parser.add_argument("--sip-port", type=int, help="the front's SIP port (as serve)")
    parser.add_argument("--json", action="store_true", help="the workers and their states as JSON")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config, sip_host=args.sip_host, sip_port=args.sip_port, front_dir=args.front_dir)
    except ConfigError as exc:
        print(f"callbridge drain: {exc}", file=sys.stderr)
        return 2
    if args.target == "node":  # this node's serve: its workers refuse new calls (503) and the front takes them out
        from bridge.serve.control import ask

        return ask(settings, "resume" if args.undo else "drain")
    sock_path = front_run_dir(settings) / "rpc.sock"
    try:
        if args.target == "list":
            chosen = destinations_of(rpc_call(sock_path, "dispatcher.list"))
        else:
            chosen = set_state(sock_path, args.target, ACTIVE if args.undo else DRAINED)
    except FrontError as exc:
        print(f"callbridge drain: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([d.to_json() for d in chosen]))
    else:
        for d in chosen:
            print(f"{d.address:<24} {d.state.word:<10} {d.load}/{d.max_calls} calls")
    return 0
