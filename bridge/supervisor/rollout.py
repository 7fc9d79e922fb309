"""The rollout's routes: each rollout dialplan's variants and flag, the console's panel, and an admin's change.

``GET /api/rollout``, ``GET /api/console/rollout``, ``POST /api/rollout/{dp}/preview``, ``PUT /api/rollout/{dp}``
(the fields of a change and the shape of a refusal: :mod:`.api`). The panel and the change's validation:
:mod:`.rollout_view`.
"""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from bridge.dialplan import RolloutPlans
from bridge.errors import ConfigError
from bridge.rollout import catalog, refusals
from bridge.rollout.policy import describe_variants
from bridge.supervisor import rollout_view
from bridge.supervisor.http import json_body, need, principal_of, reply, supervisor_of

ROLLOUT_FIELDS = frozenset({"weights", "kill", "allow", "deny", "sticky"})
AUDIT_SHOWN = 20


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/rollout", get_rollout)
    app.router.add_get("/api/console/rollout", get_rollout_panel)
    app.router.add_post("/api/rollout/{dialplan}/preview", preview_rollout)
    app.router.add_put("/api/rollout/{dialplan}", put_rollout)


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
        {
            "flags": {name: flag.model_dump(mode="json") for name, flag in flags.items()},
            "rollouts": rollouts,
            "audit": [a.to_json() for a in audit],
        }
    )


async def get_rollout_panel(request: web.Request) -> web.Response:
    sup = supervisor_of(request)
    body = await rollout_view.panel(sup.need_rollouts(), sup.plans)
    body["can_change"] = principal_of(request).can_change
    return reply(body)


def _refused(exc: ConfigError) -> web.Response:
    return reply({"error": f"{exc.field}: {exc.message}", "field": exc.field}, 400)


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
    reason, who = body.pop("reason", None), principal.who  # the audit names the account, never the body's "who"
    body.pop("who", None)
    unknown = sorted(set(body) - ROLLOUT_FIELDS)
    try:
        _rollout_of(dialplan, sup.plans)
        if unknown:
            known = ", ".join(sorted(ROLLOUT_FIELDS | {"reason", "who"}))
            raise ConfigError(f"rollout {dialplan}", unknown[0], f"unknown field (known: {known})")
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError(f"rollout {dialplan}", "reason", "required: why this change is made")
        changes = rollout_view.normalize_changes(body, f"rollout {dialplan}")
        change = await store.set_flag(dialplan, changes, str(who), reason)
    except ConfigError as exc:
        return _refused(exc)
    return reply({"dialplan": change.dialplan, "changed": change.changed, "flag": change.new.model_dump(mode="json")})
