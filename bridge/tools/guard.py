"""What a plan keeps out of the model's reach in one call (pure: no I/O).

* **Pins** (``pin`` of an HTTP tool or an MCP server): an argument set by the bridge from the call's context
  (:class:`~bridge.tools.context.CallContext`) on every call. The model does not see it (its schema lacks it); a
  value the model sends for it anyway is discarded (:func:`strip_pinned`: named in the log, counted, never sent).
* **Verification first** (``verify_before`` of a tool or an MCP server, and the plan's ``checks.verify_before``): a
  tool that waits for a verifying tool is not called until that tool succeeded in this call; a pin on
  ``verified.<field>`` waits for a verification that returned it. Until then the model gets
  ``{"ok": false, "error": {"type": "unverified", ...}}`` saying to verify the caller first (:meth:`Guard.refusal`).
* **Verifying** (the plan's ``verifiers``: tool -> the fields of its answer it keeps): a call succeeded when its
  outcome is ``ok`` and its answer says neither ``"ok": false`` nor ``"verified": false`` and has every kept field
  (:meth:`Guard.settle`); those fields are the context's ``verified``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.tools.context import CallContext, Form
from bridge.tools.spec import HttpTool, McpServer, ToolOutcome

log = logging.getLogger("bridge.tools")


def strip_pinned(arguments: str, pinned: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """``arguments`` (the model's JSON) without the pinned names, and the names it carried (discarded). Arguments that
    are not a JSON object are left as they are, for the schema's check to refuse."""
    names = set(pinned)
    if not names:
        return arguments, ()
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        return arguments, ()
    if not isinstance(args, dict):
        return arguments, ()
    found = tuple(sorted(names & set(args)))
    if not found:
        return arguments, ()
    return json.dumps({k: v for k, v in args.items() if k not in names}), found


def fill_pins(
    args: dict[str, Any], pins: Mapping[str, str], context: CallContext, form: Form
) -> tuple[dict[str, Any], list[str]]:
    """``args`` with each pinned argument set from ``context``, and the context paths that have no value yet."""
    out, missing = dict(args), []
    for name, path in pins.items():
        found, value = context.value(path, form)
        if found:
            out[name] = value
        else:
            missing.append(path)
    return out, missing


def answer_fields(answer: Any, keep: Iterable[str]) -> dict[str, Any] | None:
    """The kept fields of a verifying tool's ``answer``; None if it did not verify (not an object, ``ok`` or
    ``verified`` false, or a kept field missing)."""
    if not isinstance(answer, dict) or answer.get("ok") is False or answer.get("verified") is False:
        return None
    fields = {name: answer.get(name) for name in keep}
    return None if any(v is None for v in fields.values()) else fields


@dataclass
class Guard:
    """One call's verifications: ``needs`` (tool -> the verifying tools it waits for), ``keeps`` (a verifying tool ->
    the fields of its answer the context keeps)."""

    context: CallContext
    needs: Mapping[str, tuple[str, ...]]
    keeps: Mapping[str, tuple[str, ...]]

    def verifying(self, name: str) -> bool:
        return name in self.keeps or any(name in v for v in self.needs.values())

    def waits_for(self, name: str, pins: Mapping[str, str], also: Iterable[str] = ()) -> list[str]:
        """The verifying tools ``name`` still waits for: those it needs (``also``: its MCP server's) that have not
        succeeded, and for each pin on ``verified.<field>`` with no value yet, the tools that keep that field."""
        passed = self.context.passed
        wanted = [v for v in (*self.needs.get(name, ()), *also) if v not in passed and v != name]
        for path in pins.values():
            field = path.removeprefix("verified.")
            if path.startswith("verified.") and self.context.verified.get(field) is None:
                wanted += [tool for tool, kept in self.keeps.items() if field in kept] or ["a verification"]
        return list(dict.fromkeys(wanted))

    def refusal(self, name: str, pins: Mapping[str, str], also: Iterable[str] = ()) -> ToolOutcome | None:
        """The ``unverified`` result the model gets instead of calling ``name``, or None: it may be called."""
        wanted = self.waits_for(name, pins, also)
        if not wanted:
            return None
        first = " or ".join(wanted)
        log.warning("tool %s: not called, the caller is not verified yet (it waits for %s)", name, first)
        message = (
            f"{name} was not called: the caller must be verified first. Ask the caller for what {first} needs, "
            f"call {first}, and call {name} again once the caller is verified."
        )
        return dataclasses.replace(ToolOutcome.failed("unverified", message), waits_for=tuple(wanted))

    def settle(self, name: str, outcome: ToolOutcome) -> bool:
        """A verifying tool's call ended: True (and the context keeps its fields) if it verified the caller."""
        if not self.verifying(name) or not outcome.ok:
            return False
        fields = answer_fields(outcome.answer, self.keeps.get(name, ()))
        if fields is None:
            log.info("tool %s did not verify the caller", name)
            return False
        self.context.verify(name, fields)
        log.info("tool %s verified the caller", name)
        return True


def plan_errors(
    http_tools: Sequence[HttpTool],
    mcp_servers: Sequence[McpServer],
    verifiers: Mapping[str, Sequence[str]],
    known: set[str],
) -> list[tuple[str, str]]:
    """(field, message) of each pin on a ``verified.<field>`` no verifying tool keeps, and (in a plan without MCP
    servers, whose tools are known only at a call's start) each ``verify_before`` or verifier that names no tool of
    the plan (``known``)."""
    kept = {name for fields in verifiers.values() for name in fields}
    names = f"(known: {sorted(known)})"
    found: list[tuple[str, str]] = []
    owners: list[tuple[str, HttpTool | McpServer]] = [(f"http_tools[{i}]", t) for i, t in enumerate(http_tools)]
    owners += [(f"mcp_servers[{i}]", m) for i, m in enumerate(mcp_servers)]
    for where, owner in owners:
        for argument, path in owner.pin.items():
            field = path.removeprefix("verified.")
            if path.startswith("verified.") and field not in kept:
                message = f"{path}: no tool of the plan's verifiers keeps {field} (verifiers: {{TOOL: [{field}]}})"
                found.append((f"{where}.pin.{argument}", message))
        if not mcp_servers and owner.verify_before is not None and owner.verify_before not in known:
            found.append((f"{where}.verify_before", f"{owner.verify_before!r} is not a tool of this plan {names}"))
    if not mcp_servers:
        found += [(f"verifiers.{v}", f"{v!r} is not a tool of this plan {names}") for v in verifiers if v not in known]
    return found
