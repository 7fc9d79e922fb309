"""The post-call question and its answer, pure: what the call's own model is asked once the call is over (a short
summary, one disposition of the plan's list, the fields the plan's JSON Schema declares) and how its answer is read.

The answer is taken only as the model gave it: text that is not one JSON object, a disposition not on the plan's
list, fields that do not fit the schema, leave summary and disposition null, with the reason in ``status``. A
summary is never made up. ``bridge/call/wrapup.py`` asks; the report keeps :meth:`PostCall.to_json` as
``post_call``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Final

import orjson
from jsonschema import Draft202012Validator

from bridge import events as ev
from bridge.dialplan import PostCallPlan
from bridge.privacy.masking import redact_value
from bridge.realtime.dialects.common import POST_CALL_METADATA, post_call_instructions

OK: Final = ev.POST_CALL_OK
SESSION_LOST: Final = "session lost"
NO_CAPABILITY: Final = "dialect cannot answer out of band"
TIMED_OUT: Final = "timed out"
NOT_FITTING: Final = "answer does not fit the schema"


@dataclass(frozen=True)
class PostCall:
    """What the model said of the call, or why it could not (``status``, :data:`OK` when it did)."""

    summary: str | None
    disposition: str | None
    fields: dict[str, Any] | None
    status: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def unavailable(status: str) -> PostCall:
    """No answer: summary, disposition and fields stay null; ``status`` says why."""
    return PostCall(None, None, None, status)


def form(plan: PostCallPlan) -> dict[str, Any]:
    """What the model is asked for, as the request writes it."""
    return {"summary": plan.summary, "dispositions": list(plan.dispositions), "fields": plan.fields}


def request(plan: PostCallPlan) -> ev.AskText:
    """The out-of-band, text-only question (``conversation: "none"``)."""
    return ev.AskText(post_call_instructions(form(plan)), tuple(POST_CALL_METADATA.items()))


def _misfit(field: str) -> PostCall:
    return unavailable(f"{NOT_FITTING}: {field}")


def read_answer(plan: PostCallPlan, text: str, redact: Callable[[str], str] = str) -> PostCall:
    """The model's answer ``text`` read against the plan; ``redact``: what the call's transcripts go through (the
    plan's privacy), applied to the summary and to the fields' strings once they fit."""
    try:
        answer = orjson.loads(text.strip().removeprefix("```json").removesuffix("```"))
    except orjson.JSONDecodeError:
        return _misfit("(answer): not JSON")
    if not isinstance(answer, Mapping):
        return _misfit("(answer): not a JSON object")
    summary, disposition, fields = answer.get("summary"), answer.get("disposition"), answer.get("fields")
    if plan.summary and (not isinstance(summary, str) or not summary.strip()):
        return _misfit("summary")
    if plan.dispositions and disposition not in plan.dispositions:
        return _misfit("disposition")
    if plan.fields is not None:
        if not isinstance(fields, Mapping):
            return _misfit("fields")
        error = next(iter(Draft202012Validator(plan.fields).iter_errors(fields)), None)
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path)
            return _misfit(f"fields.{where}" if where else "fields")
    return PostCall(
        summary=redact(summary.strip()) if plan.summary and isinstance(summary, str) else None,
        disposition=str(disposition) if plan.dispositions else None,
        fields=_redacted(fields, redact) if plan.fields is not None and isinstance(fields, Mapping) else None,
        status=OK,
    )


def _redacted(fields: Mapping[str, Any], redact: Callable[[str], str]) -> dict[str, Any]:
    """The fields as stored and sent: every string and every number through the plan's masking (a card number the
    model put in an ``integer`` field is masked as it is in a string: :func:`bridge.privacy.masking.redact_value`)."""
    return {str(k): redact_value(v, redact) for k, v in fields.items()}
