"""Personal data out of stored and shown artifacts (a dialplan's ``privacy`` section, :class:`bridge.dialplan.Privacy`).

* :class:`KeyMask`: a run of keys (each within :data:`RUN_GAP_S` of the one before, and no answer of the agent
  played out in full between them) shows its first
  ``dtmf_visible_digits`` keys; every key after those is shown as ``*``. What Redis, the report, the recording's
  events, the console and the logs get is the shown form; no run of more than the visible digits is ever stored.
* :func:`mask_number`: a caller's number with all but its last digits replaced by ``*``.
* :func:`redact_spoken_digits`: the transcript hook: a run of digits said as words ("four one one one ...") or
  written as numerals, longer than the visible digits, becomes ``****``.
* :func:`mask_digit_runs`, :func:`mask_json`: a tool's arguments and output as stored and shown, masked as keys are
  (``dtmf_visible_digits``): in every run of digits (a space or a dash between two digits keeps the run going),
  each digit after the first visible ones is ``*``; in JSON, every string and every number (a number with more
  digits than the visible becomes a masked string); the keys stay.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Final

MASK: Final = "*"
REPLY_BREAK_S: Final = 1.0  # an answer heard in full this long after the last key ends its run (a menu's next step)
RUN_GAP_S: Final = 3.0  # keys closer together than this are one run (a card number keyed in groups is one run)

_WORDS: Final = {
    "zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "double": "", "triple": "",
}  # fmt: skip
_TOKEN = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]+|\s+")
_JOINERS = frozenset({",", "-", "/"})
_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d)*")
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


def mask_number(number: str, visible: int | None) -> str:
    """``number`` with every digit but the last ``visible`` as ``*`` (``None``: unchanged); other characters
    (``+``, ``sip:``, the host) stay."""
    if visible is None:
        return number
    user, at, host = number.partition("@")
    digits = sum(c.isdigit() for c in user)
    keep = digits - visible
    out = []
    for c in user:
        if c.isdigit():
            out.append(c if keep <= 0 else MASK)
            keep -= 1
        else:
            out.append(c)
    return "".join(out) + at + host


def redact_spoken_digits(text: str, visible: int) -> str:
    """``text`` with every run of more than ``visible`` digits (words or numerals, separated by spaces, commas or
    dashes) replaced by ``****``."""
    tokens = _TOKEN.findall(text)
    out: list[str] = []
    run: list[str] = []  # the tokens of the current run (digits and what separates them)
    digits = 0

    def close() -> None:
        nonlocal digits
        tail: list[str] = []
        while run and _digit_count(run[-1]) is None:  # separators after the last digit are not the run's
            tail.insert(0, run.pop())
        out.extend([MASK * 4] if digits > visible else run)
        out.extend(tail)
        run.clear()
        digits = 0

    for token in tokens:
        count = _digit_count(token)
        if count is not None:
            run.append(token)
            digits += count
        elif run and (token.isspace() or token.strip() in _JOINERS):
            run.append(token)
        else:
            if run:
                close()
            out.append(token)
    if run:
        close()
    return "".join(out)


def _digit_count(token: str) -> int | None:
    if token.isdigit():
        return len(token)
    word = _WORDS.get(token.lower())
    return None if word is None else len(word)


def mask_digit_runs(text: str, visible: int) -> str:
    """``text`` with every digit after the first ``visible`` of each run of digits shown as ``*``."""

    def one(run: re.Match[str]) -> str:
        seen, out = 0, []
        for c in run.group(0):
            seen += c.isdigit()
            out.append(MASK if c.isdigit() and seen > visible else c)
        return "".join(out)

    return _DIGIT_RUN.sub(one, text)


def mask_value(value: object, visible: int) -> object:
    """A parsed JSON value with its digit runs masked (strings and numbers; the keys stay)."""
    if isinstance(value, str):
        return mask_digit_runs(value, visible)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        shown = mask_digit_runs(repr(value), visible)
        return value if shown == repr(value) else shown
    if isinstance(value, list):
        return [mask_value(v, visible) for v in value]
    if isinstance(value, dict):
        return {k: mask_value(v, visible) for k, v in value.items()}
    return value


def mask_json(text: str, visible: int) -> str:
    """A tool's arguments or output (JSON text, or any text) with its digit runs masked (module docstring)."""
    try:
        value = json.loads(text)
    except ValueError:
        return mask_digit_runs(text, visible)
    return json.dumps(mask_value(value, visible), ensure_ascii=False)
