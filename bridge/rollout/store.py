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
  variants, then writes it and appends to the audit stream (``keys.ROLLOUT_AUDIT``: dialplan, who, the OS user of
  the process, when, the changed settings' old and new values, why, for an automatic rollback the numbers that
  triggered it, and the whole new flag) in one ``MULTI``/``EXEC`` under ``WATCH`` of the flag and the stream, so two
  supervisors changing one flag at once cannot lose an entry.
* **Only the product's writes are obeyed.** The flag's hash names its audit entry, which is signed with the first
  key of the ``rollout_key`` setting when it is set, and vouched for by a signature of any of its keys
  (:mod:`bridge.rollout.seal`). A stored flag no valid entry vouches for (a raw ``HSET``, a deleted hash, a replayed
  old one, a change signed with a key this process does not list) is not obeyed: calls keep the last valid flag of
  the audit, unless the refused flag (or its entry) asks for the kill switch, or cannot say whether it does, or no
  valid entry of the plan is left: then the safe variant takes every call (:func:`fail_safe_flag`), never the
  plan's default weights, which could send callers to a candidate. Each process logs it at ERROR and counts it
  (``callbridge_rollout_flag_refused_total``) once per change of the stored hash, and :meth:`RolloutStore.refusal`
  says it (``rollout show``). The verdict is kept until the hash changes, so a call's read stays one ``HGETALL``.
  A flag stored before flags were sealed is adopted (signed as found, audited) by
  :meth:`RolloutStore.adopt_unsealed`, which ``serve`` runs at start.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError, WatchError
from redis.typing import EncodableT, FieldT

from bridge import metrics
from bridge.errors import ConfigError, redact
from bridge.rollout import policy, seal
from bridge.rollout.health import WindowStats, should_rollback
from bridge.rollout.policy import Decision, RolloutFlag, RolloutSpec, legacy_spec, migrate, validate_flag
from bridge.store import keys
from bridge.store.connection import StoreUnavailable, given_or_connect, safe_url

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
        if name in seal.META_FIELDS:
            continue
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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: str
    dialplan: str
    who: str  # as claimed (--who, the console's account, auto-rollback)
    when: str  # ISO 8601, UTC
    reason: str
    old: dict[str, Any]  # the changed settings' values before
    new: dict[str, Any]  # ... and after
    evidence: dict[str, Any] = field(default_factory=dict)  # an automatic rollback's window numbers
    os_user: str = ""  # the OS user of the process that wrote it

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
        os_user=f.get(seal.OS_USER_FIELD, ""),
    )


async def _entries_from(client: Any, entry_id: str | None) -> list[seal.Entry]:
    """The audit entries from ``entry_id`` on, oldest first (none if it is not there)."""
    if not entry_id:
        return []
    out: list[seal.Entry] = []
    start = entry_id
    while True:
        try:
            batch = await client.xrange(keys.ROLLOUT_AUDIT, min=start, count=500) or []
        except ResponseError:  # not an entry id: no entry
            return []
        out += [(_text(i), _fields(f)) for i, f in batch]
        if len(batch) < 500:
            return out
        start = f"({out[-1][0]}"


async def _entries_of(client: Any, dialplan: str) -> list[seal.Entry]:
    """The audit entries of ``dialplan`` that hold a whole flag, newest first."""
    out: list[seal.Entry] = []
    last = "+"
    while True:
        batch = await client.xrevrange(keys.ROLLOUT_AUDIT, max=last, count=500) or []
        entries = [(_text(i), _fields(f)) for i, f in batch]
        out += [e for e in entries if e[1].get("dialplan") == dialplan and seal.FLAG_FIELD in e[1]]
        if len(batch) < 500:
            return out
        last = f"({entries[-1][0]}"


async def next_audit_id(client: Any, now: float) -> str:
    """The id of the next audit entry: after the stream's last generated id, at ``now`` (seconds) if later."""
    try:
        info = await client.xinfo_stream(keys.ROLLOUT_AUDIT)
        last = _text(info.get("last-generated-id", "0-0"))
    except ResponseError:  # no stream yet
        last = "0-0"
    return seal.next_id(last, int(now * 1000))


def sealed_entry(
    rollout_keys: seal.Keys, entry_id: str, fields: Mapping[str, str], flag: RolloutFlag
) -> dict[FieldT, EncodableT]:
    """An audit entry's fields for writing ``flag`` as entry ``entry_id``: with the whole flag, the OS user of this
    process, and the signature (by the first key, with keys)."""
    hashed = {_text(k): _text(v) for k, v in encode_flag(flag).items()}
    entry = {**fields, seal.FLAG_FIELD: seal.flag_text(hashed), seal.OS_USER_FIELD: seal.os_user()}
    out: dict[FieldT, EncodableT] = {}
    for name, value in seal.signed(rollout_keys, entry_id, entry).items():
        out[name] = value
    return out


def sealed_flag(entry_id: str, flag: RolloutFlag) -> dict[FieldT, EncodableT]:
    """A flag's hash fields as written with its audit entry ``entry_id``."""
    return {**encode_flag(flag), seal.AUDIT_FIELD: entry_id}


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What calls obey while the stored hash of a dialplan is ``seen``: ``flag`` (None: the plan's defaults), and for
    a refused hash why (``refusal``) and whether ``flag`` is the fail-safe (the safe variant)."""

    seen: tuple[tuple[str, str], ...]
    flag: RolloutFlag | None
    refusal: str | None = None
    fail_safe: bool = False


def fail_safe_flag(spec: RolloutSpec) -> RolloutFlag:
    """The flag calls follow when a refused flag may not be followed: the plan's defaults with the kill switch on
    (every call on the safe variant, allow lists included)."""
    return spec.default_flag().model_copy(update={"kill": True})


def _when_refused(
    spec: RolloutSpec,
    rollout_keys: seal.Keys,
    dialplan: str,
    seen: tuple[tuple[str, str], ...],
    since: Sequence[seal.Entry],
    why: str | None,
    entries: Sequence[seal.Entry],
) -> _Verdict:
    """What calls follow while the stored hash ``seen`` of ``dialplan`` is refused (``why``; ``seen`` empty: none
    stored), ``since`` the audit entries from the one it names on, ``entries`` the plan's: the safe variant when it
    (or its entry) asks for the kill switch or cannot say (:func:`bridge.rollout.seal.says_kill`), else the last
    valid flag, else the safe variant again if anything was stored or audited, else (nothing at all) the plan's
    defaults. A refusal is logged at ERROR and counted: once per stored hash, as the verdict is kept."""
    fields, safe = dict(seen), f"the safe variant {spec.safe}"
    last = seal.last_valid(rollout_keys, dialplan, entries)
    if fields and seal.says_kill(fields, since):
        fail_safe, follows = True, f"{safe} (the refused flag asks for the kill switch, or cannot say whether it does)"
    elif last is not None:
        fail_safe, follows = False, f"the last valid flag (audit {last[0]})"
    elif fields or entries:  # a refused flag, or a vanished one whose audit holds no valid entry
        fail_safe, follows = True, f"{safe} (no audit entry of the plan is valid here)"
    else:
        return _Verdict(seen, None)
    source = f"redis {keys.rollout_flag(dialplan)}"
    flag = fail_safe_flag(spec) if fail_safe or last is None else decode_flag(last[1], source, spec)
    refusal = f"the stored flag is not obeyed: {why if fields and why else 'the stored flag is gone'}; "
    refusal += f"calls follow {follows}"
    metrics.ROLLOUT_FLAG_REFUSED.labels(dialplan).inc()
    log.error("%s", _refusal_line(dialplan, refusal))
    return _Verdict(seen, flag, refusal, fail_safe)


def _refusal_line(dialplan: str, refusal: str) -> str:
    return (
        f"rollout {dialplan}: {refusal}. Someone wrote it to Redis outside callbridge, or signed it with a key this "
        "process's rollout_key does not list: set it again with `callbridge rollout set` (docs/operating.md"
        "#runbook-rollout-flag-refused)"
    )


# ------------------------------------------------------------------------------------------------ the store
class RolloutStore:
    """Rollout flags, their audit stream and the variant health windows of all dialplans.

    ``specs`` maps each rollout dialplan to its variants (:func:`bridge.dialplan.rollout_specs`).

    ``rollout_keys``: the ``rollout_key`` setting's keys (``Settings.rollout_keys``): the first signs the audit
    entries this store writes, any of them vouches for one; none: the audit alone vouches for a flag.

    Counters: ``read_failures`` (flag reads that fell back), ``record_failures`` (calls not recorded),
    ``rollbacks`` (automatic rollbacks made by this process). ``last_source[dialplan]`` says where the last flag
    came from: ``"redis"``, ``"default"`` (none stored), ``"fail-safe"`` (a refused flag: the safe variant),
    ``"cache"`` or ``"fallback-default"`` (Redis away).
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
        rollout_keys: seal.Keys = (),
        **redis_kwargs: Any,
    ) -> None:
        self.client, self._owns_client = given_or_connect(
            "RolloutStore", url, client, timeout_s=read_timeout_s, **redis_kwargs
        )
        self.where = safe_url(url) if url else "redis client"
        self.specs = dict(specs or {})
        self.read_timeout_s = read_timeout_s
        self.retry_after_s = retry_after_s
        self._clock = clock
        self.rollout_keys = rollout_keys  # the audit's HMAC keys; (): the audit alone vouches for a flag
        self._verdicts: dict[str, _Verdict] = {}  # per dialplan: the stored hash last seen and what calls obey
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
            obeyed = await asyncio.wait_for(self._obeyed(dialplan, raw), self.read_timeout_s)
        except ConfigError as exc:
            self.read_failures += 1
            log.error("invalid stored rollout flag: %s; using the last known or default flag", exc)
            return self._fallback(dialplan)
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
        except Exception as exc:  # a stored value no reader foresaw: counted and logged, the call goes on
            self.read_failures += 1
            what = type(exc).__name__
            log.error("unreadable stored rollout flag of %s (%s); using the last known or default flag", dialplan, what)
            return self._fallback(dialplan)
        if obeyed is None:
            flag, self.last_source[dialplan] = self.default_for(dialplan), "default"
        else:
            flag, self.last_source[dialplan] = obeyed, "fail-safe" if self.fail_safe(dialplan) else "redis"
        self._cache[dialplan] = flag
        return flag

    async def _obeyed(self, dialplan: str, raw: Mapping[Any, Any], client: Any = None) -> RolloutFlag | None:
        """The flag calls obey given the stored hash ``raw`` (None: none stored, the plan's defaults): ``raw`` itself
        if a valid audit entry vouches for it (:func:`bridge.rollout.seal.refusal`); else, for a refused one, the
        safe variant (:func:`fail_safe_flag`) when it or its entry asks for the kill switch (:func:`bridge.rollout.seal.
        says_kill`) or no valid entry of the plan is left, otherwise the last valid flag of the audit; the refusal
        logged at ERROR, counted, and kept for :meth:`refusal`. Decided once per distinct ``raw``. Raises
        RedisError, ConfigError."""
        fields = _fields(raw)
        seen = tuple(sorted(fields.items()))
        verdict = self._verdicts.get(dialplan)
        if verdict is not None and verdict.seen == seen:
            return verdict.flag
        c = client if client is not None else self.client
        since = await _entries_from(c, fields.get(seal.AUDIT_FIELD))
        why = seal.refusal(self.rollout_keys, dialplan, fields, since)
        if fields and why is None:
            verdict = _Verdict(seen, self._decode(dialplan, fields))
        else:
            entries = await _entries_of(c, dialplan)
            verdict = _when_refused(self.spec_for(dialplan), self.rollout_keys, dialplan, seen, since, why, entries)
        self._verdicts[dialplan] = verdict
        return verdict.flag

    def refusal(self, dialplan: str) -> str | None:
        """Why the stored flag last read is not obeyed, and what calls follow (None: obeyed, none, not read)."""
        return verdict.refusal if (verdict := self._verdicts.get(dialplan)) is not None else None

    def fail_safe(self, dialplan: str) -> bool:
        """Whether the calls of ``dialplan`` are on the safe variant because its stored flag was refused."""
        return (verdict := self._verdicts.get(dialplan)) is not None and verdict.fail_safe

    async def _refused(self, dialplan: str, raw: Mapping[Any, Any], client: Any) -> bool:
        """Is the stored hash ``raw`` there and not obeyed (written outside callbridge)?"""
        fields = _fields(raw)
        since = await _entries_from(client, fields.get(seal.AUDIT_FIELD))
        return bool(fields) and seal.refusal(self.rollout_keys, dialplan, fields, since) is not None

    def obeys(self, dialplan: str, entry_id: str, flag: RolloutFlag) -> None:
        """Remember that the hash just written (``flag`` with entry ``entry_id``) is obeyed."""
        written = {_text(k): _text(v) for k, v in sealed_flag(entry_id, flag).items()}
        self._verdicts[dialplan] = _Verdict(tuple(sorted(written.items())), flag)
        self._cache[dialplan] = flag

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
        pipe = self.client.pipeline(transaction=False)  # not one transaction: its keys are in different slots
        for name in names:
            pipe.zrangebyscore(keys.variant_calls(dialplan, name), since, "+inf")
            pipe.zrangebyscore(keys.variant_calls_untagged(dialplan, name), since, "+inf")  # an older version's
        found = await self._call(pipe.execute())
        out: dict[str, WindowStats] = {}
        for name, tagged, untagged in zip(names, found[::2], found[1::2], strict=True):
            records = []
            for m in [*tagged, *untagged]:
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
        """The stored flag calls obey (None if none is: the plan's defaults; a flag written outside callbridge is
        not, see :meth:`_obeyed`). Raises StoreUnavailable or ConfigError (bad stored data)."""
        raw = await self._call(self.client.hgetall(keys.rollout_flag(dialplan)))
        obeyed: RolloutFlag | None = await self._call(self._obeyed(dialplan, raw))
        return obeyed

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
                        await pipe.watch(key, keys.ROLLOUT_AUDIT)
                        raw = await pipe.hgetall(key)
                        old = await self._obeyed(dialplan, raw, pipe) or self.default_for(dialplan)
                        changes = compute(old)
                        if not changes:
                            return FlagChange(dialplan, old, old, None)  # leaving the block resets (UNWATCH)
                        new = validate_flag(old.model_dump() | dict(changes), source, spec)
                        diff = [n for n in RolloutFlag.model_fields if getattr(old, n) != getattr(new, n)]
                        if not diff and not await self._refused(dialplan, raw, pipe):
                            return FlagChange(dialplan, old, new, None)
                        # (no difference from the flag in force, but the stored hash is one that is not obeyed: a
                        # write outside callbridge; the change writes the flag in force over it, audited)
                        now = self._clock()
                        fields = {
                            "dialplan": dialplan,
                            "who": who,
                            "when": _iso(now),
                            "reason": reason,
                            "old": json.dumps({n: json_value(getattr(old, n)) for n in diff}),
                            "new": json.dumps({n: json_value(getattr(new, n)) for n in diff}),
                        }
                        if evidence:
                            fields["evidence"] = json.dumps(evidence, default=str)
                        audit_id = await next_audit_id(pipe, self._clock())
                        entry = sealed_entry(self.rollout_keys, audit_id, fields, new)
                        pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves Pipeline.multi unannotated
                        pipe.delete(key)  # a hash of the shape before variants loses its old fields
                        pipe.hset(key, mapping=sealed_flag(audit_id, new))
                        pipe.sadd(keys.ROLLOUT_DIALPLANS, dialplan)
                        pipe.xadd(keys.ROLLOUT_AUDIT, entry, id=audit_id, maxlen=keys.AUDIT_MAXLEN, approximate=True)
                        await pipe.execute()
                        user = entry[seal.OS_USER_FIELD]
                        log.info(
                            "rollout %s changed by %s (os user %s; %s): %s", dialplan, who, user, reason, fields["new"]
                        )
                        self.obeys(dialplan, audit_id, new)
                        return FlagChange(dialplan, old, new, audit_id)
                    except WatchError:
                        continue  # someone else changed the flag between our read and write: recompute
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(self.where, str(exc) or type(exc).__name__) from None

    async def adopt_unsealed(self, dialplans: Sequence[str], who: str) -> list[str]:
        """Seal each of ``dialplans``' stored flags that names no audit entry and that no valid audit entry of its
        dialplan was ever written for (a flag stored before flags were sealed): written again as found, with an
        audit entry by ``who``, logged at WARNING. Returns the dialplans adopted. Raises StoreUnavailable."""
        adopted = []
        for dialplan in dialplans:
            key = keys.rollout_flag(dialplan)
            try:
                async with self.client.pipeline(transaction=True) as pipe:
                    await pipe.watch(key, keys.ROLLOUT_AUDIT)
                    raw = _fields(await pipe.hgetall(key))
                    if not raw or seal.AUDIT_FIELD in raw or await _entries_of(pipe, dialplan):
                        continue
                    flag = self._decode(dialplan, raw)
                    why = "sealed the flag stored before flags were sealed, as found"
                    audit_id = await _write_as_found(self, pipe, dialplan, flag, who, why)
            except WatchError:
                continue  # changed meanwhile: by the product, which sealed it
            except ConfigError as exc:
                log.error("rollout %s: the stored flag cannot be sealed: %s", dialplan, exc)
                continue
            except (RedisError, OSError) as exc:
                raise StoreUnavailable(self.where, str(exc) or type(exc).__name__) from None
            self.obeys(dialplan, audit_id, flag)
            sealed = "the flag stored before flags were sealed is sealed as found"
            log.warning("rollout %s: %s (audit %s): %s", dialplan, sealed, audit_id, seal.flag_text(raw))
            adopted.append(dialplan)
        return adopted

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(self.where, str(exc) or type(exc).__name__) from None


async def _write_as_found(store: RolloutStore, pipe: Any, dialplan: str, flag: Any, who: str, why: str) -> str:
    """Inside ``pipe``'s watch: write the stored ``flag`` again as it is, sealed with an audit entry by ``who``
    (no change: ``old`` and ``new`` empty) signed with the store's first key. Returns the entry's id."""
    key = keys.rollout_flag(dialplan)
    audit_id = await next_audit_id(pipe, store._clock())
    fields = {"dialplan": dialplan, "who": who, "when": _iso(store._clock()), "reason": why}
    fields |= {"old": "{}", "new": "{}"}
    entry = sealed_entry(store.rollout_keys, audit_id, fields, flag)
    pipe.multi()
    pipe.delete(key)
    pipe.hset(key, mapping=sealed_flag(audit_id, flag))
    pipe.xadd(keys.ROLLOUT_AUDIT, entry, id=audit_id, maxlen=keys.AUDIT_MAXLEN, approximate=True)
    await pipe.execute()
    return str(audit_id)


# ------------------------------------------------------------------------------------------------ key rotation
async def reseal(store: RolloutStore, dialplans: Sequence[str], who: str) -> list[str]:
    """Sign again with the first key of ``store.rollout_keys`` each of ``dialplans``' stored flags that is obeyed
    but whose audit entry another listed key signed (a key rotation, ``new,old``): written again as it is, with
    an audit entry by ``who``, logged at WARNING, so that dropping the old key refuses none of them. Returns the
    dialplans signed again. Raises StoreUnavailable."""
    if len(store.rollout_keys) < 2:
        return []
    done = []
    for dialplan in dialplans:
        key = keys.rollout_flag(dialplan)
        try:
            async with store.client.pipeline(transaction=True) as pipe:
                await pipe.watch(key, keys.ROLLOUT_AUDIT)
                raw = _fields(await pipe.hgetall(key))
                since = await _entries_from(pipe, raw.get(seal.AUDIT_FIELD))
                if not raw or seal.refusal(store.rollout_keys, dialplan, raw, since) is not None:
                    continue  # none stored, or refused: a person sets it (the refusal is logged where it is read)
                if seal.signed_with(store.rollout_keys[0], since[0]):
                    continue
                flag = store._decode(dialplan, raw)
                why = "signed again with the first key of rollout_key, as it was"
                audit_id = await _write_as_found(store, pipe, dialplan, flag, who, why)
        except WatchError:
            continue  # changed meanwhile: by the product, which signed it with its first key
        except ConfigError as exc:
            log.error("rollout %s: the stored flag cannot be signed again: %s", dialplan, exc)
            continue
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(store.where, str(exc) or type(exc).__name__) from None
        store.obeys(dialplan, audit_id, flag)
        again = "the stored flag is signed again with the first key of rollout_key"
        log.warning("rollout %s: %s (audit %s)", dialplan, again, audit_id)
        done.append(dialplan)
    return done
