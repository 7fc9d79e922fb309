"""What every record of a call says, wherever it is read: the report file's line (``Settings.report_file``), a row
of ``GET /api/calls/ended``, the ``call.ended`` webhook, and the line written for a call whose worker died. Pure.

:data:`RECORD_FIELDS` are the same names with the same types in each (docs/report.schema.json,
docs/webhooks.schema.json):

==================  ==================================================================================================
``call_id`` ...     the bridge's call id, the caller's SIP Call-ID, the plan, variant, dialect, model and voice
``caller``          the caller's number as the reader may see it: masked as the plan's privacy keeps it in logs and
                    Redis (the report file), as the endpoint's ``caller`` setting says (a webhook), as the console
                    shows it to the user's role (the API); ``called``; ``original_called`` (null: not forwarded)
``started_at``      the INVITE's arrival; ``answered_at`` (null: never answered); ``ended_at``: the call's end
``duration_s``      from the answer to the end, to the millisecond (0: never answered)
``end_reason``      why it ended, in words; ``ended_by`` (``bridge.events.EndedBy``); ``outcome``
                    (``bridge.events.CallOutcome``; null: unknown)
``session_ids``     the model's session ids (``sess_...``), in the order they opened (a call whose worker died: the
                    latest its hash kept)
==================  ==================================================================================================

One time format: ISO 8601 in UTC to the millisecond, ``2026-11-27T06:31:12.345Z`` (:func:`iso`). An API that gives
Unix times as well names them ``..._unix`` (``started_at_unix``), beside the record's."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from bridge import events as ev

IDENTITY: Final = ("call_id", "sip_call_id", "dialplan", "variant", "dialect", "model", "voice", "caller", "called")
TIMES: Final = ("started_at", "answered_at", "ended_at")
RECORD_FIELDS: Final = (
    *IDENTITY,
    "original_called",
    *TIMES,
    "duration_s",
    "end_reason",
    "ended_by",
    "outcome",
    "session_ids",
)


def iso(t: float) -> str:
    """Unix time ``t`` as ISO 8601 in UTC with milliseconds: ``2026-11-26T00:27:10.123Z``."""
    stamp = dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def iso_or_none(t: float | None) -> str | None:
    return None if t is None else iso(t)


def unix(value: str | float | None) -> float | None:
    """A time as stored (``"1795739969.600"``, a number) in Unix seconds; None for none or one that is no number."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        return None


def duration_s(answered: float | None, ended: float | None) -> float:
    """Seconds from the answer to the end, to the millisecond (0: never answered, or not ended)."""
    return round(max(0.0, ended - answered), 3) if answered is not None and ended is not None else 0.0


def ms(t: float) -> float:
    """``t`` to the millisecond, as Redis keeps a time (``bridge.store.pending.stamp``)."""
    return round(t, 3)


@dataclass
class CallTimes:
    """A call's wall-clock times (Unix seconds, to the millisecond): its arrival, its answer and its end, each set
    once by whoever sees it first (:meth:`listener`, or the webhooks' own listener of the same call)."""

    started_at: float = field(default_factory=lambda: ms(time.time()))
    answered_at: float | None = None
    ended_at: float | None = None

    def answer(self) -> float:
        if self.answered_at is None:
            self.answered_at = ms(time.time())
        return self.answered_at

    def end(self) -> float:
        if self.ended_at is None:
            self.ended_at = ms(time.time())
        return self.ended_at

    def listener(self, report: ev.Report) -> None:
        """A call listener: :class:`~bridge.events.Answered` and :class:`~bridge.events.CallEnded` set their times."""
        if isinstance(report, ev.Answered):
            self.answer()
        elif isinstance(report, ev.CallEnded):
            self.end()

    def as_dict(self) -> dict[str, float | None]:
        return {"started_at": self.started_at, "answered_at": self.answered_at, "ended_at": self.ended_at}


def call_record(
    identity: Mapping[str, Any], times: Mapping[str, float | None], ending: Mapping[str, Any]
) -> dict[str, Any]:
    """The :data:`RECORD_FIELDS` of one call: ``identity`` (the :data:`IDENTITY` names and ``original_called``,
    numbers already in the form the reader may see), ``times`` (Unix seconds or None: :data:`TIMES`), ``ending``
    (``end_reason``, ``ended_by``, ``outcome``, ``session_ids``)."""
    started, answered, ended = (times.get(name) for name in TIMES)
    return {
        **{name: str(identity.get(name) or "") for name in IDENTITY},
        "original_called": identity.get("original_called") or None,
        "started_at": iso_or_none(started),
        "answered_at": iso_or_none(answered),
        "ended_at": iso_or_none(ended),
        "duration_s": duration_s(answered, ended),
        "end_reason": str(ending.get("end_reason") or ""),
        "ended_by": str(ending["ended_by"]) if ending.get("ended_by") else None,
        "outcome": str(ending["outcome"]) if ending.get("outcome") else None,
        "session_ids": session_ids(ending.get("session_ids") or ()),
    }


def stored_record(state: Mapping[str, str]) -> dict[str, Any]:
    """:func:`call_record` of a call from its hash in Redis (``bridge.store.keys``: numbers masked as stored; the
    latest ``session_id``)."""
    ending = {
        "end_reason": state.get("end_reason"),
        "ended_by": state.get("ended_by"),
        "outcome": state.get("outcome"),
        "session_ids": [state["session_id"]] if state.get("session_id") else [],
    }
    return call_record(state, {name: unix(state.get(name)) for name in TIMES}, ending)


def session_ids(ids: Iterable[str]) -> list[str]:
    """Each id once, in the order first seen ("" left out)."""
    return list(dict.fromkeys(i for i in ids if i))
