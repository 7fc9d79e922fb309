"""A call's trace context as the requests it makes carry it: W3C Trace Context's ``traceparent`` header
(https://www.w3.org/TR/trace-context/ §3.2), with no OpenTelemetry import (tracing off costs nothing but a context
variable read).

The worker sets :data:`CURRENT` to the call's trace (:class:`bridge.runtime.calltrace.CallTrace`) in the call's task
before the call starts, so every task the call starts (its tool calls, its MCP sessions) sees it. A tool's request
asks :func:`headers` for what to send; the trace answers with the ``traceparent`` of the tool's span (or the call's)
and takes the request's attributes (method, server, URL template: never arguments) for that span. The call's end
says when its post-call work begins (:func:`post_call_began`), which the trace spans.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Final, Protocol

HEADER: Final = "traceparent"
STATE_HEADER: Final = "tracestate"  # a trusted caller's vendors' state, kept along the call's trace
VERSION: Final = "00"
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
Attributes = Mapping[str, str | int | float | bool]


class Carrier(Protocol):
    """What a call's trace offers the requests of the call."""

    def traceparent(self, tool: str = "", attributes: Attributes | None = None) -> str:
        """The ``traceparent`` of the open span of ``tool`` (its latest), else of the call ("": none)."""
        ...

    def ids(self) -> dict[str, str]:
        """``trace_id`` and ``span_id`` (the call's root span), hex; {} when the trace is not sampled."""
        ...

    def post_call(self, asked: bool) -> None:
        """The call's post-call work begins (``asked``: the model is asked its post-call question; the checks
        follow): a span open until the call's end."""
        ...


CURRENT: ContextVar[Carrier | None] = ContextVar("callbridge_trace", default=None)


class Attempt(Protocol):
    """One webhook delivery attempt's span, open while its request is under way."""

    @property
    def traceparent(self) -> str:
        """What the request carries ("": nothing)."""
        ...

    def done(self, status: int | None, error: str) -> None:
        """The attempt's outcome (an HTTP status, or why there is none), and its span's end."""
        ...


class Deliveries(Protocol):
    """Spans for webhook deliveries (serve's deliverer): each a child of the call's span its body names."""

    def attempt(self, body: str, attributes: Attributes) -> Attempt: ...


def traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    """``00-<trace-id>-<parent-id>-<flags>``: 32 and 16 lower-case hex digits, flags ``01`` when sampled."""
    return f"{VERSION}-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def parse(value: str) -> tuple[int, int, bool] | None:
    """(trace id, parent id, sampled) of a ``traceparent`` of version 00; None if it is no valid one (all-zero ids
    are invalid, §3.2.2.3 and §3.2.2.4)."""
    found = _TRACEPARENT.match(value.strip())
    if found is None:
        return None
    trace_id, span_id = int(found.group(1), 16), int(found.group(2), 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(int(found.group(3), 16) & 1)


def headers(tool: str = "", attributes: Attributes | None = None) -> dict[str, str]:
    """``{"traceparent": ...}`` for a request of the call this task serves (``tool``: the tool it is for, whose span
    takes ``attributes``); ``{}`` when tracing is off or the task serves no call."""
    carrier = CURRENT.get()
    if carrier is None:
        return {}
    value = carrier.traceparent(tool, attributes)
    return {HEADER: value} if value else {}


def post_call_began(asked: bool) -> None:
    """The post-call work (the model's summary and fields when ``asked``, then the checks) of the call this task
    serves begins: a ``post call`` span of its trace; nothing when tracing is off or the task serves no call."""
    carrier = CURRENT.get()
    if carrier is not None:
        carrier.post_call(asked)
