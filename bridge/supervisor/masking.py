"""What a viewer sees of a call: its caller (and the number a forwarded call was first placed to) masked as
:func:`bridge.privacy.masking.viewer_number` masks one (a number keeps its last two digits; a name is shown as it
is), in rows, a call's state and the events of :mod:`.stream`; no dialog identifiers. Supervisors and admins see
callers whole. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.privacy.masking import MASK, VIEWER_MASK, VIEWER_SHOWN, is_number, viewer_number, viewer_text

# A call's dialog as the SIP stack knows it: the route set and tags (``sip_dialog``, what a restarted worker's BYE
# needs) and the caller's Call-ID. With them anyone could write requests in the call's dialog (the front and the
# worker refuse them from any address but the caller's); nobody's console needs the route and tags, and a viewer
# sees neither.
DIALOG_FIELD = "sip_dialog"
VIEWER_HIDDEN = frozenset({DIALOG_FIELD, "sip_call_id"})


def viewer_caller(caller: str) -> str:
    """A caller as a viewer sees it: :func:`viewer_number`'s, with one glyph. A number the plan's privacy already
    masked for Redis (``+1555****567``) is masked whole (``••••••••••67``): its log mask (``*``) never shows beside
    the viewer's (``•``), nor a digit before the last two."""
    unmasked = caller.replace(MASK, "0")
    if MASK not in caller or not is_number(unmasked) or len(caller) <= VIEWER_SHOWN:
        return viewer_number(caller)
    return VIEWER_MASK * (len(caller) - VIEWER_SHOWN) + caller[-VIEWER_SHOWN:].replace(MASK, VIEWER_MASK)


def public_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A call's state as a supervisor or an admin reads it: without ``sip_dialog``."""
    return {k: v for k, v in state.items() if k != DIALOG_FIELD}


def mask_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A live-calls row or a call's state as a viewer reads it: ``caller`` masked (in the words said and the model's
    summary too), ``original_called`` masked as a caller is, no dialog identifiers (:data:`VIEWER_HIDDEN`)."""
    out = {k: v for k, v in row.items() if k not in VIEWER_HIDDEN}
    if out.get("original_called"):
        out["original_called"] = viewer_caller(str(out["original_called"]))
    caller = str(out.get("caller") or "")
    if caller:
        out["caller"] = viewer_caller(caller)
        for said in ("last_transcript", "summary", "call_summary", "call_fields"):  # words, the model's too
            if isinstance(out.get(said), str):
                out[said] = viewer_text(out[said], caller)
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
            out["summary"] = viewer_text(str(out.get("summary", "")), caller)
        data = out.get("data")
        if isinstance(data, Mapping) and data.get("caller"):
            out["data"] = {**data, "caller": viewer_caller(str(data["caller"]))}
        return out
