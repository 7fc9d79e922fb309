"""A take-over reaches a call only with a grant signed for that call and that supervisor: any other is refused
before the call hears of it."""

from __future__ import annotations

import json

from bridge import events as ev
from bridge.serve.actions import CallActions
from bridge.supervisor.listen_token import TAKEOVER, sign

KEY = b"k" * 32


def request(grant: str = "", who: str = "sam", call_id: str = "c-1") -> str:
    return json.dumps({"id": "r1", "call_id": call_id, "action": "takeover", "who": who, "grant": grant})


def test_a_take_over_without_a_valid_grant_never_reaches_the_call() -> None:
    actions = CallActions(None, "w0", None, KEY)  # type: ignore[arg-type]  # refused before Redis is used
    got: list[ev.Event] = []
    actions.add("c-1", got.append)
    refused = [
        request(),  # no grant
        request(sign(b"x" * 32, "c-1", "sam", purpose=TAKEOVER)),  # another key
        request(sign(KEY, "c-1", "sam")),  # a listen-in request is no grant
        request(sign(KEY, "c-2", "sam", purpose=TAKEOVER)),  # another call's
        request(sign(KEY, "c-1", "sam", purpose=TAKEOVER), who="mallory"),  # another supervisor's
    ]
    assert [actions.on_message(r) for r in refused] == [False] * len(refused)
    assert got == []
