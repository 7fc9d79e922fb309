"""The node's own checks as metrics, from the ``serve`` process every :data:`WATCH_INTERVAL_S`, so that Prometheus
alerts on what ``/healthz`` says and on a Redis that lost the rollout state (deploy/prometheus/alerts.yml).

* ``callbridge_ready``: 1 while the node passes ``/healthz``'s readiness checks
  (:func:`bridge.supervisor.monitoring.readiness`), 0 while ``/healthz`` would answer 503.
* ``callbridge_redis_up``: 1 while Redis answers a ``PING``, 0 while not.
* ``callbridge_rollout_state_missing{dialplan}``: the rollout flags (weights, the kill switch) live only in Redis. A
  Redis restarted without persistence, or flushed, or a replica promoted before it had them, comes back without
  them, and every call silently gets the dialplan's defaults again: a kill switch is off. :class:`FlagMemory`
  remembers, outside Redis (a JSON file in ``spool_dir``, so a restart of ``serve`` with its Redis does not forget),
  every dialplan that had a stored flag and whether its kill switch was on. A flag that was stored and is not any
  more is missing: the gauge is 1 and an error names the dialplan (and a kill switch that was on) until a flag is
  stored again (``callbridge rollout import`` of a backup, or ``rollout set``). What is remembered is kept per Redis
  (one file per :func:`redis_identity`: the URL's host, port and database, or its socket or Sentinel service, hashed;
  never its password), so a ``spool_dir`` shared by nodes of other Redis servers, or a node moved to a fresh Redis,
  finds nothing missing there; and only of the rollout plans this node serves (its ``dialplans`` folder, read again
  when a file in it changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from redis.exceptions import RedisError

from bridge import metrics
from bridge.config import Settings
from bridge.dialplan import dialplan_files, load_dialplans, rollout_specs
from bridge.errors import ConfigError
from bridge.store import keys
from bridge.store.connection import SENTINEL_SCHEME, connect, is_cluster_url, parse_cluster_url, parse_sentinel_url
from bridge.supervisor.monitoring import REDIS_PING_S, readiness

log = logging.getLogger("bridge.serve.nodewatch")

WATCH_INTERVAL_S = 5.0
SEEN_FILE = "rollout-flags-seen-{redis}.json"  # in spool_dir (the node's state directory), one per Redis
RUNBOOK = "docs/operating.md#runbook-rollout-state-missing"


def redis_identity(url: str) -> str:
    """Which Redis ``url`` names, hashed (16 hex digits): its host, port and database (a socket's path, a Sentinel
    service), never its password. The same server restarted keeps it, as a flushed one does: what is missing there
    is missing."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if parts.scheme == SENTINEL_SCHEME:
        sentinel = parse_sentinel_url(url)
        where = f"sentinel:{sentinel.service}/{sentinel.db}"
    elif is_cluster_url(url):  # the nodes named, in any order (any of them reach the same cluster)
        where = "cluster:" + ",".join(sorted(f"{h}:{p}" for h, p in parse_cluster_url(url).nodes))
    elif parts.scheme == "unix":
        where = f"unix:{parts.path}/{query.get('db', ['0'])[0]}"
    else:
        db = parts.path.strip("/") or query.get("db", ["0"])[0]
        where = f"{parts.hostname}:{parts.port or 6379}/{db}"
    return hashlib.sha256(where.encode()).hexdigest()[:16]


class ServedPlans:
    """The names of the rollout plans in the node's ``dialplans`` folder, read again when a file there changes (a
    folder that cannot be read keeps the last names, logged once)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.names: frozenset[str] = frozenset()
        self._stamp: tuple[tuple[str, int], ...] | None = None

    def __call__(self) -> frozenset[str]:
        try:
            stamp = tuple((p.name, p.stat().st_mtime_ns) for p in dialplan_files(self.folder))
        except OSError as exc:
            stamp = ()
            if self._stamp != stamp:
                log.warning("rollout flags: cannot read the dialplans folder %s (%s)", self.folder, exc)
                self._stamp = stamp
            return self.names
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self.names = frozenset(rollout_specs(load_dialplans(self.folder)))
            except ConfigError as exc:
                log.warning("rollout flags: the plans served are the last ones read: %s", exc)
            else:
                metrics.prime_rollout_state(self.names)  # a rollout new to the folder: 0 until found missing
        return self.names


class FlagMemory:
    """The dialplans seen with a stored rollout flag (and whether its kill switch was on), kept in ``path`` (None:
    in memory only). :meth:`observe` says which of them vanished."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.seen: dict[str, bool] = {}
        self.missing: set[str] = set()
        if path is not None and path.exists():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                self.seen = {str(k): bool(v) for k, v in (loaded.get("kill") or {}).items()}
            except (OSError, ValueError, AttributeError) as exc:
                log.warning("rollout flags seen: cannot read %s (%s); starting from what Redis holds now", path, exc)

    def observe(self, stored: Mapping[str, bool], served: frozenset[str] | None = None) -> tuple[set[str], set[str]]:
        """``stored``: every dialplan with a stored flag now -> its kill switch; ``served``: the dialplans to remember
        (None: all). Returns (newly missing, back)."""
        if served is not None:
            stored = {name: kill for name, kill in stored.items() if name in served}
            self.seen = {name: kill for name, kill in self.seen.items() if name in served}
        gone = set(self.seen) - set(stored)
        new, back = gone - self.missing, self.missing - gone
        self.missing = gone
        kept = {name: kill for name, kill in self.seen.items() if name in gone}
        if kept | dict(stored) != self.seen:
            self.seen = kept | dict(stored)
            self._save()
        return new, back

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"kill": self.seen}, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("rollout flags seen: cannot write %s (%s); remembered in memory only", self.path, exc)


class NodeWatch:
    """The checks behind ``callbridge_ready``, ``callbridge_redis_up`` and ``callbridge_rollout_state_missing``."""

    def __init__(self, settings: Settings, health: Callable[[], Mapping[str, Any]]) -> None:
        self.health = health
        self.redis = connect(settings.redis_url, timeout_s=REDIS_PING_S) if settings.redis_url else None
        self.redis_up = metrics.REDIS_UP.labels(redis_identity(settings.redis_url)) if settings.redis_url else None
        seen = settings.spool_dir / SEEN_FILE.format(redis=redis_identity(settings.redis_url or ""))
        self.memory = FlagMemory(seen if settings.redis_url else None)
        self.served = ServedPlans(settings.dialplans)

    async def check(self) -> None:
        problems = await readiness(dict(self.health()), self.redis)
        redis_up = self.redis is not None and not any(p.startswith("Redis unreachable") for p in problems)
        metrics.NODE_READY.set(0 if problems else 1)
        if self.redis_up is not None:  # none without redis_url: no series, nothing for CallbridgeRedisUnreachable
            self.redis_up.set(1 if redis_up else 0)
        if redis_up:
            await self._rollout_state()

    async def _stored_kill_switches(self, served: frozenset[str]) -> dict[str, bool]:
        """Every served dialplan with a stored flag -> whether its kill switch is on (read as stored: no decoding)."""
        assert self.redis is not None
        names = await self.redis.smembers(keys.ROLLOUT_DIALPLANS)
        stored: dict[str, bool] = {}
        for name in sorted(str(n) for n in (names | set(self.memory.seen)) & served):
            flag = await self.redis.hgetall(keys.rollout_flag(name))
            if flag:
                stored[name] = flag.get("kill") == "1"
        return stored

    async def _rollout_state(self) -> None:
        served, before = self.served(), set(self.memory.seen)
        try:
            stored = await self._stored_kill_switches(served)
        except (RedisError, OSError) as exc:
            log.debug("rollout state not checked: %s", exc)
            return
        new, back = self.memory.observe(stored, served)
        for name in sorted(new):
            kill = " (its kill switch was ON: calls go to every variant again)" if self.memory.seen.get(name) else ""
            log.error(
                "rollout %s: its stored flag vanished from Redis%s; every call gets the dialplan's defaults. "
                "Restore it: `callbridge rollout import BACKUP` (%s)", name, kill, RUNBOOK,
            )  # fmt: skip
        for name in sorted(back):
            log.info("rollout %s: a stored flag is back", name)
        for name in set(self.memory.seen) | new | back | before:  # a plan no longer served: 0
            metrics.ROLLOUT_STATE_MISSING.labels(name).set(1 if name in self.memory.missing else 0)

    async def run(self, interval_s: float = WATCH_INTERVAL_S) -> None:
        """Check every ``interval_s`` until cancelled; a failed check is logged and the next one goes on."""
        try:
            while True:
                try:
                    await self.check()
                except (RedisError, OSError, ValueError, KeyError) as exc:
                    log.warning("node checks: %s", exc)
                await asyncio.sleep(interval_s)
        finally:
            if self.redis is not None:
                with contextlib.suppress(RedisError, OSError):
                    await self.redis.aclose()
