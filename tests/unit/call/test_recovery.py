"""Recovery in virtual time with a fake session opener: attempts, backoff, credentials, giving up, and the texts a
new session gets."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from bridge import events as ev
from bridge.call.builtin_tools import ToolAction, ToolResult
from bridge.call.recovery import (
    ANSWER_AFTER_ROLLOVER,
    ASK_TO_REPEAT,
    OPEN_TIMEOUT_S,
    RESUME_INSTRUCTIONS,
    Reconnects,
    Recovery,
    answer_instructions,
    summary,
)
from bridge.call.retry import RetryPolicy, delays
from bridge.errors import ConnectError
from bridge.replay.virtual import VirtualTimeLoop

T = TypeVar("T")
NET, AUTH = ev.ErrorClass.NETWORK, ev.ErrorClass.AUTH


def virtual(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main())


class Opener:
    """Opens sessions as scripted: each entry is a session name, a ConnectError to raise, or None to hang."""

    def __init__(self, *script: str | ConnectError | None) -> None:
        self.script = list(script)
        self.opened_at: list[float] = []

    async def __call__(self) -> str:
        self.opened_at.append(asyncio.get_running_loop().time())
        step = self.script.pop(0)
        if step is None:
            await asyncio.Event().wait()  # never answers: the attempt times out
        if isinstance(step, ConnectError):
            raise step
        assert isinstance(step, str)
        return step


class Credentials:
    def __init__(self) -> None:
        self.invalidated: list[str | None] = []

    async def __call__(self) -> str:
        return "secret"

    def invalidate(self, rejected: str | None = None) -> None:
        self.invalidated.append(rejected)


def recovery(
    opener: Opener, seed: int = 7, credentials: Credentials | None = None, max_reconnects: int = 20
) -> tuple[Recovery[str], list[ev.Report]]:
    reports: list[ev.Report] = []
    policy = Reconnects(RetryPolicy(), random.Random(seed), credentials, max_reconnects)
    rec = Recovery(opener, reports.append, policy)
    return rec, reports


def test_a_transport_blip_reconnects_at_once_with_the_same_credential() -> None:
    opener, creds = Opener("s2"), Credentials()
    rec, reports = recovery(opener, credentials=creds)
    assert virtual(lambda: rec.reconnect(NET, True, "fp-old")) == "s2"
    assert reports == [ev.Recovered(1)] and rec.reconnects == 1
    assert opener.opened_at == [0.0] and creds.invalidated == []


def test_failures_back_off_by_the_policy_and_are_reported() -> None:
    opener = Opener(ConnectError(NET, "refused", retryable=True), None, "s2")
    rec, reports = recovery(opener, seed=3)
    assert virtual(lambda: rec.reconnect(NET, True, None)) == "s2"
    wait = list(delays(RetryPolicy(), random.Random(3)))
    # attempt 0 at once; attempt 1 after its wait; attempt 2 after attempt 1 timed out and its own wait
    assert opener.opened_at == pytest.approx([0.0, wait[1], wait[1] + OPEN_TIMEOUT_S + wait[2]])
    failed = [ev.ReconnectFailed(attempt, NET, "reconnect") for attempt in (0, 1)]
    assert reports == [*failed, ev.Recovered(1)]


def test_a_refused_credential_is_invalidated_before_the_next_attempt() -> None:
    creds = Credentials()
    rec, reports = recovery(Opener(ConnectError(AUTH, "expired", retryable=True), "s2"), credentials=creds)
    assert virtual(lambda: rec.reconnect(AUTH, True, "fp-old")) == "s2"
    # the lost session's credential first, then (the failed attempt's own is unknown) whatever the source holds
    assert creds.invalidated == ["fp-old", None]
    assert reports[0] == ev.ReconnectFailed(0, AUTH, "refresh")


def test_a_failure_that_is_not_retryable_gives_up() -> None:
    opener = Opener(ConnectError(ev.ErrorClass.PROTOCOL, "bad model", retryable=False), "never")
    rec, reports = recovery(opener)
    assert virtual(lambda: rec.reconnect(NET, True, None)) is None
    assert reports == [ev.ReconnectFailed(0, ev.ErrorClass.PROTOCOL, "reconnect"), ev.RecoveryFailed(None)]
    assert len(opener.opened_at) == 1 and rec.reconnects == 0


def test_every_attempt_failing_gives_up_after_the_policy_s_attempts() -> None:
    opener = Opener(*[ConnectError(NET, "down", retryable=True)] * 4)
    rec, reports = recovery(opener)
    assert virtual(lambda: rec.reconnect(NET, True, None)) is None
    assert [type(r).__name__ for r in reports] == ["ReconnectFailed"] * 4 + ["RecoveryFailed"]


def test_a_call_that_lost_too_many_sessions_is_given_up_without_trying() -> None:
    opener = Opener("s2", "s3")
    rec, reports = recovery(opener, max_reconnects=1)
    assert virtual(lambda: rec.reconnect(NET, True, None)) == "s2"
    assert virtual(lambda: rec.reconnect(NET, True, None)) is None
    assert reports == [ev.Recovered(1), ev.RecoveryFailed(1)] and len(opener.opened_at) == 1


def test_the_summary_has_recent_turns_pending_action_and_keys_never_audio() -> None:
    pending = ToolResult({"ok": True}, action=ToolAction.TRANSFER, target="sip:agent@pbx")
    text = summary([f"q{i}" for i in range(8)], ["a1"], pending, ["2", "#"], rolled_over=False)
    assert text.splitlines() == [
        "The call was reconnected. Continue naturally; do not greet the caller again.",
        "Recent turns:",
        *[f"Caller: q{i}" for i in range(2, 8)],  # the last six
        "Agent: a1",
        "Pending: transfer (sip:agent@pbx) is under way.",
        "Keys the caller pressed: 2 #.",
    ]
    assert summary([], [], None, [], rolled_over=True) == (
        "This call continues in a new session. Continue naturally; do not greet the caller again."
    )


@pytest.mark.parametrize(
    ("greeting", "cut", "lost", "expected"),
    [
        ("Hello, Acme.", True, True, "Hello, Acme."),  # the greeting first: none of it was heard
        (None, True, True, RESUME_INSTRUCTIONS),
        (None, False, True, ASK_TO_REPEAT),
        (None, False, False, ANSWER_AFTER_ROLLOVER),
    ],
)
def test_what_a_new_session_is_asked_for(greeting: str | None, cut: bool, lost: bool, expected: str) -> None:
    assert answer_instructions(greeting, cut, lost) == expected
