"""The worker's probes of a rollout's safe variant's model (what they are for and how the engine reads them:
:mod:`bridge.rollout.probes`).

:meth:`Prober.probe` opens a session the way a call on the safe variant does (its dialect, model, credential source
and the plan's Realtime URL, through :class:`~bridge.realtime.client.RealtimeClient`), sends the dialect's opening
command with the variant's profile, waits for its confirmation and closes it: no caller, no audio, no response asked,
so no tokens are billed; the seconds it held the session are counted (``callbridge_rollout_probe_seconds``).
:meth:`Prober.due` takes the plan's probe mark in Redis (``SET NX PX``), so a plan is probed at most
``per_minute`` times a minute however many workers and nodes share the Redis."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bridge import metrics
from bridge.dialplan import Dialplan
from bridge.errors import ConnectError
from bridge.realtime.client import ClientSettings, RealtimeClient
from bridge.realtime.credentials import Sources
from bridge.realtime.dialects import get_dialect
from bridge.rollout import probes
from bridge.rollout.policy import RolloutSpec, variant_decision
from bridge.store import keys

log = logging.getLogger("bridge.rollout")


class Prober:
    """Probes for one worker: ``sources`` and ``realtime_url`` are its calls' own."""

    def __init__(self, sources: Sources, realtime_url: str, who: str = "worker") -> None:
        self.sources, self.realtime_url, self.who = sources, realtime_url, who

    async def due(self, client: aioredis.Redis, dialplan: str, spec: probes.ProbeSpec) -> bool:
        """Take the plan's probe mark for ``60 / per_minute`` s: True when no probe was sent in that time (False,
        too, when Redis cannot say: no probe without the shared bound)."""
        try:
            taken = await client.set(keys.rollout_probe(dialplan), self.who, nx=True, px=probes.gap_ms(spec))
        except (RedisError, OSError) as exc:
            log.warning("rollout %s: no probe (Redis: %s)", dialplan, exc)
            return False
        return bool(taken)

    async def probe(self, plan: Dialplan, spec: RolloutSpec) -> probes.Probe:
        """Open and close one session on the safe variant's model within ``probes.timeout_s``; its answer (counted
        in the metrics)."""
        variant = spec.variant(spec.safe)
        decision = variant_decision(variant, spec.default_flag(), plan.profile.voice, "probe")
        dialect = get_dialect(decision.dialect)
        profile = plan.variant_profile(variant).model_copy(update={"model": decision.model, "voice": decision.voice})
        limit = spec.probes.timeout_s
        client = RealtimeClient(
            dialect,
            self.realtime_url,
            self.sources.get(dialect, decision.model),
            model=decision.model,
            settings=ClientSettings(connect_timeout_s=limit, goodbye_timeout_s=min(1.0, limit)),
        )
        started, t0 = time.time(), time.monotonic()
        ok, error, ms = False, None, None
        try:
            async with asyncio.timeout(limit):
                await client.connect()
                await client.open(profile)
            ok, ms = True, (time.monotonic() - t0) * 1000
        except ConnectError as exc:
            error = str(exc.error_class or "network")
        except TimeoutError:
            error = "timeout"
        finally:
            await client.close(drain_timeout_s=0.2)
        held = time.monotonic() - t0
        metrics.ROLLOUT_PROBES.labels(plan.name, spec.safe, "ok" if ok else "failed").inc()
        metrics.ROLLOUT_PROBE_SECONDS.labels(plan.name, spec.safe).inc(held)
        answer = probes.Probe(started, time.time(), ok, ms, error)
        log.warning("rollout %s: probe of %s (%s): %s", plan.name, spec.safe, decision.model, answer.text())
        return answer

    @staticmethod
    def entry(spec: RolloutSpec, answer: probes.Probe) -> dict[str, object]:
        """The probe's stream entry (a fresh id)."""
        return probes.entry(uuid.uuid4().hex[:16], spec.safe, answer)
