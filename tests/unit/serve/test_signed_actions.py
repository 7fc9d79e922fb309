"""A supervisor action reaches a call only signed by the node's serve for that call, that supervisor and that very
action: any other is refused before the call hears of it, and a transfer goes only to one of the plan's targets."""

from __future__ import annotations

import json

from bridge import events as ev
from bridge.serve.actions import CallActions
from bridge.supervisor.listen_token import ACTION, sign

KEY = b"k" * 32
DESK = "sip:desk@example.com"


def signed(action: str, call_id: str = "c-1", who: str = "sam", key: bytes = KEY, **more: str) -> str:
    return sign(key, call_id, who, purpose=ACTION, fields={"id": "r1", "action": action, **more})


def test_an_action_not_signed_for_this_call_and_action_never_reaches_it() -> None:
    actions = CallActions(None, "w0", None, KEY)  # type: ignore[arg-type]  # refused before Redis is used
    got: list[ev.Event] = []
    actions.add("c-1", got.append, targets=(DESK,))
    refused = [
        json.dumps({"id": "r1", "call_id": "c-1", "action": "hangup", "who": "sam"}),  # unsigned
        signed("hangup", key=b"x" * 32),  # another key
        sign(KEY, "c-1", "sam"),  # a listen-in request is no action
        signed("takeover"),  # signed, but this worker has no take-over leg for the call
        signed("transfer", target="sip:premium@toll.example"),  # signed, but not one of the plan's targets
        signed("transfer"),  # no target at all
        signed("explode"),  # no such action
        sign(KEY, "c-1", "", purpose=ACTION, fields={"id": "r1", "action": "hangup"}),  # no actor
    ]
    assert [actions.on_message(r) for r in refused] == [False] * len(refused)
    assert got == []
    other = signed("hangup", call_id="c-2")  # another worker's call: not this one's business
    assert not actions.on_message(other) and got == []
