"""A Live session's backend (``responses`` delegation): the model hands a task to it, and its Responses stream
comes back in ``response.event`` envelopes (the tool call in ``response.output_item.done``).
``response.item.create`` answers a call, and ``response.create``, once every call of that response has its output,
continues the backend, whose answer the model reads out.

:class:`LiveBackend` works on the session's :class:`~bridge.emulator.state.LiveState`; the answer it owes after a
``response.create`` it returns, and the session has the model say it when its latency has passed."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from bridge.emulator import rules
from bridge.emulator.annotations import ToolCall
from bridge.emulator.config import value_at
from bridge.emulator.scheduler import Status, record_response
from bridge.emulator.state import DelegationType, LiveState
from bridge.emulator.wire import Id
from bridge.realtime.dialects.schema import ClientError


@dataclass
class Delegation:
    id: str
    response_id: str
    calls: list[str] = field(default_factory=list)  # call ids of its latest response
    outputs: dict[str, str] = field(default_factory=dict)  # call id -> output
    waiting: bool = True  # its latest response called tools that await outputs
    after_tool: str | None = None  # the annotation's line once the outputs are back (else they are read out)


class LiveBackend:
    def __init__(self, state: LiveState) -> None:
        self.state = state
        self.wire = state.wire
        self._delegations: dict[str, Delegation] = {}
        self._calls: dict[str, Delegation] = {}
        self._sequence = itertools.count()

    def _responses(self) -> bool:
        return self.state.delegation() == DelegationType.RESPONSES

    def require(self) -> None:
        if not self._responses():
            raise ClientError("invalid_request_error", "This command requires Responses delegation.", "type")

    def has_tool(self, name: str) -> bool:
        tools = value_at(self.state.config, self.state.service.session_paths["tools"]) or ()
        return self._responses() and any(isinstance(tool, Mapping) and tool.get("name") == name for tool in tools)

    # ---------------------------------------------------------------------------------------------------------
    # Client events

    def item_create(self, ev: dict[str, Any]) -> None:
        self.require()
        item = self.state.service.item_schema.check(ev["item"], "item")
        if item["type"] != "function_call_output":
            return  # context for the backend; the emulated backend answers only tool results
        call_id = str(item["call_id"])
        delegation = self._calls.get(call_id)
        if delegation is None:
            raise ClientError("invalid_value", f"Tool call ID '{call_id}' not found.", "item.call_id")
        output = item["output"]
        delegation.outputs[call_id] = output if isinstance(output, str) else orjson.dumps(output).decode()

    def response_create(self) -> tuple[Delegation, str]:
        """The delegation whose tools all have their outputs now, and what the backend answers with them (the
        model reads it out: :meth:`answer`, once the response latency has passed)."""
        self.require()
        waiting = [d for d in self._delegations.values() if d.waiting]
        if not waiting:
            raise ClientError("no_pending_delegation", "No delegated response is waiting for tool results.", "type")
        delegation = waiting[-1]
        missing = [c for c in delegation.calls if c not in delegation.outputs]
        if missing:
            raise ClientError("tool_output_missing", f"No tool output found for function call {missing[0]}.", "type")
        delegation.waiting = False
        outputs = " ".join(delegation.outputs[c] for c in delegation.calls)
        return delegation, delegation.after_tool or rules.result(outputs)

    # ---------------------------------------------------------------------------------------------------------
    # The Responses stream

    def _envelope(self, delegation: Delegation, canonical: str, t: float, **fields: Any) -> None:
        inner = self.wire.inner(canonical, next(self._sequence), **fields)
        self.state.core.send(self.wire.event("response.event", event=inner, delegation_id=delegation.id), t)

    def _response(self, response_id: str, status: Status, tokens: int) -> dict[str, Any]:
        """A Responses ``response`` object as its lifecycle events carry it."""
        responses = value_at(self.state.config, ("delegation", "responses")) or {}
        body: dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "created_at": int(self.state.core.wall0),
            "model": str(responses.get("model") or ""),
            "status": status,
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }
        if status is not Status.IN_PROGRESS:
            body["usage"] = {
                "input_tokens": tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 2 * tokens,
            }
        return body

    def delegate(self, call: ToolCall, t: float, after_tool: str | None = None) -> None:
        """The model hands a task to the backend, which calls a tool and waits for its output."""
        if not self._responses():
            return  # the session delegates to nobody who could call a tool
        state, ids = self.state, self.state.core.ids
        response_id = ids.new(Id.RESPONSE)
        delegation = Delegation(ids.new(Id.DELEGATION), response_id, after_tool=after_tool)
        self._delegations[delegation.id] = delegation
        info = {"id": delegation.id, "target": "responses", "type": "delegation", "response_id": response_id}
        state.core.send(self.wire.event("delegation.created", delegation=info, offset_ms=int(state.out_ms)), t)
        self._envelope(delegation, "created", t, response=self._response(response_id, Status.IN_PROGRESS, 0))
        item_id, call_id = ids.new(Id.FUNCTION_ITEM), ids.new(Id.CALL)
        item = {"id": item_id, "type": "function_call", "call_id": call_id, "name": call.name, "arguments": ""}
        self._envelope(delegation, "item_added", t, output_index=0, item={**item, "status": Status.IN_PROGRESS})
        self._envelope(delegation, "function_delta", t, item_id=item_id, output_index=0, delta=call.arguments)
        self._envelope(delegation, "function_done", t, item_id=item_id, output_index=0, arguments=call.arguments)
        done = {**item, "arguments": call.arguments, "status": Status.COMPLETED}
        self._envelope(delegation, "item_done", t, output_index=0, item=done)
        tokens = len(call.arguments) // 4 + 1
        self._envelope(delegation, "completed", t, response=self._response(response_id, Status.COMPLETED, tokens))
        delegation.calls = [call_id]
        self._calls[call_id] = delegation
        outputs = [{"type": "function_call", "name": call.name, "arguments": call.arguments, "call_id": call_id}]
        record_response(state.core.record, response_id, 0, Status.COMPLETED, None, outputs)

    def answer(self, delegation: Delegation, text: str, t: float) -> None:
        """The backend's next response (with the tools' outputs): a message, ``text``, the model then reads out."""
        ids = self.state.core.ids
        response_id = ids.new(Id.RESPONSE)
        delegation.response_id = response_id
        self._envelope(delegation, "created", t, response=self._response(response_id, Status.IN_PROGRESS, 0))
        item_id = ids.new(Id.MESSAGE_ITEM)
        message = {"id": item_id, "type": "message", "role": "assistant", "status": Status.IN_PROGRESS, "content": []}
        self._envelope(delegation, "item_added", t, output_index=0, item=message)
        fields = {"item_id": item_id, "output_index": 0, "content_index": 0}
        part = {"type": "output_text", "text": "", "annotations": []}
        self._envelope(delegation, "part_added", t, **fields, part=part)
        self._envelope(delegation, "text_delta", t, **fields, delta=text, logprobs=[])
        self._envelope(delegation, "text_done", t, **fields, text=text, logprobs=[])
        self._envelope(delegation, "part_done", t, **fields, part={**part, "text": text})
        done = {**message, "status": Status.COMPLETED, "content": [{**part, "text": text}]}
        self._envelope(delegation, "item_done", t, output_index=0, item=done)
        tokens = len(text) // 4 + 1
        self._envelope(delegation, "completed", t, response=self._response(response_id, Status.COMPLETED, tokens))
