"""Supervisor actions on live calls, the worker's side: signed requests on Redis pub/sub, into the call's session.

A ``serve`` process that accepted an action (``bridge.supervisor.actions``: role checked, audited) publishes it on
:data:`~bridge.store.keys.CALL_ACTIONS`, signed with the node's listen key (:mod:`bridge.supervisor.listen_token`,
purpose ``action``): ``{"call_id", "who", "nonce", "exp", "sig", "fields": {"id", "action", "text", "target"}}``.
Every worker hears it (one idle subscription per worker process, beside listen-in's); the one holding the call
checks the signature, the expiry, the nonce (no replay), the call and the actor (both under the MAC), and for a
transfer that the target is one of the call's plan's targets; then it puts a :class:`bridge.events.SupervisorAction`
into the call's inbox (the session carries it out: ``bridge.call.supervision``) and answers on the request's ack
list (:func:`~bridge.store.keys.call_action_ack`), so the console can say whether a worker took it. Anything else
(unsigned, forged, expired, replayed, malformed, a target the plan does not name) is logged, counted and ignored:
nothing reaches the call and nothing is answered. A take-over's audio is :mod:`bridge.serve.takeover`'s.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bridge import events as ev
from bridge import metrics
from bridge.serve.takeover import TakeOverHub
from bridge.store import keys
from bridge.store.channels import follow
from bridge.supervisor.listen_token import ACTION, Signed, Verifier

log = logging.getLogger("bridge.serve.actions")


Deliver = Callable[[ev.Event], None]


def parse(signed: Signed) -> tuple[str, ev.SupervisorAction]:
    """(request id, action) of a verified request; ValueError if its fields are not an action's."""
    fields = signed.fields
    try:
        kind = ev.SupervisorKind(fields.get("action", ""))
    except ValueError:
        raise ValueError(f"no such action for call {signed.call_id[:64]}") from None
    request_id = fields.get("id", "")
    if not request_id or not signed.who:
        raise ValueError(f"a request for call {signed.call_id[:64]} without its id or actor")
    return request_id, ev.SupervisorAction(kind, signed.who, fields.get("text", ""), fields.get("target", ""))


@dataclass(slots=True)
class _Call:
    deliver: Deliver
    targets: tuple[str, ...]


class CallActions:
    """One worker's live calls, by id (their inboxes), and the subscription that brings actions to them."""

    def __init__(
        self, client: aioredis.Redis, worker: str, takeover: TakeOverHub | None = None, key: bytes | None = None
    ) -> None:
        self.client, self.worker = client, worker
        self.takeover = takeover  # None: take-over refused here
        self._verifier = Verifier(key, purpose=ACTION)
        self.calls: dict[str, _Call] = {}
        self._task: asyncio.Task[None] | None = None
        self._acks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="call-actions")

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._acks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        if self.takeover is not None:
            await self.takeover.close()

    def add(self, call_id: str, deliver: Deliver, targets: tuple[str, ...] = ()) -> None:
        """The call takes actions here; ``targets``: where a supervisor may transfer it (its plan's,
        ``bridge.supervisor.targets.allowed_targets``)."""
        self.calls[call_id] = _Call(deliver, targets)

    def remove(self, call_id: str) -> None:
        self.calls.pop(call_id, None)
        if self.takeover is not None:
            self.takeover.remove(call_id)

    async def _listen(self) -> None:
        await follow(self.client, keys.CALL_ACTIONS, self.on_message, "call actions")

    def on_message(self, data: Any) -> bool:
        """Deliver the action if it is signed and its call is here; True if it was."""
        try:
            signed = self._verifier.verify(data)
            request_id, action = parse(signed)
        except ValueError as exc:
            metrics.ACTIONS_REFUSED.inc()
            log.warning("call actions: refused a control message (%s): nothing changed", exc)
            return False
        call = self.calls.get(signed.call_id)
        if call is None:
            return False
        call_id = signed.call_id
        if action.action is ev.SupervisorKind.TRANSFER and action.target not in call.targets:
            metrics.ACTIONS_REFUSED.inc()
            log.warning("call %s: transfer by %s refused: the target is not one of the plan's: nothing changed",
                        call_id, action.who)  # fmt: skip
            return False
        if action.action is ev.SupervisorKind.TAKEOVER and not self._take_over(call_id, action.who, call.deliver):
            return False
        if action.action is ev.SupervisorKind.HANDBACK and self.takeover is not None:
            self.takeover.end(call_id)
        log.info("call %s: %s by %s", call_id, action.action, action.who)
        call.deliver(action)
        task = asyncio.create_task(self._ack(request_id), name=f"action-ack-{request_id}")
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)
        return True

    def _take_over(self, call_id: str, who: str, deliver: Deliver) -> bool:
        """The call's leg switched to ``who``'s voice; False (logged) if this worker cannot."""
        if self.takeover is None or not self.takeover.begin(call_id, who, deliver):
            metrics.TAKEOVER_REFUSED.inc()
            log.warning("call %s: take-over by %s refused: no take-over leg here", call_id, who)
            return False
        return True

    async def _ack(self, request_id: str) -> None:
        key = keys.call_action_ack(request_id)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.rpush(key, json.dumps({"worker": self.worker}))
                pipe.expire(key, keys.ACTION_ACK_TTL_S)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("call actions: the answer to request %s could not be written: %s", request_id, exc)
