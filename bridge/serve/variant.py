"""One call on its variant, wired for the worker: the connector that applies the variant's model rule, the
credential source and the profile that follow a fallback, and the call's health and cost.

:class:`VariantCall` holds the call's :class:`~bridge.rollout.policy.Decision`. Its :meth:`~VariantCall.connect` is
the call session's connector: it opens the decided model and, when that fails to connect and the variant's rule
names a fallback model (``model_selection: auto``), retries once on the fallback model with the voice made
compatible from the flag's ``fallback_voice`` (:func:`bridge.rollout.policy.fallback`). From then on the call is
on the fallback: reconnects use it, :attr:`~VariantCall.credentials` hands out the fallback model's credential
source, :meth:`~VariantCall.profile` has its model and voice, and every ``on_fallback`` callback hears of it
(the worker updates the call's Redis hash and hands the session the new profile there).

When the service refuses the model itself (:class:`~bridge.errors.ModelRefused`), :meth:`~VariantCall.refused` is
the call session's ``on_refused``: it moves the call to the next healthy variant of the same dialect
(:func:`bridge.rollout.policy.next_healthy`) at once, within the answer budget, and tells every ``on_refusal``
callback (the worker marks the variant refused in Redis, which moves its weight, and counts it).

Token usage comes with the session's reports: :meth:`VariantCall.listen` is the call's listener for the rollout,
and gives each :class:`~bridge.events.ResponseEnded`'s usage to :class:`~bridge.rollout.health.CallStats`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bridge import events as ev
from bridge import metrics
from bridge.dialplan import Dialplan
from bridge.errors import ConnectError, ModelRefused
from bridge.realtime.client import RealtimeClient
from bridge.realtime.credentials import CredentialSource, Sources
from bridge.realtime.dialects import get_dialect
from bridge.realtime.profile import AgentProfile
from bridge.rollout.catalog import PriceTable
from bridge.rollout.health import CallStats
from bridge.rollout.policy import Decision, RolloutFlag, RolloutSpec, Variant, fallback, next_healthy, variant_decision

log = logging.getLogger("bridge.rollout")  # fallbacks are rollout news (docs/operating.md)


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
        rollout: tuple[RolloutSpec, RolloutFlag] | None = None,
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
        self.rollout = rollout  # the plan's variants and the flag the call was decided on (None: a pinned plan)
        self.refused_here: list[str] = []  # variants this call found refused, in order
        self.known_refused: frozenset[str] = frozenset()  # variants marked refused when the call was decided
        self.on_refusal: list[Callable[[str, ModelRefused], None]] = []  # (the refused variant, the refusal)
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

    async def refused(self, exc: ModelRefused) -> bool:
        """The service refused the call's model: tell ``on_refusal``, and move the call to the next healthy variant
        of its dialect. True if there is one (the session opens again at once), False if not."""
        gone = self.decision.variant
        self.refused_here.append(gone)
        for tell in self.on_refusal:
            tell(gone, exc)
        if self.rollout is None:
            return False
        spec, flag = self.rollout
        name = next_healthy(spec, self.known_refused | set(self.refused_here), dialect=self.dialect.name)
        if name is None:
            log.error("call on %s: %s refused %s and no other variant of %s is healthy", self.plan.name, gone,
                      exc.model, self.dialect.name)  # fmt: skip
            return False
        variant = spec.variant(name)
        reason = f"{self.decision.reason}; {exc.model} refused ({exc.code}) -> {name}"
        self.decision = variant_decision(variant, flag, self.plan.profile.voice, reason, self.decision.bucket)
        self.variant, self.wanted_voice = variant, variant.voice or self.plan.profile.voice
        self.fallback_voice = flag.fallback_voice
        log.warning("call on %s: model %s of %s refused (%s); retrying on %s", self.plan.name, exc.model, gone,
                    exc.code, name)  # fmt: skip
        for callback in self.on_fallback:
            callback(self.decision)
        return True

    async def _open(self, decision: Decision) -> RealtimeClient:
        source = self.sources.get(self.dialect, decision.model)
        client = RealtimeClient(self.dialect, self.realtime_url, source, model=decision.model)
        await client.connect()
        return client

    def listen(self, report: ev.Report) -> None:
        """The call's listener for the rollout: its health, and each response's tokens for its cost."""
        if type(report) is ev.ResponseEnded and report.usage is not None:
            self.stats.add_usage(report.usage)
        if type(report) is ev.ToolFinished:  # per tool, on the variant the call is on now
            metrics.observe_tool(self.plan.name, self.decision.variant, report)
        self.stats(report)

    def finish(self) -> None:
        """Price the call's tokens at the model it ended on."""
        self.stats.cost_usd = self.prices.cost(self.decision.model, self.stats.input_tokens, self.stats.output_tokens)

    def hash_fields(self) -> dict[str, Any]:
        """The call hash's fields of what the call runs on: its variant, model and voice, and ``fallback`` once its
        variant's model failed to connect and it went on on the fallback model (a refused model's move to another
        variant is none: ``refused``)."""
        d = self.decision
        return {"variant": d.variant, "model": d.model, "voice": d.voice} | (
            {"fallback": True} if self.stats.fallback else {}
        )

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
            "refused": list(self.refused_here),  # variants whose model the service refused on this call
            "usage": {"input_tokens": s.input_tokens, "output_tokens": s.output_tokens},
            "cost_usd": None if s.cost_usd is None else round(s.cost_usd, 6),
        }
