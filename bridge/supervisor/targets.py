"""Where a supervisor may transfer a call: what the console's action checks (``bridge.supervisor.actions``) and what
a worker hands each call's inbox (``bridge.serve.worker``), in a module of its own so that a worker does not import
the console's web stack (``aiohttp.web``, ``bridge.supervisor.http``) for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.dialplan import Dialplan


def allowed_targets(plan: Dialplan | None) -> tuple[str, ...]:
    """The targets a supervisor may transfer a call of ``plan`` to: its ``transfer_target`` and ``transfer_targets``."""
    if plan is None:
        return ()
    return tuple(dict.fromkeys(t for t in (plan.transfer_target, *plan.transfer_targets) if t))
