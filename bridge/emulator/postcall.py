"""The emulator's answer to a post-call question (``bridge/realtime/dialects/common.py``, :func:`post_call_form`),
made from the session's conversation, deterministically, as JSON text:

* ``summary``: "The caller said: <their lines>. The agent said: <its lines>." (each side's lines joined, cut to
  :data:`MAX_SIDE_CHARS`), or null when the form asks for none;
* ``disposition``: the first of the form's dispositions whose words (``_`` and ``-`` read as spaces) all appear in
  the transcript, else the first of the list when the caller spoke and the last when nobody did; null without a
  list;
* ``fields``: each property of the form's schema filled from the transcript: an ``enum`` property its first value
  that appears there, a ``pattern`` property the first match of the pattern, an integer or number property the first
  number, a time (``format: time``, or a name ending in ``_time``) the first time of day said ("9", "9:30", "5
  pm"), any other string the first sentence of the caller's that names one of the property's words (``reason``:
  a sentence with "reason" in it); properties found nowhere are left out, as a model leaves out what was not said
  (null without a schema).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

MAX_SIDE_CHARS: Final = 300
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_TIME = re.compile(r"\b(?:[01]?\d|2[0-3])(?::[0-5]\d)?\s*(?:[ap]\.?m\.?)?(?=\W|$)", re.I)
_SENTENCE = re.compile(r"[^.!?]+[.!?]?")


def _cut(text: str) -> str:
    return text if len(text) <= MAX_SIDE_CHARS else text[: MAX_SIDE_CHARS - 1].rstrip() + "…"


def summary(lines: Sequence[tuple[str, str]]) -> str:
    caller = " ".join(t for role, t in lines if role == "user").strip()
    agent = " ".join(t for role, t in lines if role == "assistant").strip()
    said = [f"The caller said: {_cut(caller)}" if caller else "The caller said nothing"]
    said.append(f"The agent said: {_cut(agent)}" if agent else "The agent said nothing")
    return ". ".join(s.rstrip(".") for s in said) + "."


def disposition(dispositions: Sequence[str], lines: Sequence[tuple[str, str]]) -> str | None:
    if not dispositions:
        return None
    words = set(re.findall(r"\w+", " ".join(t for _, t in lines).lower()))
    for d in dispositions:
        wanted = re.findall(r"\w+", d.lower().replace("_", " "))
        if wanted and all(w in words for w in wanted):
            return d
    return dispositions[0] if any(role == "user" and t for role, t in lines) else dispositions[-1]


def _field(name: str, spec: Mapping[str, Any], text: str, caller: str) -> Any:
    enum = spec.get("enum")
    if isinstance(enum, list):
        return next((v for v in enum if isinstance(v, str) and v.lower() in text.lower()), None)
    pattern = spec.get("pattern")
    if isinstance(pattern, str):
        try:
            found = re.search(pattern, text)
        except re.error:
            return None
        return found.group(0) if found else None
    json_type = spec.get("type")
    if json_type in ("integer", "number"):
        number = _NUMBER.search(text)
        if number is None:
            return None
        value = float(number.group(0))
        whole = json_type == "integer" and value.is_integer()
        return int(value) if whole else (value if json_type == "number" else None)
    if json_type == "string" and (spec.get("format") == "time" or name.endswith("_time")):
        at = next((m for m in _TIME.finditer(caller) if m.group(0).strip()), None)
        return at.group(0).strip() if at else None
    if json_type == "string":
        words = {w for w in re.split(r"[_\W]+", name.lower()) if len(w) >= 3}
        said = (m.group(0).strip() for m in _SENTENCE.finditer(caller))
        return next((t for t in said if words & set(re.findall(r"\w+", t.lower()))), None)
    return None


def fields(schema: Mapping[str, Any] | None, lines: Sequence[tuple[str, str]]) -> dict[str, Any] | None:
    if schema is None:
        return None
    text = " ".join(t for _, t in lines)
    caller = " ".join(t for role, t in lines if role == "user" and t)
    props = schema.get("properties")
    out: dict[str, Any] = {}
    for name, spec in props.items() if isinstance(props, Mapping) else ():
        value = _field(name, spec, text, caller) if isinstance(spec, Mapping) else None
        if value is not None:
            out[name] = value
    return out


def answer(form: Mapping[str, Any], lines: Sequence[tuple[str, str]]) -> str:
    """The answer, as the JSON text the model would write; ``lines``: (role, text) of the conversation, in order."""
    dispositions = [d for d in form.get("dispositions") or () if isinstance(d, str)]
    schema = form.get("fields")
    return orjson.dumps(
        {
            "summary": summary(lines) if form.get("summary") else None,
            "disposition": disposition(dispositions, lines),
            "fields": fields(schema if isinstance(schema, Mapping) else None, lines),
        }
    ).decode()
