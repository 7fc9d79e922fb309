"""The start-up check of who a node's workers answer (``callbridge serve``): closed by default.

The rule itself is pure (:func:`bridge.sip.access.exposure`); this reads it off :class:`~bridge.config.Settings` and
turns a refusal into a :class:`~bridge.errors.ConfigError` that names the settings. No pjsua2 here.
"""

from __future__ import annotations

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.sip.access import exposure


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
