"""The post-call question (``bridge/call/wrapup.py``) on a real session with the emulator: an answer in time, an
answer cut by the time bound, a session already gone, an answer still playing to the caller cancelled first; its
responses are handed to the caller of ``wrap_up`` (their tokens count in the call's cost)."""

from __future__ import annotations

import asyncio
import time

from bridge import events as ev
from bridge.call.postcall import NO_CAPABILITY, OK, SESSION_LOST, TIMED_OUT
from bridge.call.wrapup import wrap_up
from bridge.dialplan import PostCallPlan
from bridge.emulator import EmulatorServer
from bridge.realtime.client import RealtimeClient
from bridge.realtime.dialects import GA, LIVE
from bridge.realtime.profile import AgentProfile

PLAN = PostCallPlan(dispositions=("resolved", "abandoned"))


async def _session(emulator: EmulatorServer, query: str = "speed=0") -> RealtimeClient:
    client = RealtimeClient(GA, f"{emulator.base_url}?{query}", "sk-test-client")
    await client.connect()
    await client.open(AgentProfile())
    return client


async def test_the_answer_comes_back_and_its_response_is_handed_over(emulator: EmulatorServer) -> None:
    client = await _session(emulator)
    done: list[ev.ResponseDone] = []
    try:
        answer = await wrap_up(client, PLAN, GA.capabilities, done.append, timeout_s=5)
    finally:
        await client.close()
    assert (answer.status, answer.disposition) == (OK, "abandoned")  # nobody spoke: the list's last
    assert answer.summary == "The caller said nothing. The agent said nothing."
    assert [d.status for d in done] == [ev.ResponseStatus.COMPLETED]
    assert done[0].usage is not None and done[0].usage.output_tokens > 0


async def test_an_answer_later_than_the_bound_is_given_up(emulator: EmulatorServer) -> None:
    client = await _session(emulator, "speed=1&response_latency_ms=5000")
    try:
        t0 = time.monotonic()
        answer = await wrap_up(client, PLAN, GA.capabilities, lambda e: None, timeout_s=0.3)
        waited = time.monotonic() - t0
    finally:
        await client.close()
    assert answer.status == TIMED_OUT and answer.summary is None and answer.disposition is None
    assert waited < 2.0


async def test_a_session_gone_or_a_dialect_without_it_asks_nothing(emulator: EmulatorServer) -> None:
    client = await _session(emulator)
    await client.close()
    assert (await wrap_up(client, PLAN, GA.capabilities, lambda e: None, timeout_s=5)).status == SESSION_LOST
    assert (await wrap_up(None, PLAN, GA.capabilities, lambda e: None, timeout_s=5)).status == SESSION_LOST
    assert (await wrap_up(None, PLAN, LIVE.capabilities, lambda e: None, timeout_s=5)).status == NO_CAPABILITY


async def test_an_answer_still_under_way_is_cancelled_first(emulator: EmulatorServer) -> None:
    client = await _session(emulator, "speed=1&min_reply_ms=4000")
    done: list[ev.ResponseDone] = []
    try:
        client.send(ev.CreateResponse())  # the agent is still answering the caller as the call ends
        async with asyncio.timeout(5):
            while not isinstance(await client.next_event(), ev.ResponseStarted):
                pass
        answer = await wrap_up(client, PLAN, GA.capabilities, done.append, timeout_s=5, responding=True)
    finally:
        await client.close()
    assert answer.status == OK, answer
    assert [d.status for d in done] == [ev.ResponseStatus.CANCELLED, ev.ResponseStatus.COMPLETED]
