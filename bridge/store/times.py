"""One time format in the JSON the product writes (pure): a moment is ISO 8601 in UTC with milliseconds
(``2026-11-26T00:27:10.123Z``, :func:`bridge.store.record.iso`), or null when it is unset, with the same moment in
Unix seconds beside it as ``<name>_unix`` (a number, or null).

:func:`stamped` applies it to a JSON value on its way out (the API's live calls, one call's detail, the event streams,
the audits, an export; ``callbridge calls --json``): each field named in :data:`MOMENTS` that holds Unix seconds (a
number, or a number as Redis keeps it, ``"1795863154.128"``) or nothing (``""``) becomes the pair, at any depth but
under ``data`` (a stream entry's fields as stored) and ``fields`` (what the model filed); any other ``*_at`` that is
``""`` becomes null. A field already in ISO 8601 stays as it is, with its ``_unix`` put beside it when it has none (a
moment a setting keeps as text: the rollout flag's ``kill_at``).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any, Final

from bridge.store.record import iso

MOMENTS: Final = frozenset(
    {"started_at", "answered_at", "ended_at", "last_activity", "transfer_at", "at", "t", "now", "audio_at"}
    | {"kill_at", "applied_at"}  # the rollout's: when a kill switch was turned on, when a decision was applied
)
OPAQUE: Final = frozenset({"data", "fields"})  # stored as they came: not the API's own fields
ISO_UTC: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")


def unix(value: Any) -> float | None:
    """Unix seconds from a number or its text; None for nothing, a bool, or text that is no finite number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        try:
            seconds = float(value)
        except ValueError:
            return None
    else:
        return None
    return seconds if math.isfinite(seconds) and 0 <= seconds < 1e11 else None


def _moment(value: Any) -> bool:
    """Whether ``value`` is a moment this module writes anew: Unix seconds, or nothing."""
    return value is None or value == "" or unix(value) is not None


def iso_unix(value: Any) -> float | None:
    """Unix seconds of an ISO 8601 UTC text (``2026-11-26T00:27:10Z``); None for anything else."""
    if not isinstance(value, str) or not ISO_UTC.fullmatch(value):
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def stamped(value: Any) -> Any:
    """``value`` with every moment as ISO 8601 and ``<name>_unix`` beside it (see the module)."""
    if isinstance(value, list):
        return [stamped(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in MOMENTS and _moment(item) and f"{key}_unix" not in value:
            seconds = unix(item)
            out[key] = None if seconds is None else iso(seconds)
            out[f"{key}_unix"] = seconds
        elif key in MOMENTS and f"{key}_unix" not in value and (seconds := iso_unix(item)) is not None:
            out[key], out[f"{key}_unix"] = item, seconds
        elif key.endswith("_at") and item == "":  # a moment kept as ISO text elsewhere, unset
            out[key] = None
        elif key in OPAQUE:
            out[key] = item
        else:
            out[key] = stamped(item)
    return out


def unstamped(value: dict[str, Any]) -> dict[str, Any]:
    """An object :func:`stamped` wrote, with each moment back as Unix seconds under its own name (a client of the
    API that keeps them as numbers)."""
    out = {k: v for k, v in value.items() if not (k.endswith("_unix") and k.removesuffix("_unix") in MOMENTS)}
    for key in MOMENTS & value.keys():
        if f"{key}_unix" in value:
            out[key] = value[f"{key}_unix"]
    return out
