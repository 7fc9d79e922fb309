"""After the call: the post-call question to the call's own model session (``bridge/call/postcall.py`` says what is
asked and how the answer is read).

It runs once the phone leg has ended (the caller's BYE, or ours, is already out) and before the session closes:
one out-of-band, text-only response (``response.create`` with ``conversation: "none"``), bounded by ``timeout_s``.
Its tokens count in the call's usage. Where it cannot happen, the answer says why: the dialect has no such response
(``Capabilities.text_out_of_band``), the session is gone, the service answered an error, or the time ran out.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

from bridge import events as ev
from bridge.call.postcall import NO_CAPABILITY, SESSION_LOST, TIMED_OUT, PostCall, read_answer, request, unavailable
from bridge.call.report import CallReport
from bridge.call.usage import UsageMeter
from bridge.dialplan import PostCallPlan
from bridge.realtime.client import RealtimeClient
from bridge.realtime.dialects.base import Capabilities


async def wrap_up(
    client: RealtimeClient | None,
    plan: PostCallPlan,
    caps: Capabilities,
    responded: Callable[[ev.ResponseDone], None],
    *,
    timeout_s: float,
    responding: bool = False,
    redact: Callable[[str], str] = str,
) -> PostCall:
    """Ask ``client``'s session the plan's post-call question and read its answer. ``responded``: each response that
    ends meanwhile (its tokens count in the call's cost). ``responding``: an answer to the caller is still under way
    (cancelled first, where the dialect can: the service takes one response at a time)."""
    if not caps.text_out_of_band:
        return unavailable(NO_CAPABILITY)
    if client is None or client.closed is not None:
        return unavailable(SESSION_LOST)
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[PostCall] = loop.create_future()
    ours: str | None = None
    deltas: list[str] = []
    final: str | None = None

    def settle(result: PostCall) -> None:
        if not answered.done():
            answered.set_result(result)

    def sink(e: ev.Event) -> None:
        nonlocal ours, final
        if isinstance(e, ev.ResponseDone):
            responded(e)  # every response's tokens count, the cut answer's and the question's
        if isinstance(e, ev.ResponseStarted) and e.out_of_band and ours is None:
            ours = e.response_id
        elif isinstance(e, ev.AgentText) and e.response_id == ours:
            final = e.text if e.final else final
            deltas.append("" if e.final else e.text)
        elif isinstance(e, ev.ResponseDone) and e.response_id == ours:
            if e.status is not ev.ResponseStatus.COMPLETED:
                settle(unavailable(f"the answer ended {e.status}"))
            else:
                settle(read_answer(plan, final if final is not None else "".join(deltas), redact))
        elif isinstance(e, ev.ErrorEvent) and e.code != "response_cancel_not_active":
            settle(unavailable(f"the service answered an error: {e.code}"))
        elif isinstance(e, ev.Closed):
            settle(unavailable(SESSION_LOST))

    client.read_on_beat(False)  # no call beat reads the socket any more
    client.deliver_to(sink)
    if responding and caps.cancel:
        client.send(ev.CancelResponse())
    client.send(request(plan))
    try:
        return await asyncio.wait_for(answered, timeout_s)
    except TimeoutError:
        return unavailable(TIMED_OUT)
    finally:
        client.deliver_to(None)


@dataclass(frozen=True)
class Ledger:
    """Where an ended call's post-call answer goes: its report, its listeners, its usage (the cost)."""

    report: CallReport
    emit: Callable[[ev.Report], None]
    usage: UsageMeter


async def ask_after_call(
    client: RealtimeClient | None,
    plan: PostCallPlan,
    caps: Capabilities,
    ledger: Ledger,
    *,
    timeout_s: float,
    responding: bool,
    redact: Callable[[str], str],
) -> None:
    """:func:`wrap_up` for an ended call: the answer into its report (``post_call``) and reported
    (:class:`~bridge.events.PostCallDone`); each response that ends meanwhile reported and counted in its usage."""
    report, emit = ledger.report, ledger.emit

    def responded(e: ev.ResponseDone) -> None:
        emit(ev.ResponseEnded(e.response_id, e.status, e.usage))
        ledger.usage.response_done(e)

    answer = await wrap_up(client, plan, caps, responded, timeout_s=timeout_s, responding=responding, redact=redact)
    report.post_call = answer.to_json()
    fields = "" if answer.fields is None else json.dumps(answer.fields, separators=(",", ":"))
    emit(ev.PostCallDone(answer.status, answer.disposition or "", answer.summary or "", fields))
