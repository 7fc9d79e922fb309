"""A backup of the rollout state that lives only in Redis, and its restore: ``callbridge rollout export`` and
``callbridge rollout import``.

The backup is one JSON document (:data:`FORMAT`, :data:`VERSION`) holding every stored flag as its hash fields (the
kill switch among them), the refused variants of each dialplan and the whole audit stream with its entry ids. The
variant health windows are left out: they are the last hour of calls and refill by themselves.

A restore (:func:`restore`) checks the whole document first (every flag decodes against the dialplan's variants;
a bad one names its dialplan and field) and writes nothing if any part is wrong. Then, in one ``MULTI``/``EXEC``:

* a flag is written where none is stored; a stored flag that differs is kept unless ``replace`` (then the backup's
  wins). Each flag written gets an audit entry by ``who`` ("restored from ..."), like any other change;
* refused variants are added where missing (a refusal stored since is kept);
* the audit stream becomes the union of the stored entries and the backup's, by entry id, in order: entries written
  since the backup (an automatic rollback after Redis came back) stay, older ones come back before them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from bridge.errors import ConfigError, redact
from bridge.rollout.policy import RolloutFlag
from bridge.rollout.seal import next_id
from bridge.rollout.store import _DIALPLAN_NAME, RolloutStore, decode_flag, next_audit_id, sealed_entry, sealed_flag
from bridge.store import keys
from bridge.store.connection import StoreUnavailable

FORMAT = "callbridge-rollout-backup"
VERSION = 1


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class Restored:
    """What a restore did, dialplan by dialplan."""

    flags: dict[str, str] = field(default_factory=dict)  # dialplan -> "restored", "replaced", "kept", "same"
    refused: int = 0  # refused variants added
    audit: int = 0  # audit entries put back

    def to_json(self) -> dict[str, Any]:
        return {"flags": self.flags, "refused_added": self.refused, "audit_added": self.audit}


async def _call(store: RolloutStore, awaitable: Any) -> Any:
    try:
        return await awaitable
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(store.where, str(exc) or type(exc).__name__) from None


async def _names(store: RolloutStore, pattern: str) -> list[str]:
    prefix = pattern.rstrip("*")
    found = [_text(k) async for k in store.client.scan_iter(match=pattern, count=500)]
    return sorted(k[len(prefix) :] for k in found)


async def _audit(store: RolloutStore) -> list[tuple[str, dict[str, str]]]:
    """The whole audit stream, oldest first: (entry id, its fields)."""
    entries: Any = await store.client.xrange(keys.ROLLOUT_AUDIT)
    return [(_text(i), _fields(f)) for i, f in entries or []]


async def export(store: RolloutStore) -> dict[str, Any]:
    """The backup document of everything the rollout keeps in Redis but its health windows. Raises StoreUnavailable."""
    c = store.client
    try:
        flag_names = sorted(
            set(await _names(store, keys.rollout_flag("*")))
            | {_text(n) for n in await c.smembers(keys.ROLLOUT_DIALPLANS)}
        )
        flags = {n: _fields(raw) for n in flag_names if (raw := await c.hgetall(keys.rollout_flag(n)))}
        refused = {
            n: _fields(await c.hgetall(keys.rollout_refused(n))) for n in await _names(store, keys.rollout_refused("*"))
        }
        audit = [{"id": i, "fields": f} for i, f in await _audit(store)]
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(store.where, str(exc) or type(exc).__name__) from None
    return {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "source": store.where,
        "flags": flags,
        "refused": {n: v for n, v in refused.items() if v},
        "audit": audit,
    }


def check(doc: Any, source: str, store: RolloutStore) -> dict[str, RolloutFlag]:
    """Every flag of the backup, decoded against its dialplan's variants. ConfigError naming ``source`` and the
    field of the first problem."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigError(source, "format", f"not a rollout backup (want format {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise ConfigError(source, "version", f"version {doc.get('version')!r} (this bridge reads {VERSION})")
    for part, kind in (("flags", dict), ("refused", dict), ("audit", list)):
        if not isinstance(doc.get(part, kind()), kind):
            raise ConfigError(source, part, f"must be a {'mapping' if kind is dict else 'list'}")
    flags: dict[str, RolloutFlag] = {}
    for name, raw in (doc.get("flags") or {}).items():
        if not _DIALPLAN_NAME.match(str(name)):
            raise ConfigError(source, f"flags.{name}", "not a dialplan name (^[a-z0-9][a-z0-9_-]{0,62}$)")
        if not isinstance(raw, dict):
            raise ConfigError(source, f"flags.{name}", "must be a mapping of the flag's fields")
        flags[name] = decode_flag(raw, f"{source} flags.{name}", store.spec_for(name))
    for name, variants in (doc.get("refused") or {}).items():
        if not isinstance(variants, dict) or not all(isinstance(v, str) for v in variants.values()):
            raise ConfigError(source, f"refused.{name}", "must map each variant to its JSON text")
    for i, entry in enumerate(doc.get("audit") or []):
        ok = isinstance(entry, dict) and isinstance(entry.get("fields"), dict)
        try:
            _stream_id(str(entry.get("id", ""))) if ok else None
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(source, f"audit[{i}]", 'must be {"id": "<ms>-<seq>", "fields": {...}}')
    return flags


async def restore(
    store: RolloutStore, doc: Any, source: str, *, who: str, replace: bool = False, note: str = ""
) -> Restored:
    """Put the backup ``doc`` (read from ``source``) back into Redis (see the module); ``note`` goes into each
    restored flag's audit reason. Raises ConfigError (a bad backup: nothing written) or StoreUnavailable."""
    flags = check(doc, source, store)
    c, done = store.client, Restored()
    reason = redact(f"restored from {source} (exported {doc.get('exported_at', '?')})" + (f"; {note}" if note else ""))
    writes = await _flag_writes(store, flags, done, who=who, reason=reason, replace=replace)
    stored = await _call(store, _audit(store))
    have = {i for i, _ in stored}
    backup = [(str(e["id"]), {str(k): str(v) for k, v in e["fields"].items()}) for e in doc.get("audit") or []]
    missing = [(i, f) for i, f in backup if i not in have]
    merged = sorted(stored + missing, key=lambda e: _stream_id(e[0]))
    last = await _call(
        store, next_audit_id(c, time.time())
    )  # each flag written names its own entry (bridge.rollout.seal)
    if merged and _stream_id(merged[-1][0]) >= _stream_id(last):
        last = next_id(merged[-1][0], 0)
    sealed = []
    for name, flag, fields in writes:
        sealed.append((name, flag, last, sealed_entry(store.rollout_keys, last, fields, flag)))
        last = next_id(last, 0)
    new_refusals = []
    for name, variants in sorted((doc.get("refused") or {}).items()):
        have_refused = {_text(v) for v in await _call(store, c.hkeys(keys.rollout_refused(name)))}
        new_refusals += [(name, v, info) for v, info in variants.items() if v not in have_refused]
    pipe = c.pipeline(transaction=True)
    for name, flag, entry_id, _ in sealed:
        pipe.delete(keys.rollout_flag(name))
        pipe.hset(keys.rollout_flag(name), mapping=sealed_flag(entry_id, flag))
        pipe.sadd(keys.ROLLOUT_DIALPLANS, name)
    for name, variant, info in new_refusals:
        pipe.hsetnx(keys.rollout_refused(name), variant, info)
    if missing:
        pipe.delete(keys.ROLLOUT_AUDIT)
        for entry_id, fields in merged:
            pipe.xadd(keys.ROLLOUT_AUDIT, dict(fields), id=entry_id)
    for _, _, entry_id, signed_entry in sealed:
        pipe.xadd(keys.ROLLOUT_AUDIT, signed_entry, id=entry_id, maxlen=keys.AUDIT_MAXLEN, approximate=True)
    await _call(store, pipe.execute())
    for name, flag, entry_id, _ in sealed:
        store.obeys(name, entry_id, flag)
    done.refused, done.audit = len(new_refusals), len(missing)
    return done


async def _flag_writes(
    store: RolloutStore, flags: Mapping[str, RolloutFlag], done: Restored, *, who: str, reason: str, replace: bool
) -> list[tuple[str, RolloutFlag, dict[str, str]]]:
    """The flags to write, each with its audit entry's fields; ``done.flags`` says what becomes of every flag (one
    stored but not obeyed, written outside callbridge, counts as none)."""
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    writes: list[tuple[str, RolloutFlag, dict[str, str]]] = []
    for name, flag in sorted(flags.items()):
        now = await store.stored_flag(name)
        if store.fail_safe(name):  # a refused flag's safe variant: no flag callbridge vouches for is stored
            now = None
        if now == flag:
            done.flags[name] = "same"
            continue
        if now is not None and not replace:
            done.flags[name] = "kept"
            continue
        before = now or store.default_for(name)
        diff = [n for n in RolloutFlag.model_fields if getattr(before, n) != getattr(flag, n)]
        dump, old = flag.model_dump(mode="json"), before.model_dump(mode="json")
        entry = {"dialplan": name, "who": who, "when": stamp, "reason": reason}
        entry |= {"old": json.dumps({n: old[n] for n in diff}), "new": json.dumps({n: dump[n] for n in diff})}
        writes.append((name, flag, entry))
        done.flags[name] = "restored" if now is None else "replaced"
    return writes
