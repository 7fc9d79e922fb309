"""Personal data out of stored and shown artifacts (a dialplan's ``privacy`` section, :class:`bridge.dialplan.Privacy`).

* :class:`KeyMask`: a run of keys (each within :data:`RUN_GAP_S` of the one before, and no answer of the agent
  played out in full between them) shows its first
  ``dtmf_visible_digits`` keys; every key after those is shown as ``*``. What Redis, the report, the recording's
  events, the console and the logs get is the shown form; no run of more than the visible digits is ever stored.
* The masks of a caller's number, a tool's arguments and output and the transcript's digits are
  :mod:`bridge.privacy.masking`'s (this module names them for the call's parts).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from bridge.privacy.masking import MASK, mask_digit_runs, mask_json, mask_number, mask_value, redact_spoken_digits

__all__ = [
    "MASK",
    "REPLY_BREAK_S",
    "RUN_GAP_S",
    "SENSITIVE",
    "KeyMask",
    "mask_digit_runs",
    "mask_json",
    "mask_number",
    "mask_value",
    "redact_spoken_digits",
]
REPLY_BREAK_S: Final = 1.0  # an answer heard in full this long after the last key ends its run (a menu's next step)
RUN_GAP_S: Final = 3.0  # keys closer together than this are one run (a card number keyed in groups is one run)
SENSITIVE: Final = "[sensitive: not stored]"  # a ``sensitive`` tool's arguments, wherever they would be stored


class KeyMask:
    """The shown form of one call's keys (see the module docstring)."""

    def __init__(self, visible: int, *, gap_s: float = RUN_GAP_S, clock: Callable[[], float] = time.monotonic):
        self.visible = visible
        self.gap_s = gap_s
        self.clock = clock
        self._run = 0
        self._last: float | None = None

    def shown(self, digit: str) -> str:
        now = self.clock()
        if self._last is None or now - self._last > self.gap_s:
            self._run = 0
        self._last = now
        self._run += 1
        return digit if self._run <= self.visible else MASK

    def reply_heard(self) -> None:
        """The agent's answer played out in full: the next key starts a new run (a menu's next choice), unless it
        came within :data:`REPLY_BREAK_S` of the last key (keys typed over short answers stay one run)."""
        if self._last is not None and self.clock() - self._last >= REPLY_BREAK_S:
            self._run = 0

    def keying(self) -> bool:
        """Keys are being entered: a key came within the run gap."""
        return self._last is not None and self.clock() - self._last <= self.gap_s
