"""The rollout flags in Redis: read fresh for every call, changed with an audit trail, rolled back automatically.

* **One hash per dialplan** (``keys.rollout_flag``), one field per :class:`bridge.rollout.policy.RolloutFlag` setting
  (numbers and words as text, weights and lists as JSON objects, an unset threshold as ``null``), so
  ``redis-cli HGETALL`` reads it. :meth:`RolloutStore.get_flag` reads it at every call: a change applies to the
  next call, with no restart and no cache to expire. A hash written before variants existed (``ga_percent``, plain
  lists) is migrated as it is read (:func:`bridge.rollout.policy.migrate`) and rewritten in today's shape by the
  next change.
* **Every plan has its variants.** ``specs`` maps each rollout dialplan to its variants (from the dialplan files);
  a dialplan the store does not know has the two variants of the first rollouts (GA against beta). With no stored
  flag a dialplan's flag is its spec's defaults (``RolloutSpec.default_flag``).
* **Reads never block a call.** A read is bounded (``read_timeout_s``); when Redis fails to answer, the call gets
  the last flag read for that dialplan (or the dialplan's default), and for ``retry_after_s`` further reads skip
  Redis altogether instead of waiting on it again.
* **Every change is audited.** :meth:`RolloutStore.set_flag` validates the new flag against the dialplan's
  variants, then writes it and appends to the audit stream (``keys.ROLLOUT_AUDIT``: dialplan, who, when, the
  changed settings' old and new values, why, and for an automatic rollback the numbers that triggered it) in one
  ``MULTI``/``EXEC`` under ``WATCH``, so two supervisors changing one flag at once cannot lose an entry.
* **Sliding-window health per variant.** :meth:`RolloutStore.record_call` adds each finished call's numbers
  (:meth:`bridge.rollout.health.CallStats.record`, JSON) to a sorted set per (dialplan, variant), scored by time;
  :meth:`RolloutStore.window` reads the window with ``ZRANGEBYSCORE`` and sums it
  (:class:`bridge.rollout.health.WindowStats`). Entries older than ``keys.HEALTH_RETENTION_S`` are trimmed on write.
* **Automatic rollback.** :meth:`RolloutStore.check_rollback` applies :func:`bridge.rollout.health.should_rollback`
  to every variant that has a weight, against the safe one, and for each that fires moves its weight to the safe
  variant with ``who="auto-rollback"``, the reason and the numbers (:class:`Rollback`). It moves the weight rather
  than pulling the kill switch on purpose: the kill switch stays a human's lever, allow lists keep routing their
  testers to the variant so the failure can be reproduced, and the audit entry keeps the weight to come back to.
  A variant with no weight is not checked again. A person moves it back (``callbridge rollout set --weights``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import typing
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError
from redis.typing import EncodableT, FieldT

from bridge.errors import ConfigError, redact
from bridge.rollout import policy
from bridge.rollout.health import WindowStats, should_rollback
from bridge.rollout.policy import Decision, RolloutFlag, RolloutSpec, legacy_spec, migrate, validate_flag
from bridge.store import keys
from bridge.store.connection import StoreUnavailable, connect, safe_url

log = logging.getLogger("bridge.rollout")

READ_TIMEOUT_S = 0.5
RETRY_AFTER_S = 5.0
AUTO_ROLLBACK_WHO = "auto-rollback"
_DIALPLAN_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # as bridge.dialplan.Dialplan.name
_JSON_FIELDS = frozenset({"weights", "allow", "deny"})
_TEXT_FIELDS = frozenset({"sticky", "salt", "fallback_voice"})
_OPTIONAL_FIELDS = frozenset(
    name for name, info in RolloutFlag.model_fields.items() if type(None) in typing.get_args(info.annotation)
)


# ------------------------------------------------------------------------------------------------ encoding
def _encode_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in value.items()}, sort_keys=True)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return format(value, ".10g")
    return str(value)


def encode_flag(flag: RolloutFlag) -> dict[FieldT, EncodableT]:
    return {name: _encode_value(getattr(flag, name)) for name in RolloutFlag.model_fields}


def _decode_fields(raw: Mapping[Any, Any], source: str) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        text = value.decode() if isinstance(value, bytes) else str(value)
        if name not in RolloutFlag.model_fields and name not in policy.LEGACY_FIELDS:
            log.warning("%s: ignoring unknown rollout setting %r", source, name)
            continue
        if name in _JSON_FIELDS:
            try:
                data[name] = json.loads(text)
            except ValueError:
                raise ConfigError(source, name, f"not JSON: {text[:80]!r}") from None
        elif name in _OPTIONAL_FIELDS and text in ("", "null"):
            data[name] = None
        else:
            data[name] = text
    return data


def decode_flag(raw: Mapping[Any, Any], source: str = "redis", spec: RolloutSpec | None = None) -> RolloutFlag:
    """A stored hash -> flag, migrated from the shape before variants if need be. Unknown fields (a newer bridge
    wrote them) are ignored; bad values raise ConfigError. Variants the spec lacks are kept (and ignored by
    decisions): the dialplan may have dropped one since the flag was written."""
    data, notes = migrate(_decode_fields(raw, source), spec or legacy_spec())
    for note in notes:
        log.warning("%s: %s", source, note)
    return validate_flag(data, source)


def json_value(value: Any) -> Any:
    """A flag setting's value as JSON has it (tuples as lists, at any depth)."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    return value


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
    evidence: dict[str, Any] = field(default_factory=dict)  # an automatic rollback's window numbers

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class FlagChange:
    dialplan: str
    old: RolloutFlag
    new: RolloutFlag
    audit_id: str | None  # None: nothing changed, nothing was written

    @property
    def changed(self) -> bool:
        return self.audit_id is not None


@dataclass(frozen=True, slots=True)
class Rollback:
    """One automatic rollback: ``variant``'s weight went to the safe variant."""

    dialplan: str
    variant: str
    reason: str
    evidence: dict[str, Any]  # {"variant": WindowStats JSON, "safe": ..., "weights": {"old", "new"}}
    audit_id: str


def _audit_entry(entry_id: Any, fields: Mapping[Any, Any]) -> AuditEntry:
    f = {
        (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
        for k, v in fields.items()
    }

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
        evidence=load(f.get("evidence", "{}")),
    )


# ------------------------------------------------------------------------------------------------ the store
class RolloutStore:
    """Rollout flags, their audit stream and the variant health windows of all dialplans.

    ``specs`` maps each rollout dialplan to its variants (:func:`bridge.dialplan.rollout_specs`).

    Counters: ``read_failures`` (flag reads that fell back), ``record_failures`` (calls not recorded),
    ``rollbacks`` (automatic rollbacks made by this process). ``last_source[dialplan]`` says where the last flag
    came from: ``"redis"``, ``"default"`` (none stored), ``"cache"`` or ``"fallback-default"`` (Redis away).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: aioredis.Redis | None = None,
        specs: Mapping[str, RolloutSpec] | None = None,
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
        self.specs = dict(specs or {})
        self.read_timeout_s = read_timeout_s
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._cache: dict[str, RolloutFlag] = {}
        self._skip_until = 0.0
        self.last_source: dict[str, str] = {}
        self.read_failures = 0
        self.record_failures = 0
        self.rollbacks = 0

    async def close(self) -> None:
        if self._owns_client:
            with contextlib.suppress(RedisError, OSError):
                await self.client.aclose()

    async def __aenter__(self) -> RolloutStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def spec_for(self, dialplan: str) -> RolloutSpec:
        return self.specs.get(dialplan) or legacy_spec()

    def default_for(self, dialplan: str) -> RolloutFlag:
        return self.spec_for(dialplan).default_flag()

    def _decode(self, dialplan: str, raw: Mapping[Any, Any]) -> RolloutFlag:
        return decode_flag(raw, f"redis {keys.rollout_flag(dialplan)}", self.spec_for(dialplan))

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
                flag = self._decode(dialplan, raw)
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
        """:func:`bridge.rollout.policy.decide` on the dialplan's variants and current flag."""
        return policy.decide(self.spec_for(dialplan), await self.get_flag(dialplan), caller, call_id, voice=voice)

    async def record_call(self, dialplan: str, variant: str, record: Mapping[str, Any]) -> bool:
        """Add one finished call (:meth:`bridge.rollout.health.CallStats.record`) to the variant's sliding window.
        Never raises for Redis: returns False (and counts ``record_failures``) when it could not record."""
        now = self._clock()
        key = keys.variant_calls(dialplan, variant)
        member = json.dumps({"t": round(now, 6), "id": uuid.uuid4().hex[:12], **record}, separators=(",", ":"))
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(key, {member: now})
            pipe.zremrangebyscore(key, "-inf", now - keys.HEALTH_RETENTION_S)
            pipe.expire(key, keys.HEALTH_TTL_S)
            await asyncio.wait_for(pipe.execute(), self.read_timeout_s * 2)
        except (RedisError, OSError, TimeoutError) as exc:
            self.record_failures += 1
            log.warning("could not record a call of %s/%s: %s", dialplan, variant, redact(str(exc)))
            return False
        return True

    async def window(self, dialplan: str, window_s: float | None = None) -> dict[str, WindowStats]:
        """Each variant's :class:`WindowStats` over the last ``window_s`` seconds (default: the flag's)."""
        if window_s is None:
            window_s = ((await self.stored_flag(dialplan)) or self.default_for(dialplan)).window_s
        since = self._clock() - window_s
        names = self.spec_for(dialplan).names
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.zrangebyscore(keys.variant_calls(dialplan, name), since, "+inf")
        found = await self._call(pipe.execute())
        out: dict[str, WindowStats] = {}
        for name, members in zip(names, found, strict=True):
            records = []
            for m in members:
                try:
                    record = json.loads(m)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
            out[name] = WindowStats.of(records)
        return out

    async def check_rollback(self, dialplan: str) -> list[Rollback]:
        """Roll back every variant that is worse than the safe one (its weight -> the safe variant, audited as
        ``auto-rollback`` with the numbers). Never raises: with Redis away there is nothing to decide from, and
        nothing is rolled back."""
        spec = self.spec_for(dialplan)
        try:
            flag = await self.stored_flag(dialplan) or self.default_for(dialplan)
            if flag.kill:
                return []
            stats = await self.window(dialplan, flag.window_s)
            safe = stats[spec.safe]
            out: list[Rollback] = []
            for name in spec.names:
                if name == spec.safe or flag.weight(name) <= 0:
                    continue
                reason = should_rollback(name, stats[name], safe, flag.rule)
                if reason is None:
                    continue
                rollback = await self._roll_back(dialplan, spec, name, reason, stats)
                if rollback is not None:
                    out.append(rollback)
        except (StoreUnavailable, ConfigError) as exc:
            log.warning("rollback check of %s skipped: %s", dialplan, exc)
            return []
        return out

    async def _roll_back(
        self, dialplan: str, spec: RolloutSpec, name: str, reason: str, stats: Mapping[str, WindowStats]
    ) -> Rollback | None:
        def compute(old: RolloutFlag) -> dict[str, Any] | None:
            # Decided again on the flag inside the transaction: another worker may have rolled back already.
            still = should_rollback(name, stats[name], stats[spec.safe], old.rule)
            if old.kill or old.weight(name) <= 0 or still is None:
                return None
            weights = dict(old.weights)
            weights[spec.safe] = old.weight(spec.safe) + old.weight(name)
            weights[name] = 0.0
            return {"weights": weights}

        evidence = {
            "variant": {"name": name, **stats[name].to_json()},
            "safe": {"name": spec.safe, **stats[spec.safe].to_json()},
        }
        change = await self.update_flag(dialplan, compute, AUTO_ROLLBACK_WHO, reason, evidence=evidence)
        if not change.changed or change.audit_id is None:
            return None
        self.rollbacks += 1
        log.warning("rollout %s: %s rolled back to %s: %s", dialplan, name, spec.safe, reason)
        evidence["weights"] = {"old": change.old.weights, "new": change.new.weights}
        return Rollback(dialplan, name, reason, evidence, change.audit_id)

    # ---------------------------------------------------------------------------------------- supervisors
    async def stored_flag(self, dialplan: str) -> RolloutFlag | None:
        """The stored flag (None if none is stored). Raises StoreUnavailable or ConfigError (bad stored data)."""
        raw = await self._call(self.client.hgetall(keys.rollout_flag(dialplan)))
        return self._decode(dialplan, raw) if raw else None

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

    async def set_flag(self, dialplan: str, changes: Mapping[str, Any], who: str, reason: str) -> FlagChange:
        """Change settings of a dialplan's flag and audit it. ``changes`` maps setting names to new values.

        Raises ConfigError (unknown setting, invalid value, a variant the dialplan lacks, empty who or reason, bad
        dialplan name) before writing anything, StoreUnavailable when Redis is away. A change that changes nothing
        writes nothing (``FlagChange.changed`` is False).
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
        *,
        evidence: Mapping[str, Any] | None = None,
    ) -> FlagChange:
        """Like :meth:`set_flag`, with the changes computed from the current flag inside the transaction (so that
        adding a number to a list cannot lose another supervisor's concurrent addition). ``compute`` may run more
        than once; returning None or ``{}`` changes nothing. ``evidence`` goes into the audit entry."""
        source = f"rollout {dialplan}"
        if not _DIALPLAN_NAME.match(dialplan):
            raise ConfigError(source, "dialplan", "must match ^[a-z0-9][a-z0-9_-]{0,62}$")
        who, reason = redact(who.strip()), redact(reason.strip())
        if not who:
            raise ConfigError(source, "who", "required: who makes this change")
        if not reason:
            raise ConfigError(source, "reason", "required: why this change is made")
        key = keys.rollout_flag(dialplan)
        spec = self.spec_for(dialplan)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key)
                        raw = await pipe.hgetall(key)
                        old = self._decode(dialplan, raw) if raw else self.default_for(dialplan)
                        changes = compute(old)
                        if not changes:
                            return FlagChange(dialplan, old, old, None)  # leaving the block resets (UNWATCH)
                        new = validate_flag(old.model_dump() | dict(changes), source, spec)
                        diff = [n for n in RolloutFlag.model_fields if getattr(old, n) != getattr(new, n)]
                        if not diff:
                            return FlagChange(dialplan, old, new, None)
                        now = self._clock()
                        entry: dict[FieldT, EncodableT] = {
                            "dialplan": dialplan,
                            "who": who,
                            "when": _iso(now),
                            "reason": reason,
                            "old": json.dumps({n: json_value(getattr(old, n)) for n in diff}),
                            "new": json.dumps({n: json_value(getattr(new, n)) for n in diff}),
                        }
                        if evidence:
                            entry["evidence"] = json.dumps(evidence, default=str)
                        pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves Pipeline.multi unannotated
                        pipe.delete(key)  # a hash of the shape before variants loses its old fields
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
