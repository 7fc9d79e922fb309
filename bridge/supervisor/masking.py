"""What a viewer sees of a caller: a number keeps its last :data:`SHOWN` digits, the rest as ``•``
(``+15551234`` -> ``•••••••34``); a name (``alice``, ``sip:desk-3``) is not a number and is shown as it is, its digits
masked only where a run of them could be one (``bob 5551234`` -> ``bob •••••34``). Supervisors and admins see callers
whole. Pure: strings and the events of :mod:`.stream`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

SHOWN = 2
MASK = "•"
NUMBER_MIN_DIGITS = 4  # a shorter run of digits in a name (``desk-3``, ``agent42``) tells nothing about a number
_PUNCTUATION = frozenset("+-.() /")
_DIGIT_RUN = re.compile(rf"\d{{{NUMBER_MIN_DIGITS},}}")


def is_number(caller: str) -> bool:
    """Digits and the punctuation numbers are written with (``+1 (555) 123-4567``), nothing else."""
    return any(c.isdigit() for c in caller) and all(c.isdigit() or c in _PUNCTUATION for c in caller)


def _masked(digits: str) -> str:
    return MASK * len(digits) if len(digits) <= SHOWN else MASK * (len(digits) - SHOWN) + digits[-SHOWN:]


def mask_number(caller: str) -> str:
    """A number with all but its last :data:`SHOWN` characters masked; anything else (a name) with each run of
    :data:`NUMBER_MIN_DIGITS` or more digits masked the same way, its letters as they are."""
    if is_number(caller):
        return _masked(caller)
    return _DIGIT_RUN.sub(lambda m: _masked(m.group()), caller)


def mask_text(text: str, caller: str) -> str:
    """``text`` with every occurrence of the ``caller`` masked (a name without a number in it stays)."""
    shown = mask_number(caller)
    return text.replace(caller, shown) if caller and shown != caller else text


# A call's dialog as the SIP stack knows it: the route set and tags (``sip_dialog``, what a restarted worker's BYE
# needs) and the caller's Call-ID. With them anyone could write requests in the call's dialog (the front and the
# worker refuse them from any address but the caller's); nobody's console needs the route and tags, and a viewer
# sees neither.
DIALOG_FIELD = "sip_dialog"
VIEWER_HIDDEN = frozenset({DIALOG_FIELD, "sip_call_id"})


def public_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A call's state as a supervisor or an admin reads it: without ``sip_dialog``."""
    return {k: v for k, v in state.items() if k != DIALOG_FIELD}


def mask_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A live-calls row or a call's state as a viewer reads it: ``caller`` masked (in ``last_transcript`` too), no
    dialog identifiers (:data:`VIEWER_HIDDEN`)."""
    out = {k: v for k, v in row.items() if k not in VIEWER_HIDDEN}
    caller = str(out.get("caller") or "")
    if caller:
        out["caller"] = mask_number(caller)
        if isinstance(out.get("last_transcript"), str):
            out["last_transcript"] = mask_text(out["last_transcript"], caller)
    return out


class EventMask:
    """Masks one page's event stream (:mod:`.stream`): rows, a call's state, and entries that name its caller."""

    def __init__(self) -> None:
        self.callers: set[str] = set()

    def __call__(self, name: str, data: Any) -> Any:
        if name == "snapshot":
            rows = [self._row(r) for r in data.get("calls", ())]
            return {**data, "calls": rows}
        if name in ("upsert", "call"):
            return self._row(data)
        if name == "entries":
            return [self._entry(e) for e in data]
        if name == "entry":
            return self._entry(data)
        return data

    def _row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        caller = str(row.get("caller") or "")
        if caller:
            self.callers.add(caller)
        return mask_row(row)

    def _entry(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(entry)
        for caller in self.callers:
            out["summary"] = mask_text(str(out.get("summary", "")), caller)
        data = out.get("data")
        if isinstance(data, Mapping) and data.get("caller"):
            out["data"] = {**data, "caller": mask_number(str(data["caller"]))}
        return out
