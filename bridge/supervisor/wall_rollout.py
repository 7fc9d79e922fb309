"""The rollout on the wallboard: one row per variant of each rollout dialplan, from what the flag applies now (never
from what the engine computed and the flag refused), the live calls and the calls that ended in the last hour.

===========  ========================================================================================================
calls_now    the variant's live calls
handled      its calls answered and ended in the last hour (as the Handled tile counts them)
abandoned    its callers of the last hour who hung up before the answer
fallback     its live calls running on its fallback model (its own model failed to connect): recovered, not trouble
trouble      its live calls in trouble now (as the In trouble tile counts them)
share        its share of new calls under the flag, in percent
verdict      one word from the flag: ``safe``; ``held`` (the kill switch sends every call to the safe variant);
             ``rolled back`` (weight 0, the last change of its weight an automatic rollback: the window's rule
             or the guarded rollout's); ``off`` (weight 0 otherwise); ``promoted`` (every call); ``testing``
             (any share between)
===========  ========================================================================================================

``kill``: the kill switch, ``None`` while off, else ``{"by", "role", "at", "reason"}``: its holder as the flag names
them and the reason of the audit entry that turned it on. :func:`rows` is pure; :func:`read` reads the flags and the
audit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bridge.dialplan import RolloutPlans
from bridge.events import CallOutcome
from bridge.rollout.policy import RolloutFlag, RolloutSpec, shares
from bridge.rollout.store import AUTO_ROLLBACK_WHO, AuditEntry, RolloutStore
from bridge.supervisor.board import NOT_ANSWERED, in_trouble
from bridge.supervisor.kill_switch import holder_of

AUDIT_LOOKED_AT = 200  # the most recent audit entries the kill switch's reason and a rollback are looked for in


def verdict(name: str, spec: RolloutSpec, flag: RolloutFlag, share: float, audit: Sequence[AuditEntry]) -> str:
    """The variant's word under ``flag`` (``audit``: the plan's entries, newest first)."""
    if name == spec.safe:
        return "safe"
    if flag.kill:
        return "held"
    if share <= 0:
        last = next((a for a in audit if name in (a.new.get("weights") or {})), None)
        automatic = last is not None and (last.who == AUTO_ROLLBACK_WHO or last.evidence.get("action") == "rollback")
        return "rolled back" if automatic else "off"
    return "promoted" if share >= 100 else "testing"


def kill_of(flag: RolloutFlag, audit: Sequence[AuditEntry]) -> dict[str, str] | None:
    holder = holder_of(flag)
    if holder is None:
        return None
    turned_on = next((a for a in audit if a.new.get("kill") is True), None)
    return {**holder.to_json(), "reason": turned_on.reason if turned_on else ""}


def rows(
    dialplan: str,
    spec: RolloutSpec,
    flag: RolloutFlag,
    live: Iterable[Mapping[str, Any]],
    ended: Iterable[Mapping[str, Any]],
    audit: Sequence[AuditEntry],
) -> dict[str, Any]:
    """One dialplan's rollout as the wall shows it (``audit``: the plan's entries, newest first)."""
    now = [r for r in live if r.get("dialplan") == dialplan]
    done = [c for c in ended if c.get("dialplan") == dialplan]
    split = shares(spec, flag)
    variants = []
    for name in spec.names:
        mine = [r for r in now if r.get("variant") == name]
        calls = [c for c in done if c.get("variant") == name]
        variants.append(
            {
                "variant": name,
                "share": split[name],
                "calls_now": len(mine),
                "handled": sum(c.get("outcome") not in NOT_ANSWERED for c in calls),
                "abandoned": sum(c.get("outcome") == CallOutcome.ABANDONED for c in calls),
                "fallback": sum(bool(r.get("fallback")) for r in mine),
                "trouble": sum(in_trouble(r) for r in mine),
                "verdict": verdict(name, spec, flag, split[name], audit),
            }
        )
    return {"dialplan": dialplan, "safe": spec.safe, "kill": kill_of(flag, audit), "variants": variants}


async def read(
    store: RolloutStore,
    plans: RolloutPlans,
    live: Sequence[Mapping[str, Any]],
    ended: Sequence[Mapping[str, Any]],
    plan: str = "",
) -> list[dict[str, Any]]:
    """Each rollout dialplan's rows (only ``plan``'s when one is named). Raises StoreUnavailable when Redis is away."""
    names = [n for n in sorted(plans) if not plan or n == plan]
    if not names:
        return []
    flags = await store.flags()
    audit = await store.audit(count=AUDIT_LOOKED_AT)
    out = []
    for name in names:
        spec = plans[name][0]
        mine = [a for a in audit if a.dialplan == name]
        out.append(rows(name, spec, flags.get(name) or spec.default_flag(), live, ended, mine))
    return out
