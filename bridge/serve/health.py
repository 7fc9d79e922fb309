"""``callbridge health``: is the ``serve`` of these settings healthy? The container's HEALTHCHECK and a monitor's
probe.

::

    callbridge health [the flags of serve] [--timeout S] [--json]

It reads the settings as ``serve`` does (the same file, variables and flags: bridge/config.py), so it asks the
address ``serve`` listens on: ``http(s)://<http_host>:<http_port>/healthz`` (loopback when ``http_host`` is a
wildcard). Healthy: ``/healthz`` answers 200 (serve's own readiness: workers ready, Redis answering, no model
breaker open), every worker alive and ready, the front (with ``front: kamailio``) alive. A 503's body says why,
given a token (``http_metrics_token``, else ``CALLBRIDGE_SUPERVISOR_TOKEN``; without one ``/healthz`` says only
whether it is ready).
Healthy but degraded: a worker's Redis writes wait (an outage, a Sentinel failover being re-synced); calls go on and
their state is queued, so this is still exit 0, with the reason printed. What the settings leave open to the network
(:func:`bridge.sip.exposure.open_warnings`: plain SIP or a plain-HTTP console off loopback, no allow-list) is printed
as warnings, healthy or not. Exit 0 healthy, 1 not (or no answer), 2 a configuration error (no ``http_port``:
nothing to ask).
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from typing import Any

from bridge.config import SUPERVISOR_TOKEN_ENV, WILDCARD_HOSTS, Settings
from bridge.errors import ConfigError

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_USAGE = 0, 1, 2
DETAIL_TOKENS = f"http_metrics_token or {SUPERVISOR_TOKEN_ENV}"
PROG = "callbridge health"


def problems(health: dict[str, Any], front: bool) -> list[str]:
    """What makes a ``/healthz`` answer unhealthy; empty: healthy. An answer without its detail (no token:
    ``{"ready"}`` alone) says only whether."""
    if "workers" not in health and "ready" in health:
        return [] if health["ready"] else [f"not ready (the reasons are for a token: {DETAIL_TOKENS})"]
    workers = health.get("workers") or []
    found = [str(p) for p in health.get("problems") or []]  # serve's own reasons for a 503
    found += [] if workers else ["no workers"]
    for worker in workers:
        if not worker.get("alive"):
            found.append(f"worker {worker.get('index')} is not running")
        elif not worker.get("ready", True):
            found.append(f"worker {worker.get('index')} is starting")
    if front and not (health.get("front") or {}).get("alive"):
        found.append("the front (Kamailio) is not running")
    return found


def main(argv: list[str]) -> int:
    from bridge.cli import build_parser
    from bridge.serve.pool import add_settings_flags, settings_from_args

    parser = build_parser("health", "is this node's serve healthy? (exit 0 healthy, 1 not, 2 a configuration error)")
    add_settings_flags(parser)
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer (default 3)")
    parser.add_argument("--json", action="store_true", help="{healthy, problems, url, health} as JSON")
    args = parser.parse_args(argv)
    try:
        settings, _ = settings_from_args(args)
        if settings.http_port is None:
            raise ConfigError("settings", "http_port", "health asks serve's HTTP API: set CALLBRIDGE_HTTP_PORT")
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    host = "127.0.0.1" if settings.http_host in WILDCARD_HOSTS else settings.http_host
    scheme = "https" if settings.http_tls_cert is not None else "http"
    url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{settings.http_port}/healthz"
    try:
        health = _fetch(url, args.timeout, _token(settings))
        found = list(dict.fromkeys(problems(health, settings.front != "none")))
    except (OSError, ValueError, urllib.error.URLError) as exc:
        health, found = {}, [f"no answer from {url}: {exc}"]
    degraded = [str(d) for d in health.get("degraded") or []]
    from bridge.sip.exposure import open_warnings

    warnings = open_warnings(settings)
    if args.json:
        print(json.dumps({"healthy": not found, "problems": found, "degraded": degraded, "warnings": warnings,
                          "url": url, "health": health}))  # fmt: skip
        return EXIT_HEALTHY if not found else EXIT_UNHEALTHY
    if found:
        print(f"UNHEALTHY ({url}): " + "; ".join(found))
    else:
        print(f"healthy ({url})" + (", degraded: " + "; ".join(degraded) if degraded else ""))
    for warning in warnings:
        print(f"warning: open: {warning}")
    return EXIT_HEALTHY if not found else EXIT_UNHEALTHY


def _token(settings: Settings) -> str | None:
    """What opens ``/healthz``'s detail here: the metrics token, else the demo operator token, else nothing."""
    if settings.http_metrics_token is not None:
        return settings.http_metrics_token.get_secret_value()
    return os.environ.get(SUPERVISOR_TOKEN_ENV) or None


def _fetch(url: str, timeout_s: float, token: str | None = None) -> dict[str, Any]:
    """``/healthz``'s body, a 503's too (it names the problems, given a ``token``). HTTPS is not verified: this is
    the node's own address, which its certificate need not name."""
    context = None
    if url.startswith("https:"):
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as answer:  # a URL we built
            return dict(json.load(answer))
    except urllib.error.HTTPError as refused:
        if refused.code != 503:
            raise
        return dict(json.load(refused))
