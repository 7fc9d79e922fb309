"""The gate before the rollout, against Redis: green replay reports registered for a plan, and every change that
arms a candidate checked against them (the rules: :mod:`bridge.rollout.attest`).

* :func:`register` (``callbridge rollout attest PLAN --report DIR/report.json``): a green report whose runs have a
  candidate's configuration digest is kept for the plan (``keys.rollout_attested``: one signed attestation per
  digest), with an entry in the audit stream (no flag: it changes no call).
* :func:`update_flag`: :meth:`bridge.rollout.store.RolloutStore.update_flag` for every writer that can raise a
  candidate's weight from 0 (``rollout set``, ``rollout rearm``, ``PUT /api/rollout/{dp}``, ``rollout import``).
  Under ``rollout.require_gate`` each candidate armed needs a valid attestation of its digest, or ``override`` (the
  operator's reason); otherwise :class:`GateRefused` names the plan, the variant and the digest missing, and nothing
  is written. What let each candidate through (the attestation's report, or the override and its reason) goes into
  the flag change's audit entry (``evidence.gate``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from bridge.errors import ConfigError, redact
from bridge.rollout import attest, seal
from bridge.rollout.policy import RolloutFlag
from bridge.rollout.store import FlagChange, RolloutStore
from bridge.store import keys
from bridge.store.connection import StoreUnavailable

log = logging.getLogger("bridge.rollout")
SHOWN = ("report", "who", "when", "created", "target")  # what the audit and the console name of an attestation


class GateRefused(ConfigError):
    """A candidate armed without a green replay report of its configuration (and no override)."""


async def attested(store: RolloutStore, dialplan: str) -> dict[str, str]:
    """The plan's stored attestations: digest -> the text Redis holds (unchecked). Raises StoreUnavailable."""
    try:
        raw = await store.client.hgetall(keys.rollout_attested(dialplan))
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(store.where, str(exc) or type(exc).__name__) from None
    text = {k.decode() if isinstance(k, bytes) else str(k): v for k, v in raw.items()}
    return {k: v.decode(errors="replace") if isinstance(v, bytes) else str(v) for k, v in text.items()}


async def valid(store: RolloutStore, dialplan: str, digests: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Each variant of ``digests`` that a valid attestation vouches for -> what it names (:data:`SHOWN`)."""
    held = await attested(store, dialplan)
    out = {}
    for variant, digest in digests.items():
        if digest in held:
            fields, why = attest.attestation_refusal(store.rollout_keys, dialplan, digest, held[digest])
            if why is None:
                out[variant] = {"digest": digest, **{k: fields.get(k) for k in SHOWN}}
    return out


async def shown(store: RolloutStore, dialplan: str, digests: Mapping[str, str]) -> dict[str, Any]:
    """The plan's replay gate as ``rollout show`` and the console's card show it: whether it is required, and each
    candidate's digest with what the valid attestation of it names (None: none)."""
    spec = store.spec_for(dialplan)
    candidates = {n: d for n, d in digests.items() if n != spec.safe}
    found = await valid(store, dialplan, candidates)
    return {
        "required": spec.require_gate,
        "variants": {n: {"digest": d, "attested": found.get(n)} for n, d in candidates.items()},
    }


def gate_text(gate: Mapping[str, Any]) -> str:
    """:func:`shown` as one line of ``rollout show``."""
    each = [
        f"{n} #{v['digest']}: " + (f"green report {a['report']} ({a['who']}, {a['when']})" if a else "no green report")
        for n, v in gate["variants"].items()
        for a in [v["attested"]]
    ]
    return "; ".join(["required" if gate["required"] else "off (rollout.require_gate)", *each])


async def register(
    store: RolloutStore,
    dialplan: str,
    report: Any,
    source: str,
    digests: Mapping[str, str],
    who: str,
    variant: str | None = None,
) -> list[dict[str, Any]]:
    """Keep the green ``report`` (read from ``source``) for each candidate of ``dialplan`` (or ``variant``) whose
    digest (``digests``) one of its runs has. Returns the attestations written. Raises ConfigError (red, no such
    run: nothing written) or StoreUnavailable."""
    spec = store.spec_for(dialplan)
    why = attest.report_refusal(report)
    if why is not None:
        raise ConfigError(source, "meta.gate", f"{why}: only a green report attests a configuration")
    candidates = [n for n in spec.names if n != spec.safe] if variant is None else [variant]
    if variant is not None and (variant not in spec.names or variant == spec.safe):
        raise ConfigError(f"rollout {dialplan}", "--variant", f"not a candidate (candidates: {', '.join(candidates)})")
    ran = attest.report_digests(report)
    covered = [(n, digests[n]) for n in candidates if digests.get(n) in ran]
    if not covered:
        wanted = ", ".join(f"{n} #{digests.get(n, '?')}" for n in candidates)
        message = f"no run of the report has the configuration of {wanted} (its runs: #{', #'.join(ran) or 'none'})"
        raise ConfigError(source, "scripts", message)
    when = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    about = {"who": redact(who), "os_user": seal.os_user(), "when": when, "report": redact(source)}
    written = [
        attest.sign(store.rollout_keys, attest.attestation(dialplan, name, digest, report, **about))
        for name, digest in covered
    ]
    entries = [
        {
            "dialplan": dialplan,
            "who": about["who"],
            "when": when,
            "reason": f"attested {a['variant']} #{a['digest']}: a green replay report, {about['report']}",
            "old": "{}",
            "new": "{}",
            "evidence": json.dumps({"attested": {k: a.get(k) for k in ("variant", "digest", *SHOWN, "runs")}}),
            seal.OS_USER_FIELD: about["os_user"],
        }
        for a in written
    ]
    try:
        async with store.client.pipeline(transaction=True) as pipe:
            for a, entry in zip(written, entries, strict=True):
                pipe.hset(keys.rollout_attested(dialplan), a["digest"], json.dumps(a, sort_keys=True))
                pipe.xadd(keys.ROLLOUT_AUDIT, entry, maxlen=keys.AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]  # a dict of str is a valid mapping of fields
            await pipe.execute()
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(store.where, str(exc) or type(exc).__name__) from None
    return written


async def update_flag(
    store: RolloutStore,
    dialplan: str,
    compute: Callable[[RolloutFlag], Mapping[str, Any] | None],
    who: str,
    reason: str,
    *,
    digests: Mapping[str, str],
    override: str | None = None,
) -> FlagChange:
    """``store.update_flag`` with the gate (see the module): raises GateRefused before writing anything."""
    spec = store.spec_for(dialplan)
    if not spec.require_gate:
        return await store.update_flag(dialplan, compute, who, reason)
    held = await attested(store, dialplan)
    excuse = _excuse(override)
    evidence: dict[str, Any] = {}

    def gated(old: RolloutFlag) -> Mapping[str, Any] | None:
        changes = compute(old)
        evidence.clear()
        if not changes or "weights" not in changes:
            return changes
        gate = {
            variant: _let_through(store, dialplan, variant, digests.get(variant), held, excuse)
            for variant in attest.armed(spec, old.weights, dict(changes["weights"]))
        }
        if gate:
            evidence["gate"] = gate
        return changes

    change = await store.update_flag(dialplan, gated, who, reason, evidence=evidence)
    for variant, how in (evidence.get("gate") or {}).items():
        if change.changed and "override" in how:
            log.warning("rollout %s: %s armed without a green replay report (override: %s)", dialplan, variant, excuse)
    return change


async def require(
    store: RolloutStore, dialplan: str, variant: str, digests: Mapping[str, str], override: str | None
) -> None:
    """Raise GateRefused unless ``variant`` may be armed now (before what must precede the flag's change)."""
    if store.spec_for(dialplan).require_gate:
        held = await attested(store, dialplan)
        _let_through(store, dialplan, variant, digests.get(variant), held, _excuse(override))


async def require_restore(
    store: RolloutStore,
    flags: Mapping[str, RolloutFlag],
    digests: Mapping[str, Mapping[str, str]],
    override: str | None,
    replace: bool,
) -> None:
    """Raise GateRefused unless each of the backup's ``flags`` that a restore writes (none stored, or ``replace``)
    arms only candidates that may be armed (``digests``: per plan, its variants')."""
    for dialplan, flag in sorted(flags.items()):
        spec = store.spec_for(dialplan)
        stored = await store.stored_flag(dialplan)
        if not spec.require_gate or (stored is not None and not replace):
            continue
        for variant in attest.armed(spec, (stored or store.default_for(dialplan)).weights, flag.weights):
            await require(store, dialplan, variant, digests.get(dialplan, {}), override)


def _excuse(override: str | None) -> str | None:
    return redact(override.strip()) if override and override.strip() else None


def _let_through(
    store: RolloutStore, dialplan: str, variant: str, digest: str | None, held: Mapping[str, str], excuse: str | None
) -> dict[str, Any]:
    """What lets ``variant`` be armed (its attestation, or the override), for the audit; else GateRefused."""
    text = held.get(digest) if digest is not None else None
    fields, why = (
        ({}, None) if text is None else attest.attestation_refusal(store.rollout_keys, dialplan, str(digest), text)
    )
    if text is not None and why is None:
        return {"digest": digest, "attested": {k: fields.get(k) for k in SHOWN}}
    if excuse is not None:
        return {"digest": digest, "override": excuse, **({"refused": why} if why else {})}
    refusal = attest.gate_refusal(dialplan, variant, digest, text is not None, why)
    raise GateRefused(f"rollout {dialplan}", f"weights.{variant}", refusal)
