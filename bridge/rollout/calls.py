"""One call on its variant, wired for the worker: the connector that applies the variant's model rule, the
credential source and the profile that follow a fallback, and the call's health and cost.

:class:`VariantCall` holds the call's :class:`~bridge.rollout.policy.Decision`. Its :meth:`~VariantCall.connect` is
the call session's connector: it opens the decided model and, when that fails to connect and the variant's rule
names a fallback model (``model_selection: auto``), retries once on the fallback model with the voice made
compatible from the flag's ``fallback_voice`` (:func:`bridge.rollout.policy.fallback`). From then on the call is
on the fallback: reconnects use it, :attr:`~VariantCall.credentials` hands out the fallback model's credential
source, :meth:`~VariantCall.profile` has its model and voice, and every ``on_fallback`` callback hears of it
(the worker updates the call's Redis hash and the session's profile there).

The session's reports do not carry token usage, so the client this connector opens (:class:`MeteredClient`) hands
each ``response.done``'s usage to :class:`~bridge.rollout.health.CallStats` as the event passes to the session.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bridge import events as ev
from bridge.dialplan import Dialplan
from bridge.errors import ConnectError
from bridge.realtime.client import CredentialSource as ClientCredential
from bridge.realtime.client import RealtimeClient
from bridge.realtime.credentials import CredentialSource, Sources
from bridge.realtime.dialects import Dialect, get_dialect
from bridge.realtime.profile import AgentProfile
from bridge.rollout.catalog import PriceTable
from bridge.rollout.health import CallStats
from bridge.rollout.policy import Decision, Variant, fallback

log = logging.getLogger("bridge.rollout")


class MeteredClient(RealtimeClient):
    """A :class:`RealtimeClient` that hands the usage of every ``ResponseDone`` to ``on_usage`` on its way to
    whatever the session delivers events to (:meth:`RealtimeClient.deliver_to`)."""

    def __init__(
        self,
        dialect: Dialect,
        base_url: str,
        credential: ClientCredential,
        *,
        model: str,
        on_usage: Callable[[ev.Usage], None],
    ) -> None:
        super().__init__(dialect, base_url, credential, model=model)
        self._on_usage = on_usage

    def deliver_to(self, sink: Callable[[ev.Event], None] | None) -> None:
        if sink is None:
            super().deliver_to(None)
            return
        target = sink
        on_usage = self._on_usage

        def metered(event: ev.Event) -> None:
            if type(event) is ev.ResponseDone and event.usage is not None:
                on_usage(event.usage)
            target(event)

        super().deliver_to(metered)


class FollowingSource:
    """The credential source of the model the call is on now (a fallback changes it)."""

    def __init__(self, current: Callable[[], CredentialSource]) -> None:
        self._current = current

    async def __call__(self) -> str:
        return await self._current()()

    def invalidate(self, rejected: str | None = None) -> None:
        self._current().invalidate(rejected)


class VariantCall:
    """The variant side of one call (see the module doc). ``variant`` is None for a plan pinned to a dialect."""

    def __init__(
        self,
        plan: Dialplan,
        decision: Decision,
        *,
        variant: Variant | None,
        fallback_voice: str,
        sources: Sources,
        realtime_url: str,
        prices: PriceTable,
    ) -> None:
        self.plan = plan
        self.decision = decision
        self.variant = variant
        self.dialect = get_dialect(decision.dialect)
        self.wanted_voice = (variant.voice if variant is not None else None) or plan.profile.voice
        self.fallback_voice = fallback_voice
        self.sources = sources
        self.realtime_url = realtime_url
        self.prices = prices
        self.stats = CallStats()
        self.on_fallback: list[Callable[[Decision], None]] = []
        self.credentials = FollowingSource(lambda: self.sources.get(self.dialect, self.decision.model))

    def profile(self) -> AgentProfile:
        """The plan's profile with the variant's overrides and the model and voice the call is on now."""
        base = self.plan.variant_profile(self.variant) if self.variant is not None else self.plan.profile
        return base.model_copy(update={"model": self.decision.model, "voice": self.decision.voice})

    async def connect(self) -> RealtimeClient:
        """The call session's connector (see the module doc). Raises :class:`ConnectError`."""
        try:
            return await self._open(self.decision)
        except ConnectError as exc:
            retry = fallback(self.decision, voice=self.wanted_voice, fallback_voice=self.fallback_voice)
            if retry is None:
                raise
            log.warning(
                "call on %s/%s: %s failed to connect (%s); retrying with %s, voice %s",
                self.plan.name, self.decision.variant, self.decision.model, exc, retry.model, retry.voice,
            )  # fmt: skip
            self.decision = retry
            self.stats.fallback = True
            for callback in self.on_fallback:
                callback(retry)
            return await self._open(retry)

    async def _open(self, decision: Decision) -> RealtimeClient:
        source = self.sources.get(self.dialect, decision.model)
        client = MeteredClient(
            self.dialect, self.realtime_url, source, model=decision.model, on_usage=self.stats.add_usage
        )
        await client.connect()
        return client

    def finish(self) -> None:
        """Price the call's tokens at the model it ended on."""
        self.stats.cost_usd = self.prices.cost(self.decision.model, self.stats.input_tokens, self.stats.output_tokens)

    def report_fields(self) -> dict[str, Any]:
        """What a ``--report-file`` line carries about the variant (after :meth:`finish`)."""
        d, s = self.decision, self.stats
        return {
            "variant": d.variant,
            "dialect": d.dialect,
            "model": d.model,
            "voice": d.voice,
            "decision": d.reason,
            "fallback": s.fallback,
            "usage": {"input_tokens": s.input_tokens, "output_tokens": s.output_tokens},
            "cost_usd": None if s.cost_usd is None else round(s.cost_usd, 6),
        }
