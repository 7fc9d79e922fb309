"""Who holds a rollout dialplan's kill switch, and who may turn it off (pure).

Whoever turns a kill switch on holds it: their name, their role and the time are written on the flag (``kill_by``,
``kill_role``, ``kill_at`` of :class:`bridge.rollout.policy.RolloutFlag`), so the audit entry of the change holds
them (beside ``kill`` in its old and new values, and in the whole flag it keeps) and the seal covers them like any
setting (:mod:`bridge.rollout.seal`).

* **Turning it off** is for the holder, or for a role at least as high as the holder's
  (:data:`bridge.supervisor.accounts.RANK`: viewer < supervisor < admin). A supervisor cannot send calls back to a
  candidate an admin stopped: :func:`kill_changes` raises :class:`KillHeld`, naming the holder and the role needed
  (the API answers 403 with them, the command line prints them).
* **Turning it on again** with a role above the holder's takes it over (the holder becomes that account), so an admin
  who agrees with a supervisor's stop keeps calls on the safe variant until an admin lifts it. The same role, or a
  lower one, changes nothing.
* **A kill switch on with no holder on the flag** (a flag written without these fields, or the fail-safe that a
  refused flag puts calls on) counts as an admin's: only an admin lifts it.
* **Every other change** (weights, lists, stickiness) leaves the switch and its holder as they are: a change made
  while the switch is on moves no call off the safe variant.

``callbridge rollout set`` on the node (Redis and the rollout key in hand, with which it could write any flag) counts
as :data:`CLI_ROLE`, admin; with ``--api`` the API decides with the token's account and role.

A holder's name says where it comes from: the command line's is ``cli:<--who or the login name>``
(:func:`cli_holder`), a console account's its bare name (an account's name has no ``:``), so an account named like
the OS user that set the switch on the node is not its holder.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from bridge.rollout.policy import RolloutFlag, validate_flag
from bridge.store.times import stamped
from bridge.supervisor.accounts import RANK, Role

HOLDER_FIELDS: Final = ("kill_by", "kill_role", "kill_at")  # the flag's fields that name the holder
CLI_ROLE: Final[Role] = "admin"  # callbridge rollout set on the node
UNRECORDED_ROLE: Final[Role] = "admin"  # the holder of a kill switch whose flag names none


CLI_PREFIX: Final = "cli:"  # a holder set from the command line (no console account's name has a colon)


def cli_holder(who: str) -> str:
    """The holder's name the command line writes: ``cli:root`` (never one a console account can have)."""
    return f"{CLI_PREFIX}{who}"


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a kill switch that is on: ``by`` ("" when the flag names nobody), ``role``, ``at`` (ISO 8601)."""

    by: str
    role: str
    at: str

    def to_json(self) -> dict[str, str]:
        return {"by": self.by, "role": self.role, "at": self.at}

    def text(self) -> str:
        """``ada (admin, since 2025-01-02T03:04:05Z)``; none recorded: ``nobody recorded (counted as admin)``."""
        if not self.by:
            return f"nobody recorded (counted as {self.role})"
        return f"{self.by} ({self.role}" + (f", since {self.at})" if self.at else ")")


class KillHeld(Exception):
    """A kill switch turned off by someone it does not let: ``holder`` holds it, ``needs`` the role that may."""

    def __init__(self, dialplan: str, holder: Holder, refusal: str) -> None:
        super().__init__(f"the kill switch of {dialplan} is held by {holder.text()}: {refusal}")
        self.dialplan, self.holder, self.needs = dialplan, holder, holder.role

    def to_json(self) -> dict[str, Any]:
        """The API's 403 body."""
        return {"error": f"forbidden: {self}", "held_by": self.holder.to_json(), "needs": self.needs}


def rank(role: str) -> int:
    return RANK.get(role, -1)


def holder_of(flag: RolloutFlag) -> Holder | None:
    """Who holds the kill switch of ``flag`` (None: it is off). A role the flag does not name, or names wrongly,
    counts as :data:`UNRECORDED_ROLE`."""
    if not flag.kill:
        return None
    role = flag.kill_role if flag.kill_role in RANK else UNRECORDED_ROLE
    return Holder(flag.kill_by, role, flag.kill_at)


def lift_refusal(holder: Holder, who: str, role: str) -> str | None:
    """None if ``who``, with ``role``, may turn off the kill switch ``holder`` holds; else what it takes, in words:
    ``turning it off needs the admin role or ada, who turned it on (you are signed in as a supervisor)``."""
    if (holder.by and who == holder.by) or rank(role) >= rank(holder.role):
        return None
    setter = f" or {holder.by}, who turned it on" if holder.by else ""
    return f"turning it off needs the {holder.role} role{setter} (you are signed in as a {role})"


def flag_json(flag: RolloutFlag) -> dict[str, Any]:
    """The flag as the API and ``rollout show --json`` write it: its settings, ``kill_at`` ISO 8601 UTC or null (off,
    or not recorded) with ``kill_at_unix`` beside it (:func:`bridge.store.times.stamped`)."""
    return dict(stamped(flag.model_dump(mode="json")))


def flag_from_json(doc: Mapping[str, Any]) -> RolloutFlag:
    """A flag as :func:`flag_json` wrote it (the API's answers, read by ``rollout show|set --api``): a null
    ``kill_at`` is none recorded, ``kill_at_unix`` is only beside it."""
    settings = {name: value for name, value in doc.items() if name in RolloutFlag.model_fields}
    return RolloutFlag.model_validate({**settings, "kill_at": settings.get("kill_at") or ""})


def now_text() -> str:
    """Now, as a holder's ``at``: ISO 8601, UTC, to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def kill_changes(
    dialplan: str, old: RolloutFlag, changes: Mapping[str, Any], who: str, role: str, at: str
) -> dict[str, Any]:
    """``changes`` to the flag ``old`` (in force) as made by ``who`` with ``role`` at ``at``, with the holder's
    fields they imply: the holder written when the switch turns on (or is taken over), cleared when it turns off.
    A holder's field in ``changes`` is dropped (nobody names a holder but by turning the switch on). Raises
    :class:`KillHeld` for a switch ``who`` may not turn off, ConfigError for a ``kill`` that is not a yes or no.

    Run it inside the store's transaction (:meth:`bridge.rollout.store.RolloutStore.update_flag`'s ``compute``), so
    the holder checked is the one the change replaces."""
    out = {name: value for name, value in changes.items() if name not in HOLDER_FIELDS}
    if "kill" not in out:
        return out
    kill = out["kill"] = validate_flag({"kill": out["kill"]}, f"rollout {dialplan}").kill
    holder = holder_of(old)
    if kill and (holder is None or _takes_over(holder, who, role)):
        return {**out, "kill_by": who, "kill_role": role, "kill_at": at}
    if not kill and holder is not None:
        refusal = lift_refusal(holder, who, role)
        if refusal is not None:
            raise KillHeld(dialplan, holder, refusal)
        return {**out, **dict.fromkeys(HOLDER_FIELDS, "")}
    return out


def _takes_over(holder: Holder, who: str, role: str) -> bool:
    """Whether turning on again a switch ``holder`` holds makes ``who`` its holder: a higher role, or one at least
    as high when the flag names no holder."""
    if who == holder.by:
        return False
    return rank(role) > rank(holder.role) or (not holder.by and rank(role) >= rank(holder.role))
