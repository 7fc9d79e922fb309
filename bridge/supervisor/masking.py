"""What a viewer sees of a caller's number: the last :data:`SHOWN` digits, the rest as ``•`` (``+1555•••1234`` ->
``•••••••1234``). Supervisors and admins see numbers whole. Pure: strings and the events of :mod:`.stream`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SHOWN = 2
MASK = "•"


def mask_number(number: str) -> str:
    if len(number) <= SHOWN:
        return MASK * len(number)
    return MASK * (len(number) - SHOWN) + number[-SHOWN:]


def mask_text(text: str, number: str) -> str:
    """``text`` with every occurrence of the caller's ``number`` masked."""
    return text.replace(number, mask_number(number)) if number and len(number) > SHOWN else text


def mask_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A live-calls row or a call's state (``caller`` masked, and in ``last_transcript`` too)."""
    out = dict(row)
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
