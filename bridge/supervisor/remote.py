"""The command line's client of the supervisor HTTP API: ``callbridge calls --api URL`` and ``callbridge rollout ...
--api URL`` read and change through the API, with its roles and its audit, from a laptop that has no Redis access
and no copy of the dialplans.

The account token comes from ``--token-file FILE``, else ``CALLBRIDGE_API_TOKEN`` or the file that
``CALLBRIDGE_API_TOKEN_FILE`` names; never from an argument (argv is visible to every user of the machine). It goes
only into the ``Authorization`` header. A refusal (401, 403) is a failure of the work (exit 1) that says which role
the change needs; a request the API finds wrong (400) names its field (exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from bridge.config import add_config_flag, load_settings, read_secret_file, secret_from_env
from bridge.errors import ConfigError
from bridge.store.read import CallDetail, CallSummary, StreamEntry
from bridge.store.times import unstamped

TOKEN_ENV = "CALLBRIDGE_API_TOKEN"
TIMEOUT_S = 10.0


class ApiError(Exception):
    """The API refused or could not be reached. ``usage``: the request itself was wrong (exit 2, not 1)."""

    def __init__(self, message: str, *, usage: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.usage = usage
        self.status = status


def add_api_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", metavar="URL", help="go through the supervisor HTTP API at URL (not Redis)")
    parser.add_argument(
        "--token-file", type=Path, help=f"the account token for --api (default: ${TOKEN_ENV} or ${TOKEN_ENV}_FILE)"
    )


def api_token(args: argparse.Namespace) -> str:
    """The token for ``--api``; :class:`ConfigError` naming where it was looked for."""
    if args.token_file is not None:
        token = read_secret_file(args.token_file, source="flag --token-file", setting="token").strip()
    else:
        token = (secret_from_env(TOKEN_ENV) or "").strip()
    if not token:
        raise ConfigError("flag --api", "token", f"no account token: pass --token-file FILE or set {TOKEN_ENV}(_FILE)")
    return token


class ApiClient:
    def __init__(self, base: str, token: str) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ApiError(f"--api wants an http:// or https:// URL, got {base!r}", usage=True)
        self.base = base.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S), headers=self._headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()

    async def request(self, method: str, path: str, body: Any = None, *, missing_ok: bool = False) -> Any:
        """The JSON answer; None for a 404 when ``missing_ok``. Raises :class:`ApiError` naming the URL."""
        assert self._http is not None
        url = self.base + path
        try:
            async with self._http.request(method, url, json=body) as answer:
                data = await answer.json(content_type=None) if answer.content_length != 0 else {}
                status = answer.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ApiError(f"{method} {url}: {type(exc).__name__}: {exc}") from None
        if status == 404 and missing_ok:
            return None
        if status >= 400:
            error = data.get("error", "") if isinstance(data, dict) else ""
            what = {401: "the token was refused", 403: "this account's role may not do this"}.get(status, "refused")
            raise ApiError(f"{method} {url}: {status} {what}: {error}".rstrip(": "), usage=status == 400, status=status)
        return data

    async def live_calls(self) -> list[CallSummary]:
        return [CallSummary(**unstamped(c)) for c in (await self.request("GET", "/api/calls"))["calls"]]

    async def one_call(self, call_id: str, count: int) -> CallDetail | None:
        found = await self.request("GET", f"/api/calls/{quote(call_id, safe='')}", missing_ok=True)
        if found is None:
            return None
        state = {k: "" if v is None else str(v) for k, v in unstamped(found["call"]).items()}  # as Redis holds it
        return CallDetail(state, [StreamEntry(**unstamped(e)) for e in found["events"]][-count:])


def calls_main(argv: list[str]) -> int:
    """``callbridge calls``: from Redis (the node itself: serve's settings, ``--redis-url`` over them), or with
    ``--api URL`` through the supervisor API."""
    from bridge.store import cli

    parser = cli.build_parser()
    add_config_flag(parser)
    add_api_flags(parser)
    args = parser.parse_args(argv)
    if not args.api:
        try:
            url = load_settings(args.config, redis_url=args.redis_url).redis_url
        except ConfigError as exc:
            print(f"{cli.PROG}: {exc}", file=sys.stderr)
            return cli.EXIT_USAGE
        return cli.run(args, url)
    problem = cli.check_args(args)
    try:
        if problem:
            raise ConfigError("flag --interval", "interval", problem)
        token = api_token(args)
        return asyncio.run(_calls(args, token))
    except ConfigError as exc:
        print(f"{cli.PROG}: {exc}", file=sys.stderr)
        return cli.EXIT_USAGE
    except ApiError as exc:
        print(f"{cli.PROG}: {exc}", file=sys.stderr)
        return cli.EXIT_USAGE if exc.usage else cli.EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return cli.EXIT_OK


async def _calls(args: argparse.Namespace, token: str) -> int:
    from bridge.store import cli

    async with ApiClient(args.api, token) as api:
        return await cli.show(args, api.live_calls, lambda call_id: api.one_call(call_id, args.events), args.api)
