"""The start-up check of who a node's workers answer (``callbridge serve``): closed by default.

The rule itself is pure (:func:`bridge.sip.access.exposure`); this reads it off :class:`~bridge.config.Settings` and
turns a refusal into a :class:`~bridge.errors.ConfigError` that names the settings. No pjsua2 here.
:func:`open_warnings` names what the settings leave open (each a WARNING at every start of ``serve``, and printed by
``callbridge health``): plain SIP off loopback, the console over plain HTTP off loopback, no allow-list, TLS peers
not verified, a Redis URL that turns the check of the Redis server's certificate off (``ssl_cert_reqs=none``).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.sip.access import exposure, is_loopback_host


def check_exposure(settings: Settings) -> str:
    """One line for the start-up log saying what is open; :class:`ConfigError` if ``serve`` must not start."""
    front: list[str] = []
    if settings.front != "none":  # the node's own front answers on sip_host: what it checks counts
        allowed = getattr(settings, "front_allowed_sources", ())
        if allowed:
            front.append(f"front_allowed_sources: {', '.join(allowed)}")
        if getattr(settings, "front_auth", False) and settings.sip_auth_users:
            front.append("front_auth")
    what, problem = exposure(
        settings.sip_host,
        allowed_sources=settings.sip_allowed_sources,
        auth_users=len(settings.sip_auth_users),
        trusted_fronts=settings.sip_trusted_fronts,
        allow_any=settings.sip_allow_any_source,
        front_screening=front,
    )
    if problem:
        raise ConfigError("settings", "sip_allowed_sources", problem)
    return what


def open_warnings(settings: Settings) -> list[str]:
    """What these settings leave open to the network; empty: nothing (see the module doc)."""
    found: list[str] = []
    sip_host = settings.sip_host or "*"
    if not is_loopback_host(settings.sip_host):
        found.append(
            f"plain SIP (UDP and TCP) on {sip_host}: signalling and SDP travel in the clear"
            + ("" if settings.sip_tls_port is not None else " and there is no TLS listener (sip_tls_port)")
        )
        allow = list(settings.sip_allowed_sources)
        if settings.front != "none":
            allow += settings.front_allowed_sources
        if not allow:
            found.append("no allow-list: any source may send SIP (sip_allowed_sources, front_allowed_sources)")
    if settings.http_port is not None and not is_loopback_host(settings.http_host) and settings.http_tls_cert is None:
        found.append(f"the console and API over plain HTTP on {settings.http_host or '*'} (http_tls_cert)")
    if not settings.sip_tls_verify:
        found.append("sip_tls_verify: false: TLS peers' certificates are not verified")
    found += redis_tls_warnings(settings.redis_url)
    return found


def redis_tls_warnings(url: str | None) -> list[str]:
    """``redis_url``'s query turning the TLS check of the Redis server off (redis-py's ``ssl_cert_reqs=none``, as
    any of the URL forms carries it); the URL itself is never quoted (it may hold the password)."""
    query = parse_qs(urlsplit(url or "").query, keep_blank_values=True)
    found = []
    if any(value.strip().lower() in ("none", "cert_none") for value in query.get("ssl_cert_reqs", [])):
        found.append(
            "redis_url has ssl_cert_reqs=none: the Redis server's TLS certificate is not verified (anyone on the "
            "path can read and change the calls' state); set ssl_ca_certs and ssl_cert_reqs=required"
        )
    return found
