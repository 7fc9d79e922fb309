"""A Realtime session's responses, on the shared :class:`~bridge.emulator.scheduler.ResponseScheduler`: one at a
time, each laid out in time when it is created (docs/protocol.md, "A response"), its events sent as their time
comes, and closed with ``response.done`` when it completes or is cut short (cancelled, failed)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pybase64

from bridge.emulator.config import ResponseParams
from bridge.emulator.faults import MID_RESPONSE_ERROR, error_type
from bridge.emulator.formats import FORMATS
from bridge.emulator.replies import Output, words
from bridge.emulator.scheduler import ResponseScheduler
from bridge.emulator.wire import ResponseInfo, Usage

if TYPE_CHECKING:
    from bridge.emulator.session import EmulatorSession


@dataclass(order=True)
class Step:
    t: float
    seq: int
    kind: str = field(compare=False)
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
    steps: deque[Step] = field(default_factory=deque)
    deltas: int = 0

    def next_t(self) -> float:
        return self.steps[0].t if self.steps else math.inf


class RealtimeResponses(ResponseScheduler[Run]):
    def __init__(self, session: EmulatorSession) -> None:
        super().__init__(session)
        self.rt = session
        self.wire = session.wire

    def next_t(self) -> float:
        return self.active.next_t() if self.active else math.inf

    def step_due(self) -> None:
        """The active response's next step (the session's clock says it is due)."""
        assert self.active is not None
        self._step(self.active, self.active.steps.popleft())

    def start(self, params: ResponseParams, t: float) -> None:
        rt = self.rt
        rt.turns.cancel_idle()
        number = self.number()
        view = rt.view
        format_key = params.output_format or view.output_format
        modality = (params.output_modalities or view.output_modalities)[0]
        run = Run(
            id=rt.ids.response(),
            number=number,
            t0=t,
            out_of_band=params.out_of_band,
            voice=params.voice or view.voice,
            format_key=format_key,
            modality=modality,
            metadata=params.metadata,
            outputs=rt.replies.plan(params, modality, FORMATS[format_key]),
        )
        self._schedule(run, t)
        self.active = run
        rt.send(self.wire.event("response.created", response=self._response(run, "in_progress")), t)
        if self.wire.shape.rate_limits_on_created:
            rt.send(self.wire.rate_limits(self.wire.shape.rate_limits_on_created, 0), t)

    def cancel(self, run: Run, by: str, t: float) -> None:
        """Cut ``run`` short: the client cancelled it or the caller spoke over it (``turn_detected``)."""
        self.cancelled(run.id, by, t)
        self.end(run, "cancelled", {"type": "cancelled", "reason": "client_cancelled" if by == "client" else by}, t)

    def _schedule(self, run: Run, t0: float) -> None:
        """Lay out the response's events in time (docs/protocol.md, "A response")."""
        s = self.settings
        steps: list[Step] = []

        def add(t: float, kind: str, index: int = 0, payload: Any = None) -> None:
            steps.append(Step(t, len(steps), kind, index, payload))

        t = self.latency(t0)
        first_delay = self.first_delta_delay()
        d = s.scaled(s.delta_ms)
        in_conv = not run.out_of_band
        for out in run.outputs:
            add(t, "item_added", out.index)
            if in_conv:
                add(t, "conv_added", out.index)
            if out.kind == "function_call":
                cut = max(1, len(out.arguments) // 2)
                for piece in (out.arguments[:cut], out.arguments[cut:]):
                    if piece:
                        add(t, "fdelta", out.index, piece)
                add(t, "fdone", out.index)
            else:
                add(t, "part_added", out.index)
                if out.speech is not None:
                    t += first_delay
                    first_delay = 0.0
                    for k, said in enumerate(out.speech.words):
                        for w in said:
                            add(t, "tdelta", out.index, w)
                        add(t, "adelta", out.index, k)
                        t += d
                    add(t, "adone", out.index)
                    add(t, "tdone", out.index)
                else:
                    for w in words(out.text):
                        add(t, "xdelta", out.index, w)
                        t += d
                    add(t, "xdone", out.index)
                add(t, "part_done", out.index)
            if in_conv and self.wire.shape.item_done_event:
                add(t, "conv_done", out.index)
            add(t, "item_done", out.index)
        add(t, "done")
        run.steps = deque(sorted(steps))

    def _response(
        self,
        run: Run,
        status: str,
        details: Mapping[str, Any] | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        output = tuple(self._item_state(o) for o in run.outputs if o.started) if status != "in_progress" else ()
        return self.wire.response(
            ResponseInfo(
                id=run.id,
                status=status,
                conversation_id=None if run.out_of_band else self.rt.conversation_id,
                output_modalities=(run.modality,),
                voice=run.voice,
                output_format=self.rt.cfg.format_value(run.format_key),
                output=output,
                status_details=details,
                usage=usage,
                metadata=run.metadata,
            )
        )

    def _item_state(self, out: Output) -> dict[str, Any]:
        if out.kind == "function_call":
            return {
                "id": out.item_id,
                "type": "function_call",
                "status": out.status,
                "name": out.name,
                "call_id": out.call_id,
                "arguments": out.arguments if out.finished and out.status == "completed" else "",
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

    def _step(self, run: Run, step: Step) -> None:
        t, kind = step.t, step.kind
        if kind == "done":
            self.end(run, "completed", None, t)
            return
        out = run.outputs[step.index]
        common = {"response_id": run.id, "item_id": out.item_id, "output_index": out.index}
        w, send = self.wire, self.rt.send
        if kind == "item_added":
            out.started = True
            item = w.item(self._item_state(out))
            send(w.event("response.item_added", response_id=run.id, output_index=out.index, item=item), t)
        elif kind == "conv_added":
            previous = self.rt.conversation.last()
            item = self._item_state(out)
            self.rt.conversation.insert(item)
            send(w.event("item.added", previous_item_id=previous, item=w.item(item)), t)
        elif kind == "part_added":
            out.part_open = True
            send(w.event("response.part_added", **common, content_index=0, part=self._part(out)), t)
        elif kind == "tdelta":
            out.sent_text += step.payload
            send(w.event("audio_transcript.delta", **common, content_index=0, delta=step.payload), t)
        elif kind == "xdelta":
            out.sent_text += step.payload
            send(w.event("text.delta", **common, content_index=0, delta=step.payload), t)
            self._delta_sent(run, out, t)
        elif kind == "adelta":
            assert out.speech is not None
            self._audio_out(run, out, out.speech.chunk_ms[step.payload])
            delta = pybase64.b64encode_as_string(out.speech.chunks[step.payload])
            send(w.event("audio.delta", **common, content_index=0, delta=delta), t)
            self._delta_sent(run, out, t)
        elif kind in ("adone", "tdone", "xdone", "part_done"):
            self._media_done(out, kind, common, t)
        elif kind == "fdelta":
            send(w.event("response.function_delta", **common, call_id=out.call_id, delta=step.payload), t)
        elif kind == "fdone":
            named = {"name": out.name} if w.shape.name_on_function_done else {}
            send(w.event("response.function_done", **common, call_id=out.call_id, **named, arguments=out.arguments), t)
        elif kind == "conv_done":
            out.finished, out.status = True, "completed"
            self._conv_done(out, t)
        elif kind == "item_done":
            out.finished, out.status = True, "completed"
            self._item_done(run, out, t)

    def _media_done(self, out: Output, kind: str, common: dict[str, Any], t: float) -> None:
        """The end of an output's audio, transcript, text or content part."""
        w, send = self.wire, self.rt.send
        if kind == "adone":
            out.media_done = True
            send(w.event("audio.done", **common, content_index=0), t)
        elif kind == "tdone":
            out.transcript_done = True
            send(w.event("audio_transcript.done", **common, content_index=0, transcript=out.sent_text), t)
        elif kind == "xdone":
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
            self.rt.conversation.audio_ms[out.item_id] = out.sent_ms

    def _conv_done(self, out: Output, t: float) -> None:
        item = self._item_state(out)
        conversation = self.rt.conversation
        conversation.update(item)
        previous = conversation.before(out.item_id)
        self.rt.send(self.wire.event("item.done", previous_item_id=previous, item=self.wire.item(item)), t)

    def _item_done(self, run: Run, out: Output, t: float) -> None:
        item = self._item_state(out)
        self.rt.conversation.update(item)
        event = self.wire.event(
            "response.item_done", response_id=run.id, output_index=out.index, item=self.wire.item(item)
        )
        self.rt.send(event, t)

    def _delta_sent(self, run: Run, out: Output, t: float) -> None:
        run.deltas += 1
        if self.fault_due(run.deltas):
            self.fire_faults(run.number, _DeltaFaults(self, run, out), t)

    def end(self, run: Run, status: str, details: Mapping[str, Any] | None, t: float) -> None:
        """Close what is open (incomplete unless completed), then response.done."""
        if self.active is not run:
            return
        self.active = None
        run.steps.clear()
        for out in run.outputs:
            if out.started and not out.finished:
                self._cut(run, out, t)
        audio_ms = sum(o.sent_ms for o in run.outputs)
        usage = self.wire.usage(
            Usage(
                input_text=len(self.rt.view.instructions) // 4 + 10,
                input_audio=int(self.rt.turns.input.appended_ms / 100),
                output_text=sum(len(o.sent_text.split()) for o in run.outputs),
                output_audio=int(audio_ms / 50),
            )
        )
        self.rt.send(self.wire.event("response.done", response=self._response(run, status, details, usage)), t)
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
        self.recorded(run.id, run.number, status, reason, outputs, out_of_band=run.out_of_band)
        self._rate_limits_after(usage["total_tokens"], t)
        if status == "completed" and audio_ms > 0 and not run.out_of_band:
            self.rt.turns.arm_idle(t, audio_ms)

    def _cut(self, run: Run, out: Output, t: float) -> None:
        """An output the response ends before it is done: what is open closes, and it is incomplete."""
        out.status = "incomplete"
        if out.kind == "message" and out.part_open:
            common = {"response_id": run.id, "item_id": out.item_id, "output_index": out.index}
            if out.modality == "audio":
                if not out.media_done:
                    self._media_done(out, "adone", common, t)
                if not out.transcript_done:
                    self._media_done(out, "tdone", common, t)
            elif not out.media_done:
                self._media_done(out, "xdone", common, t)
            self._media_done(out, "part_done", common, t)
        out.finished = True
        if not run.out_of_band and self.wire.shape.item_done_event:
            self._conv_done(out, t)
        self._item_done(run, out, t)

    def _rate_limits_after(self, tokens: Any, t: float) -> None:
        """GA: ``rate_limits.updated`` a little after ``response.done``."""
        w, rt = self.wire, self.rt
        if w.shape.rate_limits_after_done and not rt.closed:
            at = t + self.settings.scaled(self.settings.rate_limits_delay_ms)
            rt.at(at, lambda tt: rt.send(w.rate_limits(w.shape.rate_limits_after_done, tokens), tt))


class _DeltaFaults:
    """The per-delta faults as a Realtime response shows them, in the output being sent."""

    def __init__(self, responses: RealtimeResponses, run: Run, out: Output) -> None:
        self.responses, self.run, self.out = responses, run, out
        self.common = {"response_id": run.id, "item_id": out.item_id, "output_index": out.index, "content_index": 0}

    def unknown_event(self, t: float) -> None:
        rt = self.responses.rt
        rt.send({"type": "response.emulator_unknown.delta", "event_id": rt.ids.event(), **self.common}, t)

    def invalid_base64_delta(self, t: float) -> None:
        self.responses.rt.send(self.responses.wire.event("audio.delta", **self.common, delta="!!not*base64!!"), t)

    def oversized_delta(self, t: float) -> None:
        if self.out.modality != "audio":
            return
        responses = self.responses
        audio = responses.oversized_audio(FORMATS[self.run.format_key])
        responses._audio_out(self.run, self.out, responses.settings.faults.oversized_delta_ms)
        delta = pybase64.b64encode_as_string(audio)
        responses.rt.send(responses.wire.event("audio.delta", **self.common, delta=delta), t)

    def fail(self, t: float) -> None:
        code = self.responses.settings.faults.error_code
        kind = error_type(code)
        self.responses.rt.error(code, MID_RESPONSE_ERROR, t, error_type=kind)
        details = {"type": "failed", "error": {"type": kind, "code": code}}
        self.responses.end(self.run, "failed", details, t)
