"""The start-up check of ``callbridge serve``: can this node reach its Realtime endpoint with its credential?

One credential request (``POST {base}/realtime/client_secrets``, the GA dialect's, through
:class:`~bridge.realtime.credentials.MintingSource`) says in one round trip whether the URL is right (a wrong path
is a 404), the key accepted (a 401 names ``invalid_api_key``) and the service up. The problem it reports names the
URL, the HTTP status and the error code of the body; never the key. ``realtime_check`` (settings) says what a
failed check does: ``warn`` (log it, start anyway), ``require`` (refuse to start), ``off`` (no check).
"""

from __future__ import annotations

import logging

from bridge.config import Settings
from bridge.errors import ConfigError, ConnectError
from bridge.realtime.credentials import MintingSource
from bridge.realtime.dialects import GA

log = logging.getLogger("bridge.serve")
TIMEOUT_S = 5.0


async def check_endpoint(settings: Settings) -> str | None:
    """None if a credential request to the endpoint succeeds; else what is wrong (URL, status, code)."""
    try:
        source = MintingSource(GA, settings.realtime_url, settings.credential, timeout_s=TIMEOUT_S)
        await source.credential()
    except ConfigError as exc:
        return str(exc)
    except ConnectError as exc:
        return str(exc)  # redacted by ConnectError; names the endpoint and the HTTP status
    return None


async def preflight(settings: Settings) -> bool:
    """Run the check as ``settings.realtime_check`` says; False: do not start."""
    if settings.realtime_check == "off":
        return True
    problem = await check_endpoint(settings)
    if problem is None:
        log.info("realtime endpoint %s: reachable, credential accepted", settings.realtime_url.split("?", 1)[0])
        return True
    if settings.realtime_check == "require":
        log.error("realtime endpoint check failed (realtime_check: require, not starting): %s", problem)
        return False
    log.warning("realtime endpoint check failed (realtime_check: warn, starting anyway): %s", problem)
    return True
