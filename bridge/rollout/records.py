"""A rollout plan's outcome records in Redis, and the guarded rollout the worker runs on them after every call.

Records (``bridge.rollout.outcomes``), signed with the node's ``rollout_key`` (``bridge.rollout.seal``), go to one
stream per plan (``keys.rollout_records``), capped at
``keys.RECORDS_MAXLEN`` entries and kept ``keys.RECORDS_TTL_S`` after the last write. A record names its call
(``call_id``) and its caller (``caller``: ``HMAC-SHA256(key, normalized number)``, where the key is derived from the
node's ``listen_key``; the number itself is never written; none for a withheld number or without a key). A repeat
call adds a late outcome of the earlier call, its own signed entry ``{"late": true, "call_id", "t", "repeat":
true}`` (a stream entry never changes): every reader feeds it to the engine in stream order, which applies it the
same way live and offline.

:class:`LiveExperiment` keeps, per plan, an :class:`~bridge.rollout.experiment.Experiment` fed with the stream's new
entries after each call (so every worker sees the same records in the same order and decides at the same record).
With a key, a record that is unsigned or badly signed is left out and counted (``rejected``; the metric
``callbridge_rollout_records_rejected_total``): whoever can write Redis cannot make evidence.
A decision changes the flag inside :meth:`~bridge.rollout.store.RolloutStore.update_flag`'s transaction (only when
the flag is still on the epoch decided on, so one worker's change is the only one; the others find the flag moved and
write nothing) or, for a promotion without ``auto_promote`` (or with no step left), marks it once in
``keys.rollout_decided`` and audits it there with its evidence. Whoever takes it is the only one told so (True), and
only that worker counts, logs and sends it (``bridge.serve.outcome``).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import hmac
import json
import logging
import pickle
import weakref
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bridge import metrics
from bridge.errors import redact
from bridge.rollout import engine as _engine
from bridge.rollout import evidence as _evidence
from bridge.rollout import experiment as _experiment
from bridge.rollout import guardrails as _guardrails
from bridge.rollout import seal
from bridge.rollout import srm as _srm
from bridge.rollout import stats as _stats
from bridge.rollout import watch as _watch
from bridge.rollout.experiment import Decision, Experiment, step_weights
from bridge.rollout.outcomes import compact, epoch_of
from bridge.rollout.policy import RolloutFlag, RolloutSpec, has_digits, normalize_number
from bridge.store import keys
from bridge.store.connection import StoreUnavailable

if TYPE_CHECKING:
    from bridge.rollout.store import RolloutStore

log = logging.getLogger(__name__)
WRITE_TIMEOUT_S = 2.0
STATE_FORMAT = 1  # raised when the engine's kept state changes meaning with no field changed (:func:`state_format`)
SHOWN_RECORDS = 50_000  # the most recent records ``rollout show`` and the console read for the current epoch
AUTO_DECISION_WHO = "auto-experiment"


def caller_key(listen_key: bytes) -> bytes:
    """The key of the callers' hashes, derived from the node's listen key (never the listen key itself)."""
    return hmac.new(listen_key, b"callbridge rollout caller hash", hashlib.sha256).digest()


def caller_hash(key: bytes, caller: str) -> str | None:
    """The keyed hash of a caller's number (None for a withheld one: no digits)."""
    if not has_digits(caller):
        return None
    return hmac.new(key, normalize_number(caller).encode(), hashlib.sha256).hexdigest()[:32]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def append(
    client: aioredis.Redis,
    dialplan: str,
    record: Mapping[str, Any],
    caller: str | None = None,
    key: bytes | None = None,
    sign_key: seal.Keys = (),
) -> str | None:
    """Write one record (with its caller's hash, signed with ``sign_key``: the ``rollout_key``); mark the caller's
    previous call of the plan a repeat if it ended within 72 h (a signed late outcome). Returns the record's id, or
    None when Redis could not take it (logged; the call itself is long over)."""
    stream = keys.rollout_records(dialplan)
    hashed = caller_hash(key, caller) if key is not None and caller else None
    if hashed is not None and "rearm" not in record:
        record = {**record, "caller": hashed}
    record = seal.sign_record(sign_key, record)
    call_id = record.get("call_id")
    try:
        entry_id = _text(
            await asyncio.wait_for(
                client.xadd(
                    stream,
                    {"r": json.dumps(dict(record), separators=(",", ":"))},
                    maxlen=keys.RECORDS_MAXLEN,
                    approximate=True,
                ),
                WRITE_TIMEOUT_S,
            )
        )
        pipe = client.pipeline(transaction=False)
        pipe.expire(stream, keys.RECORDS_TTL_S)
        marks = hashed is not None and isinstance(call_id, str)
        if marks:
            pipe.set(keys.rollout_caller(dialplan, hashed or ""), str(call_id), ex=keys.REPEAT_WINDOW_S, get=True)
        results = await asyncio.wait_for(pipe.execute(), WRITE_TIMEOUT_S)
        previous = results[1] if marks else None
        if previous and _text(previous) != call_id:
            late = seal.sign_record(
                sign_key, {"late": True, "call_id": _text(previous), "t": record.get("t"), "repeat": True}
            )
            await asyncio.wait_for(
                client.xadd(
                    stream,
                    {"r": json.dumps(late, separators=(",", ":"))},
                    maxlen=keys.RECORDS_MAXLEN,
                    approximate=True,
                ),
                WRITE_TIMEOUT_S,
            )
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("could not write the outcome record of a call of %s: %s", dialplan, redact(str(exc)))
        return None
    return entry_id


def _later(entry_id: str, last_id: str) -> bool:
    """Is stream entry ``entry_id`` after ``last_id`` (``-``: before every entry)? Ids are ``ms-seq``."""
    if last_id == "-":
        return True
    mine, last = (tuple(int(p) for p in i.split("-", 1)) for i in (entry_id, last_id))
    return mine > last


def _entries(raw: Any) -> list[tuple[str, dict[str, Any]]]:
    """Stream entries (XRANGE's answer) as (id, record, late outcome or re-arm); undecodable ones left out."""
    out: list[tuple[str, dict[str, Any]]] = []
    for entry_id, fields in raw or ():
        data = {_text(k): _text(v) for k, v in fields.items()}
        try:
            record = json.loads(data.get("r", ""))
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append((_text(entry_id), record))
    return out


async def read(
    client: aioredis.Redis, dialplan: str, since: float | None = None, last: int | None = None
) -> list[dict[str, Any]]:
    """A plan's stream entries in the order they were written (ended at ``since`` or later; only the ``last``
    entries if given): records, late outcomes and re-arms, each with its stream ``id``."""
    start = "-" if since is None else str(max(0, int(since * 1000)))
    try:
        stream = keys.rollout_records(dialplan)
        if last is None:
            raw = await client.xrange(stream, min=start, max="+")
        else:
            raw = list(reversed((await client.xrevrange(stream, max="+", min=start, count=last)) or []))
    except (RedisError, OSError) as exc:
        raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from None
    return [{"id": entry_id, **value} for entry_id, value in _entries(raw)]


def refusal(key: seal.Keys, entry: Mapping[str, Any]) -> str | None:
    """Why a stream entry is no evidence (None: it is): its signature (``bridge.rollout.seal``), or, with a key, a
    call's record that names no call (it could not be counted once)."""
    why = seal.record_refusal(key, entry)
    if why is None and key and not ({"late", "rearm"} & entry.keys()) and not entry.get("call_id"):
        return "no call id"
    return why


def engine(spec: RolloutSpec) -> Experiment:
    """A fresh guarded rollout of ``spec`` (the plan's own weights known from the start)."""
    return Experiment(spec.experiment, spec.safe, spec.names, weights=spec.default_flag().weights)


@dataclass
class _Shown:
    """A plan's rollout as ``current`` last showed it, fed on from where it stopped."""

    client: weakref.ref[aioredis.Redis]
    replay: Experiment
    last_id: str
    rejected: dict[str, int]


_SHOWN: dict[tuple[int, str, str, seal.Keys], _Shown] = {}
SHOWN_PLANS = 64  # rollouts kept fed per process (the console's and ``rollout show``'s)


async def current(client: aioredis.Redis, dialplan: str, spec: RolloutSpec, key: seal.Keys = ()) -> dict[str, Any]:
    """The plan's rollout as the workers judge it (its last ``SHOWN_RECORDS`` records, in the order they were
    written): the current epoch, every decision, the estimates with each candidate's verdict and trend, and the
    records left out for their signature (``rollout show``, the console's rollout card). Kept per client and fed
    only the records written since the last look, so a console refreshing after every call costs one read of the
    new records. Raises StoreUnavailable."""
    ident = (id(client), dialplan, spec.model_dump_json(), key)
    state = _SHOWN.get(ident)
    stream = keys.rollout_records(dialplan)
    try:
        if state is None or state.client() is not client:
            kept = await load_snapshot(client, dialplan, spec, key)
            if kept is not None:  # the rollout's whole life: its state, then the records after it
                raw = await client.xrange(stream, min=f"({kept[1]}", max="+") or []
            else:
                raw = list(reversed((await client.xrevrange(stream, max="+", min="-", count=SHOWN_RECORDS)) or []))
            replay, last = kept if kept is not None else (engine(spec), "-")
            state = _SHOWN[ident] = _Shown(weakref.ref(client), replay, last, {"unsigned": 0, "bad signature": 0})
            while len(_SHOWN) > SHOWN_PLANS:
                del _SHOWN[next(iter(_SHOWN))]
        else:
            raw = (await client.xrange(stream, min=f"({state.last_id}" if state.last_id != "-" else "-", max="+")) or []
    except (RedisError, OSError) as exc:
        raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from None
    exp = state.replay
    for entry_id, value in _entries(raw):
        if not _later(entry_id, state.last_id):
            continue
        state.last_id = entry_id
        why = refusal(key, value)
        if why is not None:
            state.rejected[why] = state.rejected.get(why, 0) + 1
            continue
        exp.feed(value)
    rejected = {**state.rejected, **{k: v for k, v in exp.refused.items() if v}}
    return {
        "epoch": exp.epoch,
        "alpha": spec.experiment.alpha,
        "decisions": [d.to_json() for d in exp.decisions],
        "estimates": exp.estimates(),
        "srm": exp.srm.to_json() if exp.srm is not None else None,
        "rejected": rejected,
        "signed": bool(key),
    }


@dataclass
class _PlanState:
    replay: Experiment
    last_id: str = "-"
    spec_key: str = ""
    fed: int = 0  # entries fed since the last snapshot


def _spec_hash(spec: RolloutSpec) -> str:
    """The kept state's key: the spec and the engine's state format (:func:`state_format`), so a state is taken up only
    by the experiment section and the release that wrote it."""
    return hashlib.sha256(f"{state_format()}\x00{spec.model_dump_json()}".encode()).hexdigest()[:16]


@functools.cache
def state_format() -> str:
    """The engine's state format: ``STATE_FORMAT`` and the fields of every dataclass of the rollout's modules, in
    order (a slots dataclass is pickled by position: a field added, dropped or moved changes the format)."""
    shape = [str(STATE_FORMAT)]
    for module in (_engine, _evidence, _experiment, _guardrails, _srm, _stats, _watch):
        for name, cls in sorted(vars(module).items()):
            if isinstance(cls, type) and cls.__module__ == module.__name__ and dataclasses.is_dataclass(cls):
                shape.append(f"{module.__name__}.{name}:{','.join(f.name for f in dataclasses.fields(cls))}")
    return hashlib.sha256("\n".join(shape).encode()).hexdigest()[:12]


async def load_snapshot(
    client: aioredis.Redis, dialplan: str, spec: RolloutSpec, key: seal.Keys
) -> tuple[Experiment, str] | None:
    """The plan's kept engine state and the last stream entry it has seen, when one is kept for this very spec and
    signed with one of ``key`` (a state is taken up only when signed: without a key none is written or read)."""
    if not key:
        return None
    try:
        raw = await asyncio.wait_for(client.hgetall(keys.rollout_snapshot(dialplan)), WRITE_TIMEOUT_S)
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("rollout %s: its kept state not read (%s): replaying its records", dialplan, redact(str(exc)))
        return None
    fields = {_text(k): v for k, v in (raw or {}).items()}
    state, last_id, spec_hash, sig = (fields.get(f) for f in ("state", "last_id", "spec", "sig"))
    if state is None or last_id is None or spec_hash is None or sig is None:
        return None
    state = _text(state).encode()  # base64 text: the store's clients decode replies
    if _text(spec_hash) != _spec_hash(spec):
        return None  # another experiment section: its evidence is replayed from the records
    if not seal.snapshot_valid(key, dialplan, _text(spec_hash), _text(last_id), state, _text(sig)):
        log.warning("rollout %s: its kept state is not signed with rollout_key: left out, records replayed", dialplan)
        return None
    try:
        replay = pickle.loads(zlib.decompress(base64.b64decode(state)))  # signed with rollout_key: a worker's
    except Exception as exc:  # any damage: the records are replayed instead
        log.warning("rollout %s: its kept state could not be read (%s): replaying its records", dialplan, exc)
        return None
    return (replay, _text(last_id)) if isinstance(replay, Experiment) else None


async def save_snapshot(
    client: aioredis.Redis, dialplan: str, spec: RolloutSpec, key: seal.Keys, replay: Experiment, last_id: str
) -> None:
    """Keep the plan's engine state after stream entry ``last_id``, signed with the first of ``key`` (none without a
    key). A failure is logged: the records stay, and a restart replays them."""
    if not key:
        return
    state = base64.b64encode(zlib.compress(pickle.dumps(replay, protocol=pickle.HIGHEST_PROTOCOL), 6))
    spec_hash = _spec_hash(spec)
    sig = seal.snapshot_sig(key[0], dialplan, spec_hash, last_id, state)
    name = keys.rollout_snapshot(dialplan)
    try:
        pipe = client.pipeline(transaction=True)
        pipe.hset(name, mapping={"state": state.decode(), "last_id": last_id, "spec": spec_hash, "sig": sig})
        pipe.expire(name, keys.RECORDS_TTL_S)
        await asyncio.wait_for(pipe.execute(), WRITE_TIMEOUT_S)
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("rollout %s: its state not kept (%s)", dialplan, redact(str(exc)))


@dataclass
class LiveExperiment:
    """The worker's experiments, one per rollout plan, fed from the stream after each call."""

    plans: dict[str, _PlanState] = field(default_factory=dict)
    key: seal.Keys = ()  # the rollout_key's keys: records signed with none of them are left out

    async def after_call(self, client: aioredis.Redis, dialplan: str, spec: RolloutSpec) -> list[Decision]:
        """Feed the plan's new records; the decisions they bring."""
        spec_key = spec.model_dump_json()
        state = self.plans.get(dialplan)
        if state is None or state.spec_key != spec_key:  # a reloaded dialplan: start again from its kept state
            kept = await load_snapshot(client, dialplan, spec, self.key)
            replay, last = kept if kept is not None else (engine(spec), "-")
            state = self.plans[dialplan] = _PlanState(replay, last, spec_key=spec_key)
        start = state.last_id if state.last_id == "-" else f"({state.last_id}"
        try:
            raw = await client.xrange(keys.rollout_records(dialplan), min=start, max="+")
        except (RedisError, OSError) as exc:
            log.warning("experiment of %s skipped: %s", dialplan, redact(str(exc)))
            return []
        out: list[Decision] = []
        before = dict(state.replay.refused)
        for entry_id, value in _entries(raw):
            if not _later(entry_id, state.last_id):
                continue  # fed meanwhile by another call's after_call, whose read overlapped this one
            state.last_id = entry_id
            state.fed += 1
            why = refusal(self.key, value)
            if why is not None:
                metrics.ROLLOUT_RECORDS_REJECTED.labels(dialplan, why).inc()
                continue
            out += state.replay.feed(value)
        for why, n in state.replay.refused.items():
            if n > before.get(why, 0):
                metrics.ROLLOUT_RECORDS_REJECTED.labels(dialplan, why).inc(n - before.get(why, 0))
        if state.fed >= keys.SNAPSHOT_EVERY:
            state.fed = 0
            await save_snapshot(client, dialplan, spec, self.key, state.replay, state.last_id)
        return out

    def estimates(self, dialplan: str) -> dict[str, Any]:
        """The plan's estimates ({} before its first call here), without the trends."""
        state = self.plans.get(dialplan)
        return compact(state.replay.estimates()) if state is not None else {}


def next_step(spec: RolloutSpec, flag: RolloutFlag, candidate: str) -> dict[str, float] | None:
    """The weights of ``auto_promote``'s next step for ``candidate`` (its share in percent; every other candidate
    keeps its share; the step capped at the room they leave above the holdout; the rest on the safe variant), or None
    when there is no further step or no room."""
    total = sum(w for w in flag.weights.values() if w > 0) or 1.0
    share = 100.0 * flag.weight(candidate) / total
    step = spec.experiment.next_share(share)
    if step is None:
        return None
    others = sum(100.0 * w / total for n, w in flag.weights.items() if n not in (candidate, spec.safe) and w > 0)
    step = min(step, 100.0 - spec.experiment.holdout - others)
    return None if step <= share + 1e-9 else step_weights(spec.names, spec.safe, candidate, step, flag.weights)


def left_epoch(decision: Decision, flag: RolloutFlag) -> bool:
    """Has ``flag`` left the epoch ``decision`` was decided on (a worker took a decision on it already, a person
    changed the weights, or the kill switch is on)?"""
    return flag.kill or epoch_of(flag.weights, flag.kill) != decision.evidence.get("epoch")


def decision_changes(spec: RolloutSpec, decision: Decision, flag: RolloutFlag) -> dict[str, Any] | None:
    """The flag change a decision makes, computed on the current flag; None when it no longer applies (the flag is
    on another epoch, the candidate has no weight, or there is no step to take)."""
    if left_epoch(decision, flag):
        return None
    if flag.weight(decision.variant) <= 0 or decision.action not in ("rollback", "promote"):
        return None
    if decision.action == "rollback":
        weights = dict(flag.weights)
        weights[spec.safe] = flag.weight(spec.safe) + flag.weight(decision.variant)
        weights[decision.variant] = 0.0
        return {"weights": weights}
    if decision.weights is not None:  # the engine's step, decided on this very epoch (other candidates kept)
        return {"weights": dict(decision.weights)}
    step = next_step(spec, flag, decision.variant)
    return None if step is None else {"weights": step}


async def apply_decision(store: RolloutStore, dialplan: str, spec: RolloutSpec, decision: Decision) -> bool:
    """Take a decision once, however many workers (and nodes) reach it: True for the one call that takes it.

    A rollback or an ``auto_promote`` step changes the flag, audited with the evidence, in ``update_flag``'s
    transaction: a compare-and-set on the epoch (the flag's, read under ``WATCH``, against the decision's), so of the
    workers that race on it one changes the flag and the others, finding it moved off that epoch, write nothing and
    get False. A promotion without ``auto_promote``, or one still on its epoch with no step left, is audited alone,
    once per epoch (``HSETNX`` on ``keys.rollout_decided``); so is any other decision (``srm``, ``complete``)."""
    evidence = {"action": decision.action, **decision.evidence}
    if decision.action == "rollback" or (decision.action == "promote" and spec.experiment.auto_promote):
        change = await store.update_flag(
            dialplan,
            lambda old: decision_changes(spec, decision, old),
            AUTO_DECISION_WHO,
            decision.reason,
            evidence=evidence,
        )
        if change.changed:
            return True
        if decision.action == "rollback" or left_epoch(decision, change.old):
            return False  # taken already, or a person changed the flag since: it is off the epoch decided on
    field_name = f"{decision.evidence.get('epoch')}:{decision.variant}:{decision.action}"
    try:
        first = await store.client.hsetnx(keys.rollout_decided(dialplan), field_name, decision.action)
        if not first:
            return False
        await store.client.expire(keys.rollout_decided(dialplan), keys.RECORDS_TTL_S)
        entry = {
            "dialplan": dialplan,
            "who": AUTO_DECISION_WHO,
            "reason": redact(decision.reason),
            "when": datetime.fromtimestamp(decision.t, UTC).isoformat(timespec="milliseconds"),
            "old": "{}",
            "new": "{}",
            "evidence": json.dumps(evidence, default=str),
        }
        await store.client.xadd(keys.ROLLOUT_AUDIT, entry, maxlen=keys.AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]  # a dict of str is a valid mapping of fields
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(store.where, str(exc) or type(exc).__name__) from None
    return True
