"""Supervisor actions on live calls, the worker's side: requests on Redis pub/sub, into the call's session.

A ``serve`` process that accepted an action (``bridge.supervisor.actions``: role checked, audited) publishes
``{"id", "call_id", "action", "who", "text", "target"}`` on :data:`~bridge.store.keys.CALL_ACTIONS`. Every worker
hears it (one idle subscription per worker process, beside listen-in's); the one holding the call puts a
:class:`bridge.events.SupervisorAction` into the call's inbox (the session carries it out:
``bridge.call.supervision``) and answers on the request's ack list (:func:`~bridge.store.keys.call_action_ack`),
so the console can say whether a worker took it. A message that is not such JSON is logged and ignored.

A take-over also carries ``"grant"``: a signed message (:mod:`bridge.supervisor.listen_token`, purpose
``takeover``) for this call and this supervisor; without a valid one the worker refuses it (logged, counted, no
answer), since it would put someone's voice into a caller's ear. The take-over's audio is
:mod:`bridge.serve.takeover`'s.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bridge import events as ev
from bridge import metrics
from bridge.serve.takeover import TakeOverHub
from bridge.store import keys
from bridge.store.channels import follow
from bridge.supervisor.listen_token import TAKEOVER, Verifier

log = logging.getLogger("bridge.serve.actions")


Deliver = Callable[[ev.Event], None]


def parse(data: Any) -> tuple[str, str, ev.SupervisorAction, str] | None:
    """(request id, call id, action, grant) of a control message, or None if it is not one."""
    try:
        body = json.loads(data)
        action = ev.SupervisorAction(
            ev.SupervisorKind(body["action"]), str(body["who"]), str(body.get("text", "")), str(body.get("target", ""))
        )
        return str(body["id"]), str(body["call_id"]), action, str(body.get("grant", ""))
    except (TypeError, ValueError, KeyError):
        return None


class CallActions:
    """One worker's live calls, by id (their inboxes), and the subscription that brings actions to them."""

    def __init__(
        self, client: aioredis.Redis, worker: str, takeover: TakeOverHub | None = None, key: bytes | None = None
    ) -> None:
        self.client, self.worker = client, worker
        self.takeover = takeover  # None: take-over refused here
        self._grants = Verifier(key, purpose=TAKEOVER)
        self.calls: dict[str, Deliver] = {}
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

    def add(self, call_id: str, deliver: Deliver) -> None:
        self.calls[call_id] = deliver

    def remove(self, call_id: str) -> None:
        self.calls.pop(call_id, None)
        if self.takeover is not None:
            self.takeover.remove(call_id)

    async def _listen(self) -> None:
        await follow(self.client, keys.CALL_ACTIONS, self.on_message, "call actions")

    def on_message(self, data: Any) -> bool:
        """Deliver the action if its call is here; True if it was."""
        parsed = parse(data)
        if parsed is None:
            log.warning("call actions: a control message that is not an action request was ignored")
            return False
        request_id, call_id, action, grant = parsed
        deliver = self.calls.get(call_id)
        if deliver is None:
            return False
        if action.action is ev.SupervisorKind.TAKEOVER and not self._take_over(call_id, action.who, grant, deliver):
            return False
        if action.action is ev.SupervisorKind.HANDBACK and self.takeover is not None:
            self.takeover.end(call_id)
        log.info("call %s: %s by %s", call_id, action.action, action.who)
        deliver(action)
        task = asyncio.create_task(self._ack(request_id), name=f"action-ack-{request_id}")
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)
        return True

    def _take_over(self, call_id: str, who: str, grant: str, deliver: Deliver) -> bool:
        """The grant checked, the call's leg switched to the supervisor's voice; False (logged) if refused."""
        try:
            granted = self._grants.check(grant)
            if granted != (call_id, who):
                raise ValueError(f"a grant for another call or supervisor ({granted[0][:64]})")
        except ValueError as exc:
            metrics.TAKEOVER_REFUSED.inc()
            log.warning("call %s: take-over by %s refused (%s): nothing changed", call_id, who, exc)
            return False
        return self.takeover is not None and self.takeover.begin(call_id, who, deliver)

    async def _ack(self, request_id: str) -> None:
        key = keys.call_action_ack(request_id)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.rpush(key, json.dumps({"worker": self.worker}))
                pipe.expire(key, keys.ACTION_ACK_TTL_S)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("call actions: the answer to request %s could not be written: %s", request_id, exc)
