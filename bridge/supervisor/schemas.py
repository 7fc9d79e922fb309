"""JSON Schemas (2020-12, as OpenAPI 3.1 takes them) of the supervisor API's main bodies, by name.

The routes (:mod:`.routes`) name these per answer; :mod:`.openapi` puts them under ``components.schemas``. They say
what an integrator may rely on: the fields every answer has and their types. Objects stay open (a field added later
breaks no reader), and a call's state hash is a map of strings as Redis holds it.
"""

from __future__ import annotations

from typing import Any, Final

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None, about: str = "") -> Schema:
    schema: Schema = {"type": "object", "required": sorted(required), "properties": {**required, **(optional or {})}}
    if about:
        schema["description"] = about
    return schema


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


STR: Final[Schema] = {"type": "string"}
INT: Final[Schema] = {"type": "integer"}
BOOL: Final[Schema] = {"type": "boolean"}
NUM: Final[Schema] = {"type": "number"}
NUM_OR_NULL: Final[Schema] = {"type": ["number", "null"]}
TIME: Final[Schema] = {"type": ["string", "null"], "format": "date-time", "description": "ISO 8601, UTC; null: not yet"}
UNIX: Final[Schema] = {"type": ["number", "null"], "description": "the same time in Unix seconds"}
ANY_OBJECT: Final[Schema] = {"type": "object"}
STRINGS: Final[Schema] = {"type": "object", "additionalProperties": STR}

FLAG_MARK = obj({"flag": STR}, about="a mark the call raised (bridge/supervisor/flags.py)")
LIVE_CALL = obj(
    {
        "call_id": STR,
        "worker": STR,
        "worker_alive": BOOL,
        "phase": STR,
        "dialect": STR,
        "dialplan": STR,
        "caller": STR,
        "called": STR,
        "model": STR,
        "voice": STR,
        "started_at": TIME,
        "started_at_unix": UNIX,
        "duration_s": NUM_OR_NULL,
        "last_transcript": STR,
        "variant": STR,
        "on_hold": BOOL,
        "in_outage": BOOL,
        "transfer": STR,
        "original_called": STR,
        "fallback": BOOL,
    },
    about="a live call (callers' numbers masked for a viewer)",
)
EVENT = obj({"id": STR, "kind": STR, "summary": STR, "t": TIME, "t_unix": UNIX, "data": STRINGS})
CALL_STATE: Final[Schema] = {
    "type": "object",
    "additionalProperties": {"type": ["string", "number", "null"]},
    "description": "the call's state hash: strings as stored, but its moments (started_at, answered_at, ended_at, "
    "last_activity, transfer_at) ISO 8601 with `<name>_unix` beside each (null: unset)",
}
ENDED_CALL = obj(
    {
        "call_id": STR,
        "dialplan": STR,
        "variant": STR,
        "caller": STR,
        "called": STR,
        "sip_call_id": STR,
        "dialect": STR,
        "model": STR,
        "voice": STR,
        "started_at": TIME,
        "answered_at": TIME,
        "ended_at": TIME,
        "started_at_unix": UNIX,
        "ended_at_unix": UNIX,
        "duration_s": NUM_OR_NULL,
        "end_reason": STR,
        "ended_by": STR,
        "outcome": STR,
        "session_ids": array(STR),
        "last_transcript": STR,
        "disposition": STR,
        "summary": STR,
        "post_call_status": STR,
        "failed_checks": array(STR),
        "original_called": {"type": ["string", "null"]},
        "fallback": BOOL,
        "flags": array(FLAG_MARK),
        "severity": STR,
    },
    about="an ended call of the retention window",
)
AUDIT_ENTRY = obj({}, {"id": STR, "action": STR, "who": STR, "call_id": STR, "at": TIME, "at_unix": UNIX})
FLAG = obj(
    {"weights": ANY_OBJECT, "kill": BOOL, "kill_by": STR, "kill_role": STR, "kill_at": TIME, "kill_at_unix": UNIX},
    about="a rollout flag's settings; `kill_at`: when its kill switch's holder turned it on (null: off, or unknown)",
)
POINT = obj({"t": TIME, "t_unix": UNIX}, about="a moment of the rollout's evidence (the last call it counts)")
ESTIMATES: Final[Schema] = {
    "type": "object",
    "description": "per variant: its calls, its verdict (with the chart's marks) and each metric's trend points",
    "additionalProperties": {
        "type": "object",
        "properties": {"calls": INT, "verdict": {"type": "object", "properties": {"marks": array(POINT)}}},
        "additionalProperties": {"type": "object", "properties": {"trend": array(POINT)}},
    },
}
PANEL_PLAN = obj(
    {"dialplan": STR, "kill": BOOL, "kill_holder": {"anyOf": [{"type": "null"}, obj({"by": STR, "at": TIME})]}},
    {
        "experiment": obj(
            {},
            {
                "decisions": array(
                    {**POINT, "properties": {**POINT["properties"], "applied_at": TIME, "applied_at_unix": UNIX}}
                ),
                "estimates": ESTIMATES,
            },
        )
    },
)
REASON: Final[Schema] = {"type": "string", "pattern": "\\S", "description": "why: required, not blank"}
ACCOUNT_NAME: Final[Schema] = {"type": "string", "pattern": "^([a-z0-9][a-z0-9._-]{0,39})?$"}
ADDRESS: Final[Schema] = {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}, {"const": ""}]}
WEIGHTS: Final[Schema] = {"type": ["object", "string"]}


def closed(schema: Schema) -> Schema:
    """A request body: a field the server does not know is refused (400 naming it), as the document says."""
    return {**schema, "additionalProperties": False}


def events(about: str, names: dict[str, Schema]) -> Schema:
    """A ``text/event-stream`` answer: ``event: NAME`` lines, each ``data:`` one JSON value of the schema named."""
    listed = "; ".join(f"`{name}`" for name in names)
    return {
        "type": "string",
        "description": f"server-sent events (WHATWG HTML), each `event: NAME` with `data:` one line of JSON: {about} "
        f"Events: {listed}; the JSON of each is in `x-callbridge-events`.",
        "x-callbridge-events": names,
    }


LIVE_EVENTS = events(
    "the live-calls table as it changes.",
    {
        "snapshot": obj({"calls": array(ANY_OBJECT), "now": TIME, "now_unix": UNIX}),
        "upsert": obj({"call_id": STR}, about="a live call's row, as in LiveCalls"),
        "remove": obj({"call_id": STR}),
        "store": obj({"ok": BOOL}, {"error": STR}),
        "signed-out": ANY_OBJECT,
    },
)
CALL_EVENTS = events(
    "one call as it happens, until `done`.",
    {
        "call": CALL_STATE,
        "entries": array(EVENT),
        "entry": EVENT,
        "latency": ANY_OBJECT,
        "actions": array(AUDIT_ENTRY),
        "action": AUDIT_ENTRY,
        "marks": obj({"flags": array(FLAG_MARK), "severity": STR}),
        "done": ANY_OBJECT,
        "signed-out": ANY_OBJECT,
    },
)

SCHEMAS: Final[dict[str, Schema]] = {
    "Error": obj(
        {"error": STR},
        {"field": STR, "needs": STR, "held_by": ANY_OBJECT},
        about="every error under /api (and of the sign-in): what is wrong, and the field when one is",
    ),
    "LiveCalls": obj({"calls": array(LIVE_CALL)}),
    "CallDetail": obj(
        {
            "call": CALL_STATE,
            "events": array(EVENT),
            "tools": array(ANY_OBJECT),
            "flags": array(FLAG_MARK),
            "longest_wait_ms": NUM_OR_NULL,
            "longest_silence_ms": NUM_OR_NULL,
        },
        {"post_call": {"type": ["object", "null"]}, "checks": array(ANY_OBJECT)},
        about="one call: its state hash, recent events, business tool calls and marks",
    ),
    "EndedPage": obj(
        {"calls": array(ENDED_CALL), "page": INT, "pages": INT, "total": INT, "capped": BOOL},
        about="a page of ended calls, newest first (?page=)",
    ),
    "EndedSince": obj(
        {"calls": array(ENDED_CALL), "next": STR, "more": BOOL},
        about="ended calls oldest first from a time (?since=) or a cursor (?cursor=): `next` is the cursor that "
        "goes on after the last call given (also when none was: poll it for later calls); `more`: more are waiting",
    ),
    "EndedCalls": {"anyOf": [ref("EndedPage"), ref("EndedSince")]},
    "PlanStats": obj({"window_s": INT, "plans": array(ANY_OBJECT), "capped": BOOL}),
    "Wallboard": obj(
        {
            "plan": STR,
            "tiles": array(
                obj(
                    {"name": STR, "label": STR, "unit": STR, "red_when": STR, "explain": STR},
                    {"value": {"type": ["number", "null"]}, "threshold": {"type": ["number", "null"]}},
                )
            ),
            "capacity": INT,
            "window_s": INT,
            "refused_window_s": INT,
            "at": TIME,
            "at_unix": UNIX,
            "plans": array(STR),
            "capped": BOOL,
        }
    ),
    "ActionAudit": obj({"audit": array(AUDIT_ENTRY), "capped": BOOL, "actions": array(STR)}),
    "ListenAudit": obj({"audit": array(AUDIT_ENTRY)}),
    "ActionTaken": obj({"call_id": STR, "action": STR, "worker": STR}),
    "Rollouts": obj(
        {"flags": {"type": "object", "additionalProperties": FLAG}, "rollouts": ANY_OBJECT, "audit": array(ANY_OBJECT)}
    ),
    "RolloutPanel": obj({"can_change": BOOL, "can_kill": BOOL, "dialplans": array(PANEL_PLAN)}),
    "RolloutChanged": obj({"dialplan": STR, "changed": BOOL, "flag": FLAG}),
    "RolloutPreview": ANY_OBJECT,
    "RolloutChange": closed(
        obj(
            {"reason": REASON},
            {
                "weights": WEIGHTS,
                "kill": BOOL,
                "allow": ANY_OBJECT,
                "deny": ANY_OBJECT,
                "sticky": STR,
                "who": {},
                "override_gate": REASON,
            },
            about="a change of the flag; `who` is ignored (the audit names the account); `override_gate`: the reason "
            "a candidate is armed without a green replay report (rollout.require_gate)",
        )
    ),
    "RolloutSettings": closed(
        obj(
            {},
            {"weights": WEIGHTS, "kill": BOOL, "allow": ANY_OBJECT, "deny": ANY_OBJECT},
            about="the settings a preview weighs (no reason: nothing is saved)",
        )
    ),
    "KillChange": closed(obj({"kill": BOOL, "reason": REASON})),
    "Whisper": obj({"text": {"type": "string", "minLength": 1, "maxLength": 500, "pattern": "\\S"}}),
    "Transfer": obj({}, {"target": STR}),
    "Unlock": {
        **obj({}, {"account": ACCOUNT_NAME, "source": ADDRESS}, about="an account's name and/or an address"),
        "anyOf": [
            {"required": ["account"], "properties": {"account": {"minLength": 1}}},
            {"required": ["source"], "properties": {"source": {"minLength": 1}}},
        ],
    },
    "Unlocked": obj({"unlocked": STR}),
    "Ready": obj({"ready": BOOL}, {"problems": array(STR), "workers": array(ANY_OBJECT)}),
    "Alive": obj({"alive": BOOL}),
    "SignIn": obj({"name": STR, "password": STR}, about="an account's name and password"),
    "SignInDemo": obj({"token": STR}, {"name": STR}, about="a demo token, and the name to show"),
    "LiveCallsEvents": LIVE_EVENTS,
    "CallEvents": CALL_EVENTS,
    "Session": obj({"role": STR, "name": STR, "csrf": STR, "expires_in_s": INT}),
    "SignedOut": obj({"signed_out": BOOL}),
    "OpenAPI": obj({"openapi": STR, "info": ANY_OBJECT, "paths": ANY_OBJECT}),
}
