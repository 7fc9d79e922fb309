"""Where webhooks go: the endpoints by name, and which events each gets. Pure (no I/O: secrets are read by
:func:`bridge.webhooks.delivery.secret_of` when an attempt is made).

* ``default``: the settings' ``webhook_url`` (secret ``webhook_secret``): every event of every dialplan.
* ``<dialplan>.<name>``: a dialplan's ``webhooks`` entry (:class:`WebhookSpec`; ``name`` defaults to its index):
  the listed ``events`` of that plan's calls (and its rollout's decisions).

A pending delivery stores the endpoint's name only; its URL and secret are looked up here when it is sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from bridge.config import check_caller
from bridge.tools.spec import Header, check_url
from bridge.webhooks.body import ALL_EVENTS, EventType

DEFAULT = "default"
CallerForm = Literal["viewer", "masked", "full"]


class WebhookSpec(BaseModel):
    """One entry of a dialplan's ``webhooks``: ``url`` (http or https, no credentials in it), ``secret`` read from
    the environment (``env``, or its ``_FILE`` form) or a file, never written in the plan, the ``events`` it gets
    (all by default), and the ``caller`` as it is sent: ``viewer`` (as the console's viewers see it: the last two
    digits), ``masked`` (as the plan's logs and Redis keep it: ``privacy.caller_visible_digits``) or ``full`` (only
    to an ``https://`` URL: :func:`bridge.config.check_caller`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    secret: Header
    events: tuple[EventType, ...] = ALL_EVENTS
    caller: CallerForm = "viewer"
    name: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")

    _check_url = field_validator("url")(check_url)

    @field_validator("caller")
    @classmethod
    def _caller_over_https(cls, value: CallerForm, info: ValidationInfo) -> CallerForm:
        check_caller(value, info.data.get("url"))
        return value

    @model_validator(mode="after")
    def _secret_by_reference(self) -> WebhookSpec:
        if self.secret.text is not None or self.secret.prefix:
            raise ValueError("secret: name env or file (a secret is never written in a dialplan)")
        if not self.events:
            raise ValueError("events: name at least one (or leave it out: all of them)")
        return self


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    url: str
    events: tuple[EventType, ...] = ALL_EVENTS
    dialplan: str | None = None  # None: every dialplan's events (the settings' endpoint)
    caller: CallerForm = "viewer"
    secret_ref: Header | None = None  # None: the settings' webhook_secret

    def wants(self, event_type: str, dialplan: str | None) -> bool:
        if event_type not in self.events:
            return False
        return self.dialplan is None or self.dialplan == dialplan


class PlanWebhooks(Protocol):
    """What a dialplan contributes: its name and its ``webhooks``."""

    @property
    def name(self) -> str: ...

    @property
    def webhooks(self) -> tuple[WebhookSpec, ...]: ...


def endpoints(
    webhook_url: str | None, plans: Iterable[PlanWebhooks], caller: CallerForm = "viewer"
) -> dict[str, Endpoint]:
    """Every configured endpoint by name (``caller``: the settings' endpoint's, ``webhook_caller``)."""
    found: dict[str, Endpoint] = {}
    if webhook_url:
        found[DEFAULT] = Endpoint(DEFAULT, webhook_url, caller=caller)
    for plan in plans:
        for i, spec in enumerate(plan.webhooks):
            name = f"{plan.name}.{spec.name or i}"
            found[name] = Endpoint(name, spec.url, spec.events, plan.name, spec.caller, spec.secret)
    return found


def targets(found: Mapping[str, Endpoint], event_type: str, dialplan: str | None) -> list[Endpoint]:
    """The endpoints that get one event of ``dialplan`` (None: an event of no plan, for the settings' endpoint)."""
    return [e for e in found.values() if e.wants(event_type, dialplan)]


def unique_names(specs: Iterable[WebhookSpec]) -> list[str]:
    """The names given twice in one plan's ``webhooks`` (an index and a name may not collide either)."""
    names = [spec.name or str(i) for i, spec in enumerate(specs)]
    return sorted({n for n in names if names.count(n) > 1})
