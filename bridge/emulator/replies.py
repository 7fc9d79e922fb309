"""What a Realtime response says: what it answers (the caller's turn, a text item, a tool's output, an idle
timeout) and its outputs (messages with their audio, function calls), from the call script's annotations, the
instructions ("say '...'") and the rules (``rules.py``), in that order."""

from __future__ import annotations

import enum
import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from bridge.emulator import postcall, rules, voice
from bridge.emulator.annotations import Annotations, Reply
from bridge.emulator.config import ResponseParams, SessionView
from bridge.emulator.faults import Settings
from bridge.emulator.formats import WireFormat
from bridge.emulator.scheduler import Status, Utterance
from bridge.emulator.wire import Id, Ids
from bridge.realtime.dialects.common import post_call_form


class ContextKind(enum.Enum):
    """What a response answers: a caller's turn, a user text item, a tool's output, an idle timeout."""

    TURN = enum.auto()
    TEXT = enum.auto()
    FUNCTION_OUTPUT = enum.auto()
    IDLE = enum.auto()


class OutputKind(enum.StrEnum):
    """An output item's ``type`` (the wire's, and the record's)."""

    MESSAGE = "message"
    FUNCTION_CALL = "function_call"


@dataclass
class Context:
    """What the next response answers."""

    kind: ContextKind
    text: str
    reply: Reply | None = None


@dataclass
class Output:
    """One output item of a response, and how far it has gone out."""

    index: int
    kind: OutputKind
    item_id: str
    modality: str = "audio"
    text: str = ""
    speech: Utterance | None = None  # the audio, for an audio message
    name: str = ""
    call_id: str = ""
    arguments: str = ""
    # progress
    started: bool = False
    finished: bool = False
    part_open: bool = False
    media_done: bool = False  # audio (or text) done sent
    transcript_done: bool = False
    sent_text: str = ""
    sent_ms: float = 0.0
    status: Status = Status.IN_PROGRESS


class Replies:
    """What the next response answers, and the outputs that answer it."""

    def __init__(
        self,
        settings: Settings,
        ids: Ids,
        annotations: Annotations,
        view: Callable[[], SessionView],
        lines: Callable[[], list[tuple[str, str]]] = list,
    ) -> None:
        self.settings, self.ids, self.annotations, self._view = settings, ids, annotations, view
        self._lines = lines  # the conversation's words so far: (role, text), in order
        self.context: Context | None = None
        self.had_turn = False  # a caller's turn was committed: no greeting any more
        # "say 'X'" from a system item or newly updated session instructions: the next in-band reply says X
        self.directive: str | None = None
        self.after_tool: str | None = None  # an annotated reply's line for when its tool's result is back

    def plan(self, params: ResponseParams, modality: str, fmt: WireFormat) -> list[Output]:
        """The reply: annotation first, then instructions ("say '...'"), then the rules."""
        ctx = self.context
        form = post_call_form(params.instructions) if params.out_of_band else None
        if form is not None:  # the post-call question: answered from the conversation (bridge/emulator/postcall.py)
            return [self._message(0, postcall.answer(form, self._lines()), modality, fmt, None)]
        if not params.out_of_band:
            self.context = None
        # an out-of-band response says what it is asked to, never the scripted answer to the caller's turn
        reply = ctx.reply if ctx is not None and not params.out_of_band else None
        if ctx is None and not self.had_turn and not params.out_of_band:
            reply = self.annotations.take_greeting()
        text: str | None = reply.text if reply is not None else None
        tool = reply.tool_call if reply is not None else None
        if text is None and tool is None:
            said = rules.said(params.instructions)
            if said is None and self.directive is not None and not params.out_of_band:
                said, self.directive = self.directive, None
            if said is not None:
                text = said
            elif ctx is not None and ctx.kind in (ContextKind.TURN, ContextKind.TEXT):
                text, tool_name = rules.answer(ctx.text, lambda name: self._view().tool(name) is not None)
                if tool_name is not None:
                    args = orjson.dumps({"reason": ctx.text}).decode()
                    outputs = [] if text is None else [self._message(0, text, modality, fmt, reply)]
                    outputs.append(self._function_call(len(outputs), tool_name, args))
                    return outputs
            elif ctx is not None and ctx.kind is ContextKind.FUNCTION_OUTPUT:
                text, self.after_tool = self.after_tool or rules.result(ctx.text), None
            elif ctx is not None and ctx.kind is ContextKind.IDLE:
                text = rules.STILL_THERE
            else:
                heard = self._input_text(params.input)
                text = rules.echo(heard) if heard else self.settings.greeting
        outputs = [] if text is None else [self._message(0, text, modality, fmt, reply)]
        if tool is not None:
            self.after_tool = reply.after_tool if reply is not None else None
            outputs.append(self._function_call(len(outputs), tool.name, tool.arguments))
        elif text is not None and ctx is not None and ctx.kind is ContextKind.TURN and self._says_preambles(params):
            # gpt-realtime-2 and later: a short preamble, then the answer, as two message items of one response
            preamble = self._message(0, self.settings.preamble, modality, fmt, None)
            outputs = [preamble, self._message(1, text, modality, fmt, reply)]
        return outputs

    def _says_preambles(self, params: ResponseParams) -> bool:
        patterns = [p.strip() for p in self.settings.preamble_models.split(",") if p.strip()]
        model_ok = any(fnmatch.fnmatchcase(self._view().model, p) for p in patterns)
        return bool(self.settings.preamble) and model_ok and not params.out_of_band and not params.instructions

    @staticmethod
    def _input_text(items: tuple[Any, ...] | None) -> str:
        texts = []
        for item in items or ():
            if isinstance(item, Mapping):
                for c in item.get("content") or ():
                    if isinstance(c, Mapping) and isinstance(c.get("text"), str):
                        texts.append(c["text"])
        return " ".join(texts).strip()

    def _message(self, index: int, text: str, modality: str, fmt: WireFormat, reply: Reply | None) -> Output:
        out = Output(index=index, kind=OutputKind.MESSAGE, item_id=self.ids.new(Id.ITEM), modality=modality, text=text)
        if modality == "audio":
            pcm = voice.speak(self.settings, text, fmt.rate, reply)
            out.speech = Utterance.of(pcm, fmt, self.settings.delta_ms, words(text))
        return out

    def _function_call(self, index: int, name: str, arguments: str) -> Output:
        return Output(
            index=index,
            kind=OutputKind.FUNCTION_CALL,
            item_id=self.ids.new(Id.ITEM),
            name=name,
            call_id=self.ids.new(Id.CALL),
            arguments=arguments,
        )


def words(text: str) -> list[str]:
    """A Realtime reply's transcript deltas: each word with the space after it."""
    return re.findall(r"\S+\s*", text) or [text]
