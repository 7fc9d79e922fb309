"""The start-up check of ``callbridge serve``: can this node reach its Realtime endpoint with its credential?

For each dialect the node's dialplans use (pinned plans and rollout variants alike), one credential request to that
dialect's own endpoint (its table's ``credential_path``, through :class:`~bridge.realtime.credentials.MintingSource`)
says in one round trip whether the URL is right (a wrong path is a 404), the key accepted (a 401 names
``invalid_api_key``), the service up, and the dialect still served. A dialect without a credential endpoint (Live
connects with the key itself) has nothing to ask before its first call. The problem it reports names the
URL, the HTTP status and the error code of the body; never the key. ``realtime_check`` (settings) says what a
failed check does: ``warn`` (log it, start anyway), ``require`` (refuse to start), ``off`` (no check).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from bridge.config import Settings
from bridge.dialplan import ROLLOUT, Dialplan, load_dialplans
from bridge.errors import ConfigError, ConnectError
from bridge.realtime.credentials import MintingSource
from bridge.realtime.dialects import DIALECTS, Dialect

log = logging.getLogger("bridge.serve")
TIMEOUT_S = 5.0


def dialects_in_use(plans: Iterable[Dialplan]) -> list[Dialect]:
    """The dialects the plans' calls can speak, in the tables' order, those with a credential endpoint only."""
    names: set[str] = set()
    for plan in plans:
        spec = plan.rollout_spec
        if spec is None:
            names.add(plan.dialect)
        else:
            names.update(v.dialect for v in spec.variants)
    names.discard(ROLLOUT)
    return [d for name, d in DIALECTS.items() if name in names and d.credential_path is not None]


async def check_endpoint(settings: Settings, dialect: Dialect) -> str | None:
    """None if a credential request to ``dialect``'s endpoint succeeds; else what is wrong (URL, status, code)."""
    try:
        source = MintingSource(dialect, settings.realtime_url, settings.credential, timeout_s=TIMEOUT_S)
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
    ok = True
    for dialect in dialects_in_use(load_dialplans(settings.dialplans)):
        problem = await check_endpoint(settings, dialect)
        if problem is None:
            url = settings.realtime_url.split("?", 1)[0]
            log.info("realtime endpoint %s (%s): reachable, credential accepted", url, dialect.name)
        elif settings.realtime_check == "require":
            log.error("realtime endpoint check failed (realtime_check: require, not starting): %s", problem)
            ok = False
        else:
            log.warning("realtime endpoint check failed (realtime_check: warn, starting anyway): %s", problem)
    return ok
