"""The rollout's routes: each rollout dialplan's variants and flag, the console's panel, an admin's change, and a
supervisor's kill switch.

``GET /api/rollout``, ``GET /api/console/rollout``, ``POST /api/rollout/{dp}/preview``, ``PUT /api/rollout/{dp}``
(the fields of a change and the shape of a refusal: :mod:`.api`). Under ``rollout.require_gate`` a change that
arms a candidate without a green replay report of it is a 400 naming the variant and its digest, unless the body
gives ``override_gate`` (the reason, kept in the audit entry; :mod:`bridge.rollout.arming`). The panel and the
change's validation: :mod:`.rollout_view`.

``PUT /api/rollout/{dp}/kill`` ``{"kill": true|false, "reason"}`` turns the kill switch on or off and nothing else. A
supervisor may (:data:`KILL_NEEDS`): it only ever sends calls to the safe variant, or back to the split an admin set,
so the person watching the calls need not wait for an admin to stop a bad variant. Weights, lists and every other
setting stay the admin's (``PUT /api/rollout/{dp}``, whatever the body). Audited like any change, with the account.

Whoever turns the switch on holds it, and only they or a role at least as high turn it off (:mod:`.kill_switch`): a
supervisor turning off an admin's answers 403 ``{"error", "held_by": {"by", "role", "at"}, "needs"}``, on either
route. The panel says who holds each switch (``kill_holder``) and, for the account asking, why it may not turn it off
(``lift_refused``; null: it may, or the switch is off).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from bridge.dialplan import RolloutPlans
from bridge.errors import ConfigError
from bridge.rollout import arming, attest, catalog, refusals
from bridge.rollout.policy import describe_variants
from bridge.rollout.store import FlagChange, RolloutStore
from bridge.store.times import stamped
from bridge.supervisor import rollout_view
from bridge.supervisor.accounts import NEEDS
from bridge.supervisor.auth import Principal
from bridge.supervisor.http import json_body, need, principal_of, reply, supervisor_of
from bridge.supervisor.kill_switch import Holder, KillHeld, flag_json, kill_changes, lift_refusal, now_text
from bridge.supervisor.routes import Route, add

ROLLOUT_FIELDS = frozenset({"weights", "kill", "allow", "deny", "sticky"})
KILL_FIELDS = frozenset({"kill", "reason"})
KILL_NEEDS = "act"  # a key of accounts.NEEDS: the role that acts on calls (supervisor) also holds the kill switch
AUDIT_SHOWN = 20


def add_routes(app: web.Application) -> None:
    changed = {200: "RolloutChanged", 400: None, 403: None, 404: None}
    add(
        app,
        Route(
            "GET",
            "/api/rollout",
            get_rollout,
            "every rollout dialplan's variants, flags and recent audit",
            answers={200: "Rollouts"},
        ),
        Route(
            "GET",
            "/api/console/rollout",
            get_rollout_panel,
            "the console's rollout panel",
            answers={200: "RolloutPanel"},
        ),
        Route(
            "POST",
            "/api/rollout/{dialplan}/preview",
            preview_rollout,
            "what a change would do, unsaved",
            needs="rollout",
            answers={200: "RolloutPreview", 400: None, 404: None},
            body="RolloutSettings",
        ),
        Route(
            "PUT",
            "/api/rollout/{dialplan}",
            put_rollout,
            "change a rollout flag",
            needs="rollout",
            answers=changed,
            body="RolloutChange",
        ),
        Route(
            "PUT",
            "/api/rollout/{dialplan}/kill",
            put_kill,
            "the kill switch alone",
            needs=KILL_NEEDS,
            answers=changed,
            body="KillChange",
            refused=_kill_refused,
        ),
    )


async def get_rollout(request: web.Request) -> web.Response:
    sup = supervisor_of(request)
    store = sup.need_rollouts()
    flags = await store.flags()
    today = dt.datetime.now(dt.UTC).date()
    rollouts = {}
    for name, (spec, voice) in sup.plans.items():
        flag = flags.get(name) or store.default_for(name)
        rollouts[name] = {
            "stored": name in flags,
            "safe": spec.safe,
            "variants": describe_variants(
                spec, flag, voice, catalog.shutdown_dates(), today, await refusals.refused(store, name)
            ),
        }
    audit = await store.audit(count=AUDIT_SHOWN)
    return reply(
        stamped(
            {
                "flags": {name: flag_json(flag) for name, flag in flags.items()},
                "rollouts": rollouts,
                "audit": [a.to_json() for a in audit],
            }
        )
    )


async def get_rollout_panel(request: web.Request) -> web.Response:
    sup = supervisor_of(request)
    body = await rollout_view.panel(sup.need_rollouts(), sup.plans)
    principal = principal_of(request)
    body["can_change"] = principal.can_change
    body["can_kill"] = principal.may(KILL_NEEDS)
    for card in body["dialplans"]:
        held = card["kill_holder"]
        lift = held is not None and body["can_kill"]
        card["lift_refused"] = lift_refusal(Holder(**held), str(principal.who), principal.role) if lift else None
        plan = sup.dialplans.get(card["dialplan"])
        digests = attest.plan_digests(plan) if plan is not None else {}
        card["gate"] = await arming.shown(sup.need_rollouts(), card["dialplan"], digests)  # the replay gate
    return reply(stamped(body))


def _refused(exc: ConfigError) -> web.Response:
    """400 naming the field; 404 for a dialplan that is no rollout's (the path names no resource here)."""
    status = 404 if exc.field == "dialplan" else 400
    return reply({"error": f"{exc.field}: {exc.message}", "field": exc.field}, status)


def _rollout_of(dialplan: str, plans: RolloutPlans) -> None:
    if dialplan not in plans:
        known = ", ".join(sorted(plans)) or "none"
        message = f"not a rollout dialplan here (rollout dialplans: {known})"
        raise ConfigError(f"rollout {dialplan}", "dialplan", message)


async def preview_rollout(request: web.Request) -> web.Response:
    need(request, "rollout")
    sup = supervisor_of(request)
    store = sup.need_rollouts()
    body = await json_body(request)
    dialplan = request.match_info["dialplan"]
    try:
        _rollout_of(dialplan, sup.plans)
        old = await store.stored_flag(dialplan) or store.default_for(dialplan)
        return reply(rollout_view.preview(dialplan, store.spec_for(dialplan), old, body))
    except ConfigError as exc:
        return _refused(exc)


async def put_rollout(request: web.Request) -> web.Response:
    principal = need(request, "rollout")
    sup = supervisor_of(request)
    store = sup.need_rollouts()
    body = await json_body(request)
    dialplan = request.match_info["dialplan"]
    reason = body.pop("reason", None)
    override = body.pop("override_gate", None)  # under rollout.require_gate: arm a candidate no report attests
    body.pop("who", None)  # the audit names the account, never the body's "who"
    unknown = sorted(set(body) - ROLLOUT_FIELDS)
    try:
        _rollout_of(dialplan, sup.plans)
        if unknown:
            known = ", ".join(sorted(ROLLOUT_FIELDS | {"reason", "who", "override_gate"}))
            raise ConfigError(f"rollout {dialplan}", unknown[0], f"unknown field (known: {known})")
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError(f"rollout {dialplan}", "reason", "required: why this change is made")
        if override is not None and not isinstance(override, str):
            raise ConfigError(f"rollout {dialplan}", "override_gate", "the reason, as text")
        changes = rollout_view.normalize_changes(body, f"rollout {dialplan}")
        digests = attest.plan_digests(sup.dialplans[dialplan]) if dialplan in sup.dialplans else {}
        who, at = str(principal.who), now_text()
        change = await arming.update_flag(
            store,
            dialplan,
            lambda old: kill_changes(dialplan, old, changes, who, principal.role, at),
            who,
            reason,
            digests=digests,
            override=override,
        )
    except ConfigError as exc:
        return _refused(exc)
    except KillHeld as held:
        return reply(held.to_json(), 403)
    return reply({"dialplan": change.dialplan, "changed": change.changed, "flag": flag_json(change.new)})


async def _change(
    store: RolloutStore, dialplan: str, changes: Mapping[str, Any], principal: Principal, reason: str
) -> FlagChange:
    """``changes`` made by ``principal``, audited with ``reason``; the kill switch's holder checked and written in
    the store's transaction (:func:`.kill_switch.kill_changes`: KillHeld)."""
    who, at = str(principal.who), now_text()
    return await store.update_flag(
        dialplan, lambda old: kill_changes(dialplan, old, changes, who, principal.role, at), who, reason
    )


def _kill_refused(principal: Principal, need: str) -> web.Response:
    """The 403 of a role that may not hold the kill switch, naming the role it needs."""
    return reply({"error": f"forbidden: the kill switch needs the {NEEDS[need]} role ({principal.role} here)"}, 403)


def _may_kill(request: web.Request) -> Principal:
    """The request's principal, if its role holds the kill switch; else a 403 naming the role it needs."""
    principal = principal_of(request)
    if not principal.may(KILL_NEEDS):
        raise web.HTTPForbidden(text=_kill_refused(principal, KILL_NEEDS).text, content_type="application/json")
    return principal


async def put_kill(request: web.Request) -> web.Response:
    principal = _may_kill(request)
    sup = supervisor_of(request)
    store = sup.need_rollouts()
    body = await json_body(request)
    dialplan = request.match_info["dialplan"]
    source = f"rollout {dialplan}"
    try:
        _rollout_of(dialplan, sup.plans)
        unknown = sorted(set(body) - KILL_FIELDS)
        if unknown:  # a weight riding along would pass a change only an admin may make
            raise ConfigError(source, unknown[0], "not the kill switch's (only kill and reason; other changes: admin)")
        kill, reason = body.get("kill"), body.get("reason")
        if not isinstance(kill, bool):
            raise ConfigError(source, "kill", "must be true or false")
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError(source, "reason", "required: why the kill switch is turned")
        change = await _change(store, dialplan, {"kill": kill}, principal, reason)
    except ConfigError as exc:
        return _refused(exc)
    except KillHeld as held:
        return reply(held.to_json(), 403)
    return reply({"dialplan": change.dialplan, "changed": change.changed, "flag": flag_json(change.new)})
