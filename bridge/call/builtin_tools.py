"""Tools the call session carries out itself: what each one answers the model, and what it does to the call.

Pure: a tool call becomes a :class:`ToolResult` (the ``function_call_output`` text and an optional action the session
runs once the agent's spoken line has finished playing). Unknown tools and bad arguments get an error output,
never an exception.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class ToolAction(enum.StrEnum):
    """What a tool does to the call once the agent's line has played out."""

    TRANSFER = "transfer"
    HANGUP = "hangup"


@dataclass(frozen=True)
class ToolResult:
    output: dict[str, Any]
    action: ToolAction | None = None
    target: str | None = None

    @property
    def output_json(self) -> str:
        return json.dumps(self.output, separators=(",", ":"))


def _transfer(args: Mapping[str, Any], transfer_target: str | None) -> ToolResult:
    if not transfer_target:
        return ToolResult({"ok": False, "error": "no human agent is configured for this line"})
    return ToolResult(
        {
            "ok": True,
            "status": "transferring",
            "note": "Tell the caller in one short sentence that you are transferring them.",
        },
        action=ToolAction.TRANSFER,
        target=transfer_target,
    )


def _end_call(args: Mapping[str, Any], transfer_target: str | None) -> ToolResult:
    return ToolResult(
        {"ok": True, "note": "Say a one-sentence goodbye; the call ends after it."}, action=ToolAction.HANGUP
    )


TOOLS: Mapping[str, Callable[[Mapping[str, Any], str | None], ToolResult]] = {
    "transfer_to_human": _transfer,
    "end_call": _end_call,
}


def run_tool(name: str, arguments: str, *, enabled: set[str], transfer_target: str | None) -> ToolResult:
    if name not in TOOLS or name not in enabled:
        return ToolResult({"ok": False, "error": f"unknown tool {name!r}"})
    try:
        args = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return ToolResult({"ok": False, "error": "arguments are not valid JSON"})
    if not isinstance(args, dict):
        return ToolResult({"ok": False, "error": "arguments must be a JSON object"})
    return TOOLS[name](args, transfer_target)
