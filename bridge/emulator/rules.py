"""What the emulated model says, whatever the dialect: the scripted rules every dialect's session follows.

A caller's words that ask for a person call ``transfer_to_human`` (when the session has that tool), a goodbye says
goodbye and calls ``end_call`` (when it has that tool), anything else is echoed back; "say 'X'" in instructions (or
Live commentary) says X, and so does the bridge's verbatim request (``bridge.realtime.dialects.common.verbatim``,
whatever quotes X holds); a tool's result is read out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from bridge.realtime.dialects.common import VERBATIM

HUMAN: Final = re.compile(r"\b(human|agent|person|representative|operator|someone real)\b", re.IGNORECASE)
GOODBYE: Final = re.compile(r"\b(good-?\s*bye|bye|hang\s*up)\b", re.IGNORECASE)
SAY: Final = re.compile(r"\bsay\b[:,]?\s*[\"“']([^\"”]+?)[\"”']", re.IGNORECASE)
GOODBYE_LINE: Final = "Thank you for calling. Goodbye!"
STILL_THERE: Final = "Are you still there?"


def answer(transcript: str, has_tool: Callable[[str], bool]) -> tuple[str | None, str | None]:
    """(spoken text, tool name) for what the caller said: transfer, hang up, or echo."""
    if has_tool("transfer_to_human") and HUMAN.search(transcript):
        return None, "transfer_to_human"
    if has_tool("end_call") and GOODBYE.search(transcript):
        return GOODBYE_LINE, "end_call"
    return echo(transcript), None


def echo(heard: str) -> str:
    return f"I heard you say: {heard}."


def said(instructions: str | None) -> str | None:
    """X when the instructions say "say 'X'" (or are the bridge's verbatim request for X)."""
    text = instructions or ""
    if text.startswith(VERBATIM) and text.endswith('"'):
        return text[len(VERBATIM) : -1]
    found = SAY.search(text)
    return found.group(1) if found else None


def result(output: str) -> str:
    """How the model reads out a tool's result."""
    return f"Thanks for waiting. The result is: {output}"
