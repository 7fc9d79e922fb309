"""What a trunk meets on day one when its addresses are not listed (``sip_trunk_sources``): one start-up line.

A carrier's SBC is one source address carrying many callers' calls. Unlisted, it is held to the limits meant for a
single caller: ``front_calls_per_source`` calls at once through the front (``sip_calls_per_source`` at each worker
without one), so its next call gets 486; and with ``front_auth``, a storm of wrong passwords for its digest user
from other addresses refuses the user's calls from every address while the guard lasts (the front's guard spares
only listed trunks: bridge/serve/kamailio/kamailio.cfg, route[AUTH]). :func:`unlisted_trunk_warning` says so once
at every start of ``serve``, naming what is limited and the setting that lists a trunk.
"""

from __future__ import annotations

from bridge.config import Settings

_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")


def ordinal(n: int) -> str:
    """``3`` -> ``"third"``; past ten, ``"11th"`` and so on."""
    return _ORDINALS[n - 1] if 0 < n <= len(_ORDINALS) else f"{n}th"


def unlisted_trunk_warning(settings: Settings) -> str:
    """The start-up line when no trunk is listed and a limit meant for one caller would hold a trunk; "" else."""
    if settings.sip_trunk_sources:
        return ""
    limits = []
    if settings.front == "kamailio":
        if settings.front_calls_per_source and not settings.front_allowed_sources:
            n = settings.front_calls_per_source
            limits.append(
                f"each source address holds at most {n} calls through the front at once (front_calls_per_source), "
                f"so a trunk's SBC gets 486 on its {ordinal(n + 1)} concurrent call"
            )
        if settings.front_auth and settings.sip_auth_users:
            limits.append(
                f"{settings.front_auth_user_failures} wrong passwords for a digest user from other addresses refuse "
                f"its calls from every address for {settings.front_auth_user_ban_s} s (front_auth_user_failures)"
            )
    # without a front: sources outside sip_allowed_sources call only where digest or any source is allowed (else
    # loopback callers only, who have no limit)
    elif (
        settings.sip_calls_per_source
        and not settings.sip_allowed_sources
        and (settings.sip_auth_users or settings.sip_allow_any_source)
    ):
        n = settings.sip_calls_per_source
        limits.append(
            f"each source address holds at most {n} calls at each worker at once (sip_calls_per_source), so a "
            f"trunk's SBC gets 486 on its {ordinal(n + 1)} concurrent call"
        )
    if not limits:
        return ""
    return (
        "trunks: none listed (sip_trunk_sources is empty): "
        + "; ".join(limits)
        + "; list each trunk's SBC addresses in sip_trunk_sources"
    )
