"""A supervisor's actions on a live call: ``POST /api/calls/{id}/hangup``, ``/whisper``, ``/transfer``, and their audit
(``GET /api/actions/audit``).

Each wants the ``supervisor`` role (or ``admin``); a viewer gets 403. The call must be live (404 unknown, 409 ended).

* ``hangup``: no body. The agent says one short goodbye, then the bridge sends BYE.
* ``whisper``: ``{"text"}`` (1 to :data:`WHISPER_MAX_CHARS` characters): an instruction to the agent for the rest of
  the call, never read out.
* ``transfer``: ``{"target"}`` (optional: the plan's ``transfer_target``): one of the plan's ``transfer_target`` and
  ``transfer_targets``; any other is refused (400, naming the allowed ones).
* ``takeover``: no body. The model is muted and the caller hears the supervisor's audio, sent on the take-over
  socket (``bridge.supervisor.takeover``). Without audio for ``bridge.serve.takeover.IDLE_S`` the call goes back
  to the model by itself.
* ``handback``: no body. The model hears the caller again and resumes.

Every request that passed the checks is audited first (:data:`~bridge.store.keys.CALL_ACTIONS_AUDIT`: who, the call, the
action, its text or target, the request's id) and logged; an audit that cannot be written stops the action (503, nothing
sent). Then the action goes to the worker holding the call (``bridge.serve.actions``), signed with the node's listen key
(:mod:`bridge.supervisor.listen_token`; 503 without one): the worker obeys nothing unsigned. The answer is 202
``{"call_id", "action", "worker"}`` once that worker took it (an ``outcome`` entry naming it follows the request's in
the audit, :mod:`.action_audit` folds the two), or 504 if no worker answered within :data:`ACK_WAIT_S`. Each takes an
``Idempotency-Key`` header: a retry with it within a day gets the first answer, and the action is taken once
(:mod:`.idempotency`). ``GET /api/actions/audit`` answers the newest :data:`AUDIT_SHOWN` entries, newest first, filtered
by ``?who=`` (part of the account's name), ``&call=`` (a call id) and ``&action=`` (one of :data:`AUDITED`; anything
else is a 400 naming the field) (:mod:`.action_audit`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from typing import Any, Final

from aiohttp import web
from redis import asyncio as aioredis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from bridge import events as ev
from bridge.call.state import Phase
from bridge.dialplan import Dialplan
from bridge.store import keys
from bridge.store.channels import publish
from bridge.store.connection import StoreUnavailable
from bridge.store.read import read_call
from bridge.store.times import stamped
from bridge.supervisor.action_audit import OUTCOME, SHOWN, TAKEOVER_AUDIO, AuditFilter, read_audit
from bridge.supervisor.http import json_body, need, reply, supervisor_of
from bridge.supervisor.idempotency import PARAM as IDEMPOTENCY_KEY
from bridge.supervisor.idempotency import idempotent
from bridge.supervisor.listen_token import ACTION, sign
from bridge.supervisor.routes import Param, Route, add
from bridge.supervisor.targets import allowed_targets

log = logging.getLogger("bridge.supervisor")

WHISPER_MAX_CHARS = 500
ACK_WAIT_S = 3.0
ACK_POLL_S = 0.05
AUDIT_SHOWN = SHOWN
AUDITED = (*(kind.value for kind in ev.SupervisorKind), TAKEOVER_AUDIO)  # the actions the audit names


BODIES: Final = {ev.SupervisorKind.WHISPER: "Whisper", ev.SupervisorKind.TRANSFER: "Transfer"}
AUDIT_QUERY: Final = (
    Param("who", {"type": "string"}, "a part of the account's name, any case"),
    Param("call", {"type": "string"}, "a call id"),
    Param("action", {"type": "string", "enum": list(AUDITED)}, "one action"),
)


def add_routes(app: web.Application) -> None:
    for kind in ev.SupervisorKind:
        path = f"/api/calls/{{call_id}}/{kind.value}"
        add(
            app,
            Route(
                "POST",
                path,
                idempotent(_handler(kind)),
                f"a supervisor's {kind.value} on the call",
                needs="act",
                answers={202: "ActionTaken", 400: None, 404: None, 409: None, 422: None, 504: None},
                body=BODIES.get(kind),
                headers=(IDEMPOTENCY_KEY,),
            ),
        )
    add(
        app,
        Route(
            "GET",
            "/api/actions/audit",
            actions_audit,
            "the latest call actions, newest first",
            answers={200: "ActionAudit", 400: None},
            query=AUDIT_QUERY,
        ),
    )


def _details(kind: ev.SupervisorKind, body: dict[str, Any], plan: Dialplan | None) -> dict[str, str] | web.Response:
    """The action's text or target, checked; or the 400 that says what is wrong."""
    if kind is ev.SupervisorKind.WHISPER:
        text = body.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > WHISPER_MAX_CHARS:
            return reply({"error": f"text: 1 to {WHISPER_MAX_CHARS} characters", "field": "text"}, 400)
        return {"text": "".join(c for c in text.strip() if c.isprintable())}
    if kind is ev.SupervisorKind.TRANSFER:
        allowed = allowed_targets(plan)
        target = body.get("target") or (plan.transfer_target if plan is not None else None)
        if not allowed:
            return reply({"error": "target: this call's dialplan has no transfer target", "field": "target"}, 400)
        if target not in allowed:
            return reply({"error": f"target: not allowed here (allowed: {', '.join(allowed)})", "field": "target"}, 400)
        return {"target": str(target)}
    return {}


def _handler(kind: ev.SupervisorKind) -> Any:
    async def act(request: web.Request) -> web.Response:
        principal = need(request, "act")
        sup = supervisor_of(request)
        redis = sup.need_redis()
        call_id = request.match_info["call_id"]
        body = await json_body(request) if request.body_exists else {}  # (read already: the body deadline, .gate)
        detail = await read_call(redis, call_id, count=1)
        if detail is None:
            return reply({"error": "no such call"}, 404)
        if detail.state.get("phase") == Phase.ENDED:
            return reply({"error": "the call has ended"}, 409)
        details = _details(kind, body, sup.dialplans.get(detail.state.get("dialplan", "")))
        if isinstance(details, web.Response):
            return details
        if sup.listen_key is None:
            return reply({"error": "actions need the node's listen key (not configured)"}, 503)
        request_id = secrets.token_hex(12)
        if not await audit(redis, kind.value, principal.who, call_id, request=request_id, **details):
            return reply({"error": "the action could not be audited: nothing was done"}, 503)
        fields = {"id": request_id, "action": kind.value, **details}
        signed = sign(sup.listen_key, call_id, principal.who, purpose=ACTION, fields=fields)
        worker = await _send(redis, request_id, signed)
        log.info("console: %s: %s on call %s (%s)", principal.who, kind.value, call_id, worker or "no worker took it")
        if worker is not None:
            await audit(redis, kind.value, principal.who, call_id, request=request_id, event=OUTCOME, worker=worker)
        if worker is None:
            return reply({"error": "no worker took the action (is the call still up?)"}, 504)
        return reply({"call_id": call_id, "action": kind.value, "worker": worker}, 202)

    return act


async def _send(redis: aioredis.Redis, request_id: str, message: str) -> str | None:
    """Publish the signed request and wait for the worker holding the call to answer; its id, or None."""
    ack = keys.call_action_ack(request_id)
    try:
        if not await publish(redis, keys.CALL_ACTIONS, message):
            return None  # no worker subscribed at all
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ACK_WAIT_S
        while loop.time() < deadline:
            answer = await redis.lpop(ack)
            if isinstance(answer, str | bytes) and answer:
                return str(json.loads(answer).get("worker", "?"))
            await asyncio.sleep(ACK_POLL_S)
    except (RedisError, OSError) as exc:
        raise StoreUnavailable("call actions", str(exc)) from exc
    return None


async def audit(redis: aioredis.Redis, action: str, who: str, call_id: str, **fields: str) -> bool:
    """Write one audit entry; False (and an error logged) if it could not be written."""
    entry: dict[FieldT, EncodableT] = {"action": action, "who": who, "call_id": call_id, "at": f"{time.time():.3f}"}
    entry.update(fields)
    try:
        await redis.xadd(keys.CALL_ACTIONS_AUDIT, entry, maxlen=keys.AUDIT_MAXLEN, approximate=True)
    except (RedisError, OSError) as exc:
        log.error("audit of %s on call %s by %s could not be written: %s", action, call_id, who, exc)
        return False
    return True


async def actions_audit(request: web.Request) -> web.Response:
    redis = supervisor_of(request).need_redis()
    action = request.query.get("action", "")
    if action and action not in AUDITED:
        return reply({"error": f"action: one of {', '.join(AUDITED)}", "field": "action"}, 400)
    wanted = AuditFilter(request.query.get("who", "").strip(), request.query.get("call", "").strip(), action)
    entries, capped = await read_audit(redis, wanted, shown=AUDIT_SHOWN)
    return reply({"audit": stamped(entries), "capped": capped, "actions": list(AUDITED)})
