"""Variants whose model the service refuses, kept in Redis beside the flags.

When the service refuses a variant's model (:class:`bridge.errors.ModelRefused`: not found, retired, not allowed),
the worker that saw it calls :func:`mark_refused`: the variant goes into the dialplan's refused hash
(``keys.rollout_refused``: variant -> ``{"model", "code", "at"}``, no message, nothing secret), and its weight moves
to the healthy variants (:func:`bridge.rollout.policy.weights_after_refusal`) in an audited flag change by
``auto-refusal``. Every worker reads the hash with the flag for each new call (:func:`refused_for_call`, bounded,
never raising) and :func:`bridge.rollout.policy.decide` sends no call to a refused variant. Refusals do not expire:
the model will not come back by itself. A person clears one (``callbridge rollout unrefuse``) once the variant
names a model the service takes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from redis.exceptions import RedisError

from bridge.errors import redact
from bridge.rollout import policy
from bridge.rollout.store import RolloutStore
from bridge.store import keys
from bridge.store.connection import StoreUnavailable

log = logging.getLogger("bridge.rollout")

AUTO_REFUSAL_WHO = "auto-refusal"
_last_known: dict[str, frozenset[str]] = {}  # dialplan -> the refused variants last read (Redis away: these)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(raw: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, value in (raw or {}).items():
        try:
            info = json.loads(_text(value))
        except ValueError:
            info = {}
        out[_text(name)] = info if isinstance(info, dict) else {}
    return out


async def refused(store: RolloutStore, dialplan: str) -> dict[str, dict[str, Any]]:
    """The dialplan's refused variants and what the service said. Raises StoreUnavailable."""
    try:
        raw = await store.client.hgetall(keys.rollout_refused(dialplan))
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(store.where, str(exc) or type(exc).__name__) from None
    return _decode(raw)


async def refused_for_call(store: RolloutStore, dialplan: str) -> frozenset[str]:
    """The refused variants for the next call's decision: never raises, never waits past the store's read timeout
    (Redis away: the set last read)."""
    try:
        raw = await asyncio.wait_for(store.client.hkeys(keys.rollout_refused(dialplan)), store.read_timeout_s)
    except (RedisError, OSError, TimeoutError):
        return _last_known.get(dialplan, frozenset())
    names = frozenset(_text(n) for n in raw)
    _last_known[dialplan] = names
    return names


async def mark_refused(store: RolloutStore, dialplan: str, variant: str, model: str, code: str) -> bool:
    """Mark ``variant`` refused and move its weight to the healthy variants (audited). True if this call marked it
    (another worker may have been first). Raises StoreUnavailable."""
    info = json.dumps({"model": model, "code": redact(code), "at": round(time.time(), 3)}, separators=(",", ":"))
    try:
        new = bool(await store.client.hsetnx(keys.rollout_refused(dialplan), variant, info))
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(store.where, str(exc) or type(exc).__name__) from None
    _last_known[dialplan] = _last_known.get(dialplan, frozenset()) | {variant}
    spec = store.spec_for(dialplan)
    now_refused = set(await refused(store, dialplan))

    def compute(old: policy.RolloutFlag) -> dict[str, Any] | None:
        weights = policy.weights_after_refusal(spec, old, now_refused)
        return None if weights is None else {"weights": weights}

    reason = f"{variant}: the service refuses model {model} ({code}); its weight moves to the healthy variants"
    change = await store.update_flag(dialplan, compute, AUTO_REFUSAL_WHO, reason, evidence={"refused": variant})
    if new:
        log.error("rollout %s: %s", dialplan, reason if change.changed else f"{variant} refused model {model} ({code})")
    return new


async def clear_refused(store: RolloutStore, dialplan: str, variant: str) -> bool:
    """Take ``variant`` off the refused list (its weight stays where it is: ``rollout set`` moves it back). True if
    it was on it. Raises StoreUnavailable."""
    try:
        removed = await store.client.hdel(keys.rollout_refused(dialplan), variant)
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(store.where, str(exc) or type(exc).__name__) from None
    _last_known.pop(dialplan, None)
    return bool(removed)
