"""schemathesis's hooks for the supervisor API (``SCHEMATHESIS_HOOKS``): the string formats the description names
that are the API's own, generated as the API gives them."""

from __future__ import annotations

import schemathesis
from hypothesis import strategies as st

from bridge.store.ended import Cursor
from bridge.supervisor.ended import CURSOR_FORMAT

# a former answer's `next`: a time and a call id
schemathesis.openapi.format(
    CURSOR_FORMAT,
    st.builds(lambda t, call_id: Cursor(t, call_id).text(), st.floats(0, 4e9), st.text(max_size=40)),
)
