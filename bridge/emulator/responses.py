"""A Realtime session's responses, on the shared :class:`~bridge.emulator.scheduler.ResponseScheduler`: one at a
time, each laid out in time when it is created (docs/protocol.md, "A response"), its events sent as their time
comes, and closed with ``response.done`` when it completes or is cut short (cancelled, failed).

:class:`RealtimeResponses` works on the session's :class:`~bridge.emulator.state.RealtimeState`; what the session
does after a response (GA's idle timeout) it reads from what :meth:`~RealtimeResponses.step_due` returns."""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pybase64

from bridge.emulator.config import ResponseParams
from bridge.emulator.faults import MID_RESPONSE_ERROR, error_type
from bridge.emulator.formats import FORMATS
from bridge.emulator.replies import Output, OutputKind, words
from bridge.emulator.scheduler import CancelledBy, ResponseScheduler, Status, record_response
from bridge.emulator.state import RealtimeState
from bridge.emulator.wire import Id, ResponseInfo, Usage
from bridge.realtime.dialects.common import post_call_form


class StepKind(enum.Enum):
    """One event of a response laid out in time (docs/protocol.md, "A response")."""

    ITEM_ADDED = enum.auto()  # response.output_item.added
    CONV_ADDED = enum.auto()  # conversation.item.added (beta: created)
    PART_ADDED = enum.auto()  # response.content_part.added
    TRANSCRIPT_DELTA = enum.auto()
    AUDIO_DELTA = enum.auto()
    TEXT_DELTA = enum.auto()
    FUNCTION_DELTA = enum.auto()
    AUDIO_DONE = enum.auto()
    TRANSCRIPT_DONE = enum.auto()
    TEXT_DONE = enum.auto()
    FUNCTION_DONE = enum.auto()
    PART_DONE = enum.auto()
    CONV_DONE = enum.auto()  # conversation.item.done (GA)
    ITEM_DONE = enum.auto()  # response.output_item.done
    DONE = enum.auto()  # response.done


MEDIA_DONE = frozenset({StepKind.AUDIO_DONE, StepKind.TRANSCRIPT_DONE, StepKind.TEXT_DONE, StepKind.PART_DONE})


@dataclass(order=True)
class Step:
    t: float
    seq: int
    kind: StepKind = field(compare=False)
    index: int = field(compare=False, default=0)
    payload: Any = field(compare=False, default=None)


@dataclass
class Run:
    """A response in flight."""

    id: str
    number: int
    t0: float
    out_of_band: bool
    voice: str
    format_key: str
    modality: str
    metadata: Mapping[str, Any] | None
    outputs: list[Output]
    instructions: str | None = None
    steps: deque[Step] = field(default_factory=deque)
    deltas: int = 0

    def next_t(self) -> float:
        return self.steps[0].t if self.steps else math.inf


class RealtimeResponses(ResponseScheduler[Run]):
    def __init__(self, state: RealtimeState) -> None:
        super().__init__(state.core)
        self.state = state
        self.wire = state.wire

    def next_t(self) -> float:
        return self.active.next_t() if self.active else math.inf

    def step_due(self) -> float | None:
        """The active response's next step (the session's clock says it is due). When it completes an in-band
        response that spoke: the audio it sent (ms), from which GA's idle timeout counts."""
        assert self.active is not None
        return self._step(self.active, self.active.steps.popleft())

    def start(self, params: ResponseParams, t: float) -> None:
        state = self.state
        number = self.number()
        view = state.view
        format_key = params.output_format or view.output_format
        modality = (params.output_modalities or view.output_modalities)[0]
        run = Run(
            id=state.core.ids.new(Id.RESPONSE),
            number=number,
            t0=t,
            out_of_band=params.out_of_band,
            voice=params.voice or view.voice,
            format_key=format_key,
            modality=modality,
            metadata=params.metadata,
            outputs=state.replies.plan(params, modality, FORMATS[format_key]),
            instructions=params.instructions,
        )
        self._schedule(run, t)
        self.active = run
        send = state.core.send
        send(self.wire.event("response.created", response=self._response(run, Status.IN_PROGRESS)), t)
        if self.wire.shape.rate_limits_on_created:
            send(self.wire.rate_limits(self.wire.shape.rate_limits_on_created, 0), t)

    def cancel(self, run: Run, by: CancelledBy, t: float) -> None:
        """Cut ``run`` short: the client cancelled it or the caller spoke over it (``turn_detected``)."""
        self.cancelled(run.id, by, t)
        reason = "client_cancelled" if by is CancelledBy.CLIENT else str(by)
        self.end(run, Status.CANCELLED, {"type": "cancelled", "reason": reason}, t)

    def _schedule(self, run: Run, t0: float) -> None:
        """Lay out the response's events in time (docs/protocol.md, "A response")."""
        s = self.settings
        steps: list[Step] = []

        def add(t: float, kind: StepKind, index: int = 0, payload: Any = None) -> None:
            steps.append(Step(t, len(steps), kind, index, payload))

        t = self.latency(t0)
        if run.out_of_band and post_call_form(run.instructions) is not None:  # the post-call question: slower
            t += s.scaled(s.post_call_delay_ms)
        first_delay = self.first_delta_delay()
        d = s.scaled(s.delta_ms)
        in_conv = not run.out_of_band
        for out in run.outputs:
            add(t, StepKind.ITEM_ADDED, out.index)
            if in_conv:
                add(t, StepKind.CONV_ADDED, out.index)
            if out.kind is OutputKind.FUNCTION_CALL:
                cut = max(1, len(out.arguments) // 2)
                for piece in (out.arguments[:cut], out.arguments[cut:]):
                    if piece:
                        add(t, StepKind.FUNCTION_DELTA, out.index, piece)
                add(t, StepKind.FUNCTION_DONE, out.index)
            else:
                add(t, StepKind.PART_ADDED, out.index)
                if out.speech is not None:
                    t += first_delay
                    first_delay = 0.0
                    for k, said in enumerate(out.speech.words):
                        for w in said:
                            add(t, StepKind.TRANSCRIPT_DELTA, out.index, w)
                        add(t, StepKind.AUDIO_DELTA, out.index, k)
                        t += d
                    add(t, StepKind.AUDIO_DONE, out.index)
                    add(t, StepKind.TRANSCRIPT_DONE, out.index)
                else:
                    for w in words(out.text):
                        add(t, StepKind.TEXT_DELTA, out.index, w)
                        t += d
                    add(t, StepKind.TEXT_DONE, out.index)
                add(t, StepKind.PART_DONE, out.index)
            if in_conv and self.wire.shape.item_done_event:
                add(t, StepKind.CONV_DONE, out.index)
            add(t, StepKind.ITEM_DONE, out.index)
        add(t, StepKind.DONE)
        run.steps = deque(sorted(steps))

    def _response(
        self,
        run: Run,
        status: Status,
        details: Mapping[str, Any] | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        output = (
            tuple(self._item_state(o) for o in run.outputs if o.started) if status is not Status.IN_PROGRESS else ()
        )
        return self.wire.response(
            ResponseInfo(
                id=run.id,
                status=status,
                conversation_id=None if run.out_of_band else self.state.conversation_id,
                output_modalities=(run.modality,),
                voice=run.voice,
                output_format=self.state.cfg.format_value(run.format_key),
                output=output,
                status_details=details,
                usage=usage,
                metadata=run.metadata,
            )
        )

    def _item_state(self, out: Output) -> dict[str, Any]:
        if out.kind is OutputKind.FUNCTION_CALL:
            return {
                "id": out.item_id,
                "type": "function_call",
                "status": out.status,
                "name": out.name,
                "call_id": out.call_id,
                "arguments": out.arguments if out.finished and out.status is Status.COMPLETED else "",
            }
        content: list[dict[str, Any]] = []
        if out.part_open or out.finished:
            if out.modality == "audio":
                content = [{"type": self.wire.content_type("audio"), "transcript": out.sent_text}]
            else:
                content = [{"type": self.wire.content_type("text"), "text": out.sent_text}]
        return {"id": out.item_id, "type": "message", "status": out.status, "role": "assistant", "content": content}

    @staticmethod
    def _part(out: Output) -> dict[str, Any]:
        # response.content_part.* parts are typed "audio" / "text" in both dialects
        if out.modality == "audio":
            return {"type": "audio", "transcript": out.sent_text}
        return {"type": "text", "text": out.sent_text}

    def _step(self, run: Run, step: Step) -> float | None:
        t, kind = step.t, step.kind
        if kind is StepKind.DONE:
            return self.end(run, Status.COMPLETED, None, t)
        out = run.outputs[step.index]
        if kind in MEDIA_DONE:
            self._media_done(run, out, kind, t)
        elif kind is StepKind.CONV_DONE:
            out.finished, out.status = True, Status.COMPLETED
            self._conv_done(out, t)
        elif kind is StepKind.ITEM_DONE:
            out.finished, out.status = True, Status.COMPLETED
            self._item_done(run, out, t)
        else:
            self._step_out(run, out, step)
        return None

    def _step_out(self, run: Run, out: Output, step: Step) -> None:
        """A step that opens an output or sends a piece of it."""
        t, kind = step.t, step.kind
        common = {"response_id": run.id, "item_id": out.item_id, "output_index": out.index}
        w, send = self.wire, self.state.core.send
        if kind is StepKind.ITEM_ADDED:
            out.started = True
            item = w.item(self._item_state(out))
            send(w.event("response.item_added", response_id=run.id, output_index=out.index, item=item), t)
        elif kind is StepKind.CONV_ADDED:
            previous = self.state.conversation.last()
            item = self._item_state(out)
            self.state.conversation.insert(item)
            send(w.event("item.added", previous_item_id=previous, item=w.item(item)), t)
        elif kind is StepKind.PART_ADDED:
            out.part_open = True
            send(w.event("response.part_added", **common, content_index=0, part=self._part(out)), t)
        elif kind is StepKind.TRANSCRIPT_DELTA:
            out.sent_text += step.payload
            send(w.event("audio_transcript.delta", **common, content_index=0, delta=step.payload), t)
        elif kind is StepKind.TEXT_DELTA:
            out.sent_text += step.payload
            send(w.event("text.delta", **common, content_index=0, delta=step.payload), t)
            self._delta_sent(run, out, t)
        elif kind is StepKind.AUDIO_DELTA:
            assert out.speech is not None
            self._audio_out(run, out, out.speech.chunk_ms[step.payload])
            delta = pybase64.b64encode_as_string(out.speech.chunks[step.payload])
            send(w.event("audio.delta", **common, content_index=0, delta=delta), t)
            self._delta_sent(run, out, t)
        elif kind is StepKind.FUNCTION_DELTA:
            send(w.event("response.function_delta", **common, call_id=out.call_id, delta=step.payload), t)
        elif kind is StepKind.FUNCTION_DONE:
            named = {"name": out.name} if w.shape.name_on_function_done else {}
            send(w.event("response.function_done", **common, call_id=out.call_id, **named, arguments=out.arguments), t)

    def _media_done(self, run: Run, out: Output, kind: StepKind, t: float) -> None:
        """The end of an output's audio, transcript, text or content part."""
        common = {"response_id": run.id, "item_id": out.item_id, "output_index": out.index}
        w, send = self.wire, self.state.core.send
        if kind is StepKind.AUDIO_DONE:
            out.media_done = True
            send(w.event("audio.done", **common, content_index=0), t)
        elif kind is StepKind.TRANSCRIPT_DONE:
            out.transcript_done = True
            send(w.event("audio_transcript.done", **common, content_index=0, transcript=out.sent_text), t)
        elif kind is StepKind.TEXT_DONE:
            out.media_done = out.transcript_done = True
            send(w.event("text.done", **common, content_index=0, text=out.sent_text), t)
        else:
            out.part_open = False
            send(w.event("response.part_done", **common, content_index=0, part=self._part(out)), t)

    def _audio_out(self, run: Run, out: Output, ms: float) -> None:
        """``ms`` more of ``out``'s audio went out (what a truncate may cut back to, for an item in the
        conversation)."""
        out.sent_ms += ms
        if not run.out_of_band:
            self.state.conversation.audio_ms[out.item_id] = out.sent_ms

    def _conv_done(self, out: Output, t: float) -> None:
        item = self._item_state(out)
        conversation = self.state.conversation
        conversation.update(item)
        previous = conversation.before(out.item_id)
        self.state.core.send(self.wire.event("item.done", previous_item_id=previous, item=self.wire.item(item)), t)

    def _item_done(self, run: Run, out: Output, t: float) -> None:
        item = self._item_state(out)
        self.state.conversation.update(item)
        event = self.wire.event(
            "response.item_done", response_id=run.id, output_index=out.index, item=self.wire.item(item)
        )
        self.state.core.send(event, t)

    def _delta_sent(self, run: Run, out: Output, t: float) -> None:
        run.deltas += 1
        if self.fault_due(run.deltas):
            self.fire_faults(run.number, _DeltaFaults(self, run, out), t)

    def end(self, run: Run, status: Status, details: Mapping[str, Any] | None, t: float) -> float | None:
        """Close what is open (incomplete unless completed), then response.done. The audio sent (ms) when it
        completed in the conversation with some, else None."""
        if self.active is not run:
            return None
        self.active = None
        run.steps.clear()
        for out in run.outputs:
            if out.started and not out.finished:
                self._cut(run, out, t)
        audio_ms = sum(o.sent_ms for o in run.outputs)
        usage = self.wire.usage(
            Usage(
                input_text=len(self.state.view.instructions) // 4 + 10,
                input_audio=int(self.state.input.appended_ms / 100),
                output_text=sum(len(o.sent_text.split()) for o in run.outputs),
                output_audio=int(audio_ms / 50),
            )
        )
        event = self.wire.event("response.done", response=self._response(run, status, details, usage))
        self.state.core.send(event, t)
        outputs = [
            {
                "type": o.kind,
                "item_id": o.item_id,
                "text": o.sent_text,
                "audio_ms": o.sent_ms,
                "name": o.name,
                "arguments": o.arguments,
                "call_id": o.call_id,
            }
            for o in run.outputs
            if o.started
        ]
        reason = (details or {}).get("reason")
        record_response(self.core.record, run.id, run.number, status, reason, outputs, out_of_band=run.out_of_band)
        self._rate_limits_after(usage["total_tokens"], t)
        spoke = status is Status.COMPLETED and audio_ms > 0 and not run.out_of_band
        return audio_ms if spoke else None

    def _cut(self, run: Run, out: Output, t: float) -> None:
        """An output the response ends before it is done: what is open closes, and it is incomplete."""
        out.status = Status.INCOMPLETE
        if out.kind is OutputKind.MESSAGE and out.part_open:
            if out.modality == "audio":
                if not out.media_done:
                    self._media_done(run, out, StepKind.AUDIO_DONE, t)
                if not out.transcript_done:
                    self._media_done(run, out, StepKind.TRANSCRIPT_DONE, t)
            elif not out.media_done:
                self._media_done(run, out, StepKind.TEXT_DONE, t)
            self._media_done(run, out, StepKind.PART_DONE, t)
        out.finished = True
        if not run.out_of_band and self.wire.shape.item_done_event:
            self._conv_done(out, t)
        self._item_done(run, out, t)

    def _rate_limits_after(self, tokens: Any, t: float) -> None:
        """GA: ``rate_limits.updated`` a little after ``response.done``."""
        w, core = self.wire, self.state.core
        if w.shape.rate_limits_after_done and not core.closed:
            at = t + self.settings.scaled(self.settings.rate_limits_delay_ms)
            core.at(at, lambda tt: core.send(w.rate_limits(w.shape.rate_limits_after_done, tokens), tt))


class _DeltaFaults:
    """The per-delta faults as a Realtime response shows them, in the output being sent."""

    def __init__(self, responses: RealtimeResponses, run: Run, out: Output) -> None:
        self.responses, self.run, self.out = responses, run, out
        self.common = {"response_id": run.id, "item_id": out.item_id, "output_index": out.index, "content_index": 0}

    def unknown_event(self, t: float) -> None:
        core = self.responses.state.core
        core.send({"type": "response.emulator_unknown.delta", "event_id": core.ids.new(Id.EVENT), **self.common}, t)

    def invalid_base64_delta(self, t: float) -> None:
        responses = self.responses
        responses.state.core.send(responses.wire.event("audio.delta", **self.common, delta="!!not*base64!!"), t)

    def oversized_delta(self, t: float) -> None:
        if self.out.modality != "audio":
            return
        responses = self.responses
        audio = responses.oversized_audio(FORMATS[self.run.format_key])
        responses._audio_out(self.run, self.out, responses.settings.faults.oversized_delta_ms)
        delta = pybase64.b64encode_as_string(audio)
        responses.state.core.send(responses.wire.event("audio.delta", **self.common, delta=delta), t)

    def fail(self, t: float) -> None:
        code = self.responses.settings.faults.error_code
        kind = error_type(code)
        self.responses.state.core.error(code, MID_RESPONSE_ERROR, t, error_type=kind)
        details = {"type": "failed", "error": {"type": kind, "code": code}}
        self.responses.end(self.run, Status.FAILED, details, t)
