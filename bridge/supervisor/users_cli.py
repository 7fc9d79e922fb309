"""``callbridge users``: the console's accounts in the users file (:mod:`bridge.supervisor.accounts`).

::

    callbridge users add NAME --role viewer|supervisor|admin [--file PATH] [--password-stdin]
    callbridge users token NAME [--file PATH]     # prints a new API token once (kept only as its SHA-256)
    callbridge users remove NAME [--file PATH]
    callbridge users list [--file PATH]
    callbridge users unlock [NAME] [--source ADDR] [--config FILE]  # a running serve forgets sign-in failures

The file is ``--file``, else ``serve``'s ``users_file`` setting (its settings file, ``--config`` or
``$CALLBRIDGE_CONFIG``, and ``$CALLBRIDGE_USERS_FILE`` over it): the file ``serve`` reads. With neither, the file is
``./users.yaml`` and every change says, with the file's absolute path, that ``serve`` will not read it until
``users_file`` names it (``serve`` with no users file stays on the demo token).
The password is asked twice on the terminal (or read from standard input with ``--password-stdin``) and only its
scrypt hash is written. ``unlock`` is not the file's: it asks the running ``serve`` (``bridge.serve.control_cli``).
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path

from bridge.cli import build_parser
from bridge.config import add_config_flag, load_settings
from bridge.errors import ConfigError
from bridge.supervisor.accounts import ROLES, add_token, add_user, load_users, save_users


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ConfigError("users", "password", "the two entries differ")
    return first


def main(argv: list[str]) -> int:
    parser = build_parser("users", "the supervisor console's accounts (the users file)")
    parser.add_argument(
        "action",
        choices=("add", "token", "remove", "list"),
        help="add an account (asks for its password), issue it an API token (printed once), remove it, or list them "
        "(`callbridge users unlock NAME`: clear its failed sign-ins in the running serve)",
    )
    parser.add_argument("name", nargs="?", default="", help="the account's name (add, token, remove)")
    parser.add_argument("--role", choices=ROLES, help="add: the account's role")
    parser.add_argument(
        "--file", type=Path, help="the users file (default: serve's users_file setting, else ./users.yaml)"
    )
    add_config_flag(parser)
    parser.add_argument("--json", action="store_true", help="list: one JSON object (name -> role and token count)")
    parser.add_argument("--password-stdin", action="store_true", help="add: read the password from standard input")
    args = parser.parse_args(argv)
    try:
        served = load_settings(args.config).users_file
        path: Path = args.file or served or Path("users.yaml")
        users = load_users(path)
        if args.action == "list":
            if args.json:
                listed = {n: {"role": a.role, "tokens": len(a.tokens)} for n, a in sorted(users.accounts.items())}
                print(json.dumps(listed))
                return 0
            for name, account in sorted(users.accounts.items()):
                print(f"{name}\t{account.role}\t{len(account.tokens)} token(s)")
            return 0
        if not args.name:
            parser.error(f"{args.action} needs an account NAME")
        if args.action == "add":
            if args.role is None:
                parser.error("add needs --role (" + "|".join(ROLES) + ")")
            save_users(path, add_user(users, args.name, args.role, _password(args.password_stdin)))
            print(f"{args.name}: {args.role} in {path}", file=sys.stderr)
        elif args.action == "token":
            users, token = add_token(users, args.name)
            save_users(path, users)
            print(token)  # shown once; the file keeps only its digest
        elif users.get(args.name) is None:
            raise ConfigError(str(path), f"users.{args.name}", "no such account")
        else:
            save_users(path, users.without(args.name))
    except ConfigError as exc:
        print(f"callbridge users: {exc}", file=sys.stderr)
        return 2
    if args.action != "list" and not _is_served(path, served):
        print(_unread_warning(path, served), file=sys.stderr)
    return 0


def _is_served(path: Path, served: Path | None) -> bool:
    return served is not None and path.resolve() == served.resolve()


def _unread_warning(path: Path, served: Path | None) -> str:
    """What a change to a file ``serve`` does not read must say: a console that stays on the demo token otherwise
    looks like accounts that do not work."""
    where = path.resolve()
    if served is not None:
        return f"callbridge users: note: serve reads {served.resolve()} (its users_file), not {where}"
    return (
        f"callbridge users: note: serve does not read {where}: no users_file is set, so serve stays on the demo "
        f"token; set `users_file: {where}` in serve's settings file or CALLBRIDGE_USERS_FILE={where}"
    )
