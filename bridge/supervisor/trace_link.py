"""A call's trace in the console (pure): the link to it in the operator's trace UI (Grafana Tempo, Jaeger,
Honeycomb, ...), made from ``tracing_ui_url``'s template and the ``trace_id`` the worker keeps in the call's hash.

The template was checked at start (``bridge.config.trace_ui_url``: ``http(s)://``, no credentials, no quotes or
brackets); the id is put in only when it is one (32 lower-case hex digits), so what the page links is data the
bridge wrote, never markup. A call with no trace, or a console with no template, gets no link.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

TRACE_ID: Final = re.compile(r"[0-9a-f]{32}")
PLACE: Final = "{trace_id}"  # bridge.config.TRACE_ID_FIELD: where the template takes the id
LINK_FIELD: Final = "trace_url"  # beside the hash's fields in a call's state as the console gets it


def trace_url(template: str, trace_id: str) -> str:
    """The trace's address in the UI; "" when there is no template or ``trace_id`` is no trace id."""
    if not template or TRACE_ID.fullmatch(trace_id) is None:
        return ""
    return template.replace(PLACE, trace_id)


def with_trace_url(template: str, state: Mapping[str, Any]) -> dict[str, Any]:
    """A call's state (its hash) with :data:`LINK_FIELD` added when its trace can be linked."""
    link = trace_url(template, str(state.get("trace_id") or ""))
    return {**state, LINK_FIELD: link} if link else dict(state)
