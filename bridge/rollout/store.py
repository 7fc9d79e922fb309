"""The rollout flags in Redis: read fresh for every call, changed with an audit trail, rolled back automatically.

* **One hash per dialplan** (``keys.rollout_flag``), one field per :class:`bridge.rollout.policy.RolloutFlag` setting
  (numbers as text, lists as JSON), so ``redis-cli HGETALL`` reads it. :meth:`RolloutStore.get_flag` reads it at
  every call: a change applies to the next call, with no restart and no cache to expire.
* **Reads never block a call.** A read is bounded (``read_timeout_s``); when Redis fails to answer, the call gets
  the last flag read for that dialplan (or the dialplan's default, or the global default: beta), and for
  ``retry_after_s`` further reads skip Redis altogether instead of waiting on it again.
* **Every change is audited.** :meth:`RolloutStore.set_flag` validates the new flag, then writes it and appends to
  the audit stream (``keys.ROLLOUT_AUDIT``: dialplan, who, when, the changed settings' old and new values, why) in
  one ``MULTI``/``EXEC`` under ``WATCH``, so two supervisors changing one flag at once cannot lose an entry.
* **Sliding-window health.** :meth:`RolloutStore.record_outcome` adds each finished call to a sorted set per
  (dialplan, dialect, outcome), scored by time; :meth:`RolloutStore.window_stats` counts the window with ``ZCOUNT``.
  Entries older than ``keys.HEALTH_RETENTION_S`` are trimmed on write.
* **Automatic rollback.** :meth:`RolloutStore.check_rollback` applies
  :func:`bridge.rollout.policy.should_rollback` and, if
  it fires, sets ``ga_percent`` to 0 with ``who="auto-rollback"`` and the reason, and returns the reason (the caller
  raises the rollback metric). It lowers the percentage rather than pulling the kill switch on purpose: the kill
  switch stays a human's lever, the allow list keeps routing its testers to GA so the failure can be reproduced, and
  the audit entry keeps the percentage to come back to. With ``ga_percent`` at 0 the check does not fire again.
  Call it after recording a failure (it is a few ``ZCOUNT``), or on a timer.

Run :meth:`RolloutStore.decide` at call setup: it is ``rollout.decide`` on the fresh (or fallback) flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError, WatchError
from redis.typing import EncodableT, FieldT

from bridge.errors import ConfigError, redact
from bridge.rollout import policy as rollout
from bridge.rollout.policy import OUTCOMES, Decision, RolloutFlag, WindowStats
from bridge.store import keys
from bridge.store.calls import StoreUnavailable, connect, safe_url

log = logging.getLogger("bridge.rollout")

READ_TIMEOUT_S = 0.5
RETRY_AFTER_S = 5.0
AUTO_ROLLBACK_WHO = "auto-rollback"
_DIALPLAN_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # as bridge.dialplan.Dialplan.name
_LIST_FIELDS = frozenset({"allow", "deny"})
_DIALECTS = ("beta", "ga")  # the rollout's two arms, whose windows decide a rollback
_RECORDED = ("beta", "ga", "live")  # every dialect a call can run on (a plan may pin any): its outcomes are counted


# ------------------------------------------------------------------------------------------------ encoding
def _encode_value(value: Any) -> str:
    if isinstance(value, tuple | list):
        return json.dumps(list(value))
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def encode_flag(flag: RolloutFlag) -> dict[FieldT, EncodableT]:
    return {name: _encode_value(getattr(flag, name)) for name in RolloutFlag.model_fields}


def decode_flag(raw: Mapping[Any, Any], source: str = "redis") -> RolloutFlag:
    """A stored hash -> flag. Unknown fields (a newer bridge wrote them) are ignored; bad values raise ConfigError."""
    data: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        text = value.decode() if isinstance(value, bytes) else str(value)
        if name not in RolloutFlag.model_fields:
            log.warning("%s: ignoring unknown rollout setting %r", source, name)
            continue
        if name in _LIST_FIELDS:
            try:
                data[name] = json.loads(text)
            except ValueError:
                raise ConfigError(source, name, f"not a JSON list: {text[:80]!r}") from None
        else:
            data[name] = text
    return validate_flag(data, source)


def validate_flag(data: Mapping[str, Any], source: str) -> RolloutFlag:
    try:
        return RolloutFlag.model_validate(dict(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(flag)"
        raise ConfigError(source, field, err["msg"]) from None


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: str
    dialplan: str
    who: str
    when: str  # ISO 8601, UTC
    reason: str
    old: dict[str, Any]  # the changed settings' values before
    new: dict[str, Any]  # ... and after

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dialplan": self.dialplan,
            "who": self.who,
            "when": self.when,
            "reason": self.reason,
            "old": self.old,
            "new": self.new,
        }


@dataclass(frozen=True, slots=True)
class FlagChange:
    dialplan: str
    old: RolloutFlag
    new: RolloutFlag
    audit_id: str | None  # None: nothing changed, nothing was written

    @property
    def changed(self) -> bool:
        return self.audit_id is not None


def _audit_entry(entry_id: Any, fields: Mapping[Any, Any]) -> AuditEntry:
    f = {(k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
         for k, v in fields.items()}  # fmt: skip

    def load(text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    return AuditEntry(
        id=entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id),
        dialplan=f.get("dialplan", ""),
        who=f.get("who", ""),
        when=f.get("when", ""),
        reason=f.get("reason", ""),
        old=load(f.get("old", "{}")),
        new=load(f.get("new", "{}")),
    )


# ------------------------------------------------------------------------------------------------ the store
class RolloutStore:
    """Rollout flags, their audit stream and the dialect health windows of all dialplans.

    ``defaults`` maps a dialplan to the flag it has while nobody has stored one (e.g. from its dialplan file);
    ``default`` is the flag of any other dialplan (beta: ``ga_percent`` 0).

    Counters: ``read_failures`` (flag reads that fell back), ``outcome_failures`` (outcomes not recorded),
    ``rollbacks`` (automatic rollbacks made by this process). ``last_source[dialplan]`` says where the last flag
    came from: ``"redis"``, ``"default"`` (none stored), ``"cache"`` or ``"fallback-default"`` (Redis away).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: aioredis.Redis | None = None,
        defaults: Mapping[str, RolloutFlag] | None = None,
        default: RolloutFlag | None = None,
        read_timeout_s: float = READ_TIMEOUT_S,
        retry_after_s: float = RETRY_AFTER_S,
        clock: Callable[[], float] = time.time,
        **redis_kwargs: Any,
    ) -> None:
        if client is None:
            if url is None:
                raise ValueError("RolloutStore needs a Redis URL or a client")
            client = connect(url, timeout_s=read_timeout_s, **redis_kwargs)
            self._owns_client = True
        else:
            self._owns_client = False
        self.client = client
        self.where = safe_url(url) if url else "redis client"
        self.defaults = dict(defaults or {})
        self.default = default or RolloutFlag()
        self.read_timeout_s = read_timeout_s
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._cache: dict[str, RolloutFlag] = {}
        self._skip_until = 0.0
        self.last_source: dict[str, str] = {}
        self.read_failures = 0
        self.outcome_failures = 0
        self.rollbacks = 0

    async def close(self) -> None:
        if self._owns_client:
            with contextlib.suppress(RedisError, OSError):
                await self.client.aclose()

    async def __aenter__(self) -> RolloutStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def default_for(self, dialplan: str) -> RolloutFlag:
        return self.defaults.get(dialplan, self.default)

    # ---------------------------------------------------------------------------------------- call path
    async def get_flag(self, dialplan: str) -> RolloutFlag:
        """The flag for the next call, read fresh from Redis. Never raises and never waits longer than
        ``read_timeout_s``: falls back to the last flag read (or the default) when Redis is away."""
        now = time.monotonic()
        if now < self._skip_until:
            return self._fallback(dialplan)
        try:
            raw = await asyncio.wait_for(self.client.hgetall(keys.rollout_flag(dialplan)), self.read_timeout_s)
        except (RedisError, OSError, TimeoutError) as exc:
            self.read_failures += 1
            self._skip_until = now + self.retry_after_s
            log.warning(
                "rollout flag of %s: Redis at %s unavailable (%s); using the %s flag",
                dialplan,
                self.where,
                redact(str(exc)) or type(exc).__name__,
                "last known" if dialplan in self._cache else "default",
            )
            return self._fallback(dialplan)
        if not raw:
            flag, self.last_source[dialplan] = self.default_for(dialplan), "default"
        else:
            try:
                flag = decode_flag(raw, f"redis {keys.rollout_flag(dialplan)}")
            except ConfigError as exc:
                self.read_failures += 1
                log.error("invalid stored rollout flag: %s; using the last known or default flag", exc)
                return self._fallback(dialplan)
            self.last_source[dialplan] = "redis"
        self._cache[dialplan] = flag
        return flag

    def _fallback(self, dialplan: str) -> RolloutFlag:
        if dialplan in self._cache:
            self.last_source[dialplan] = "cache"
            return self._cache[dialplan]
        self.last_source[dialplan] = "fallback-default"
        return self.default_for(dialplan)

    async def decide(self, dialplan: str, caller: str, call_id: str, *, voice: str = "alloy") -> Decision:
        """:func:`bridge.rollout.policy.decide` on the dialplan's current flag."""
        return rollout.decide(await self.get_flag(dialplan), caller, call_id, voice=voice)

    async def record_outcome(self, dialect: str, dialplan: str, outcome: str) -> bool:
        """Count one finished call (``ok``, ``connect_failure`` or ``dropped``) in the dialect's sliding window.
        Never raises for Redis: returns False (and counts ``outcome_failures``) when it could not record."""
        if dialect not in _RECORDED:
            raise ValueError(f"unknown dialect {dialect!r} (expected one of {_RECORDED})")
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r} (expected one of {OUTCOMES})")
        now = self._clock()
        key = keys.health(dialplan, dialect, outcome)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(key, {f"{now:.6f}:{uuid.uuid4().hex[:12]}": now})
            pipe.zremrangebyscore(key, "-inf", now - keys.HEALTH_RETENTION_S)
            pipe.expire(key, keys.HEALTH_TTL_S)
            await asyncio.wait_for(pipe.execute(), self.read_timeout_s * 2)
        except (RedisError, OSError, TimeoutError) as exc:
            self.outcome_failures += 1
            log.warning("could not record a %s outcome for %s/%s: %s", outcome, dialplan, dialect, redact(str(exc)))
            return False
        return True

    async def check_rollback(self, dialplan: str) -> str | None:
        """Roll GA back (``ga_percent`` -> 0, audited as ``auto-rollback``) if its failure rate says so; the reason,
        or None. Never raises: with Redis away there is nothing to decide from, and None is returned."""
        try:
            flag = await self.stored_flag(dialplan) or self.default_for(dialplan)
            stats = await self.window_stats(dialplan, flag.window_s)
            reason = rollout.should_rollback(stats["ga"], stats["beta"], flag)
            if reason is None:
                return None

            def compute(old: RolloutFlag) -> dict[str, Any] | None:
                # Re-decided on the flag inside the transaction: another worker may have rolled back already.
                return {"ga_percent": 0} if rollout.should_rollback(stats["ga"], stats["beta"], old) else None

            change = await self.update_flag(dialplan, compute, AUTO_ROLLBACK_WHO, reason)
        except (StoreUnavailable, ConfigError) as exc:
            log.warning("rollback check of %s skipped: %s", dialplan, exc)
            return None
        if not change.changed:
            return None
        self.rollbacks += 1
        log.warning("rollout %s rolled back to beta: %s", dialplan, reason)
        return reason

    # ---------------------------------------------------------------------------------------- supervisors
    async def stored_flag(self, dialplan: str) -> RolloutFlag | None:
        """The stored flag (None if none is stored). Raises StoreUnavailable or ConfigError (bad stored data)."""
        raw = await self._call(self.client.hgetall(keys.rollout_flag(dialplan)))
        return decode_flag(raw, f"redis {keys.rollout_flag(dialplan)}") if raw else None

    async def dialplans(self) -> list[str]:
        """Dialplans that have a stored flag."""
        names = await self._call(self.client.smembers(keys.ROLLOUT_DIALPLANS))
        return sorted(n.decode() if isinstance(n, bytes) else str(n) for n in names)

    async def flags(self) -> dict[str, RolloutFlag]:
        return {name: (await self.stored_flag(name)) or self.default_for(name) for name in await self.dialplans()}

    async def audit(self, dialplan: str | None = None, count: int = 20) -> list[AuditEntry]:
        """The most recent audit entries (of one dialplan, or all), newest first."""
        out: list[AuditEntry] = []
        last = "+"
        while len(out) < count:
            batch = await self._call(self.client.xrevrange(keys.ROLLOUT_AUDIT, max=last, count=max(count, 100)))
            if not batch:
                break
            for entry_id, fields in batch:
                entry = _audit_entry(entry_id, fields)
                if dialplan is None or entry.dialplan == dialplan:
                    out.append(entry)
            last = f"({batch[-1][0].decode() if isinstance(batch[-1][0], bytes) else batch[-1][0]}"
        return out[:count]

    async def window_stats(self, dialplan: str, window_s: float | None = None) -> dict[str, WindowStats]:
        """``{"ga": WindowStats, "beta": WindowStats}`` over the last ``window_s`` seconds (default: the flag's)."""
        if window_s is None:
            window_s = ((await self.stored_flag(dialplan)) or self.default_for(dialplan)).window_s
        since = self._clock() - window_s
        pipe = self.client.pipeline(transaction=False)
        for dialect in _DIALECTS:
            for outcome in OUTCOMES:
                pipe.zcount(keys.health(dialplan, dialect, outcome), since, "+inf")
        counts = await self._call(pipe.execute())
        out: dict[str, WindowStats] = {}
        for i, dialect in enumerate(_DIALECTS):
            per: dict[str, int] = {o: int(counts[i * len(OUTCOMES) + j]) for j, o in enumerate(OUTCOMES)}
            out[dialect] = WindowStats.from_counts(per)
        return out

    async def set_flag(self, dialplan: str, changes: Mapping[str, Any], who: str, reason: str) -> FlagChange:
        """Change settings of a dialplan's flag and audit it. ``changes`` maps setting names to new values.

        Raises ConfigError (unknown setting, invalid value, empty who or reason, bad dialplan name) before writing
        anything, StoreUnavailable when Redis is away. A change that changes nothing writes nothing
        (``FlagChange.changed`` is False).
        """
        unknown = sorted(set(changes) - set(RolloutFlag.model_fields))
        if unknown:
            known = ", ".join(RolloutFlag.model_fields)
            raise ConfigError(f"rollout {dialplan}", unknown[0], f"unknown setting (known: {known})")
        return await self.update_flag(dialplan, lambda _old: dict(changes), who, reason)

    async def update_flag(
        self,
        dialplan: str,
        compute: Callable[[RolloutFlag], Mapping[str, Any] | None],
        who: str,
        reason: str,
    ) -> FlagChange:
        """Like :meth:`set_flag`, with the changes computed from the current flag inside the transaction (so that
        adding a number to a list cannot lose another supervisor's concurrent addition). ``compute`` may run more
        than once; returning None or ``{}`` changes nothing."""
        source = f"rollout {dialplan}"
        if not _DIALPLAN_NAME.match(dialplan):
            raise ConfigError(source, "dialplan", "must match ^[a-z0-9][a-z0-9_-]{0,62}$")
        who, reason = redact(who.strip()), redact(reason.strip())
        if not who:
            raise ConfigError(source, "who", "required: who makes this change")
        if not reason:
            raise ConfigError(source, "reason", "required: why this change is made")
        key = keys.rollout_flag(dialplan)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key)
                        raw = await pipe.hgetall(key)
                        old = decode_flag(raw, f"redis {key}") if raw else self.default_for(dialplan)
                        changes = compute(old)
                        if not changes:
                            return FlagChange(dialplan, old, old, None)  # leaving the block resets (UNWATCH)
                        new = validate_flag(old.model_dump() | dict(changes), source)
                        diff = [n for n in RolloutFlag.model_fields if getattr(old, n) != getattr(new, n)]
                        if not diff:
                            return FlagChange(dialplan, old, new, None)
                        now = self._clock()
                        entry: dict[FieldT, EncodableT] = {
                            "dialplan": dialplan,
                            "who": who,
                            "when": _iso(now),
                            "reason": reason,
                            "old": json.dumps({n: _json_value(getattr(old, n)) for n in diff}),
                            "new": json.dumps({n: _json_value(getattr(new, n)) for n in diff}),
                        }
                        pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves Pipeline.multi unannotated
                        pipe.hset(key, mapping=encode_flag(new))
                        pipe.sadd(keys.ROLLOUT_DIALPLANS, dialplan)
                        pipe.xadd(keys.ROLLOUT_AUDIT, entry, maxlen=keys.AUDIT_MAXLEN, approximate=True)
                        results = await pipe.execute()
                        audit_id = results[-1]
                        audit_id = audit_id.decode() if isinstance(audit_id, bytes) else str(audit_id)
                        log.info("rollout %s changed by %s (%s): %s", dialplan, who, reason, entry["new"])
                        self._cache[dialplan] = new
                        return FlagChange(dialplan, old, new, audit_id)
                    except WatchError:
                        continue  # someone else changed the flag between our read and write: recompute
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(self.where, str(exc) or type(exc).__name__) from None

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(self.where, str(exc) or type(exc).__name__) from None
