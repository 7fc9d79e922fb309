"""Signed webhooks in ``serve`` and its workers (the package: ``bridge.webhooks``).

* :class:`CallHooks`: a worker's call events: ``call.started`` (answered), ``call.transferred``, ``call.ended`` (from
  ``_finish``, after the report line). Every call's :meth:`CallHooks.listener` keeps the wall-clock times of its
  arrival, answer and end (:class:`~bridge.store.record.CallTimes`, the report line's too); the caller (and the
  original called number of a forwarded call) is given in each form an
  endpoint may ask for (``WebhookSpec.caller``), the SIP Call-ID as the caller sent it. A call's events carry ``seq``
  (1, 2, ...) and are chained by its call id: each endpoint gets them in that order. The answer's time and the latest
  ``seq`` go into the call's hash too.
* :func:`lost_ended`: the ``call.ended`` of a call whose worker died, from its hash in Redis (end reason ``worker
  died``, ended by a fault, ``seq`` after the worker's last): sent by the pool (``bridge.serve.lost``) or by another
  worker's reaper (:meth:`CallHooks.lost`). The queue takes one ``call.ended`` per call and endpoint, whoever sends it
  (:mod:`bridge.webhooks.scripts`).
* :func:`start_node`: ``serve``'s deliverer and outbox, on the endpoints of the settings and of the dialplans as they
  are on disk (:class:`PlanRoutes`); with none configured, neither issues a Redis command. An endpoint that gets the
  callers' full numbers (``caller: full``, ``https://`` only) is said at start, one line each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bridge import events as ev
from bridge import metrics
from bridge.call.options import Listener
from bridge.call.report import CallReport
from bridge.config import Settings
from bridge.dialplan import Dialplan, dialplan_files, load_dialplans
from bridge.errors import ConfigError
from bridge.privacy.masking import MASK, VIEWER_MASK, mask_number, mask_url, viewer_number
from bridge.runtime import traces
from bridge.serve import calltraces
from bridge.store.connection import REDIS_ERRORS, connect
from bridge.store.pending import stamp
from bridge.store.record import TIMES, CallTimes, stored_record, unix
from bridge.tools.spec import check_url
from bridge.webhooks.body import EventType, call_data, call_ended_data
from bridge.webhooks.delivery import WAIT_S, Deliverer, secret_of
from bridge.webhooks.endpoints import DEFAULT, Endpoint, endpoints
from bridge.webhooks.limits import Limits
from bridge.webhooks.outbox import Outbox, install, worker_outbox
from bridge.webhooks.schedule import total_s
from bridge.webhooks.signing import queue_key, secret_bytes

if TYPE_CHECKING:  # OpenTelemetry is imported only when tracing is on
    from bridge.runtime.tracing import Tracing

log = logging.getLogger("bridge.webhooks")

FORGET_S = 24 * 3600  # a call that never reached its end (its worker failed it) is forgotten after this
LOST_REASON = "worker died"  # the end reason of a call whose worker died (bridge/serve/lost.py)


class CallFacts(Protocol):
    """What the hooks read of an incoming call (``bridge.sip.gateway.IncomingCall``)."""

    @property
    def call_id(self) -> str: ...
    @property
    def caller(self) -> str: ...
    @property
    def called(self) -> str: ...
    @property
    def original_called(self) -> str: ...
    @property
    def sip_call_id(self) -> str: ...


class CallFields(Protocol):
    """Where a call's hash fields go (``bridge.store.calls.CallStore``)."""

    def update(self, call_id: str, **fields: Any) -> None: ...


@dataclass
class _Call:
    plan: str
    identity: dict[str, Any]
    callers: dict[str, str]
    recording: str | None
    store: CallFields | None = None
    originals: dict[str, str] | None = None  # the original called number in each form (None: the call has none)
    clock: CallTimes = field(default_factory=CallTimes)  # the call's arrival, answer and end: the report line's too
    seq: int = 0  # the call's events so far

    @property
    def arrived_at(self) -> float:
        return self.clock.started_at

    def times(self) -> dict[str, float | None]:
        return {"started_at": self.clock.started_at, "answered_at": self.clock.answered_at}


def callers(raw: str, plan_visible: int | None) -> dict[str, str]:
    """The caller as each endpoint may ask for it: as the console's viewers see it, as the plan's logs and Redis keep
    it, in full."""
    return {"viewer": viewer_number(raw), "masked": mask_number(raw, plan_visible), "full": raw}


class CallHooks:
    """One worker's calls as webhook events (``outbox`` None: webhooks are off, nothing is kept)."""

    def __init__(self, outbox: Outbox | None, recordings_dir: Path) -> None:
        self.outbox = outbox
        self.recordings_dir = recordings_dir
        self._calls: dict[str, _Call] = {}

    @classmethod
    def of(cls, settings: Any, plans: Callable[[], Iterable[Dialplan]]) -> CallHooks:
        """A worker's (webhooks are off without ``settings.redis_url``)."""
        return cls(worker_outbox(settings, plans), settings.recordings_dir)

    async def close(self) -> None:
        """The outbox's close: what Redis does not take goes to the spool."""
        if self.outbox is not None:
            await self.outbox.close()

    def listener(
        self,
        call: CallFacts,
        plan: Dialplan,
        decision: Any,
        dialect: str,
        store: CallFields | None = None,
        times: CallTimes | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> Listener | None:
        """The call's listener (``decision``: its rollout decision: variant, model, voice; ``store``: where the
        answer's time and the latest ``seq`` are kept, for a :func:`lost_ended` should the worker die; ``times``: the
        call's times, shared with its report line; ``trace``: its ``trace_id`` and root ``span_id``, which every
        event's data carries when the call is traced); None where no endpoint is set (no listener to call)."""
        outbox, call_id = self.outbox, call.call_id
        if outbox is None:
            return None
        now = time.time()
        for old in [cid for cid, c in self._calls.items() if c.arrived_at < now - FORGET_S]:
            del self._calls[old]
        identity = {
            "call_id": call_id,
            "sip_call_id": call.sip_call_id,
            "dialplan": plan.name,
            "variant": decision.variant,
            "dialect": dialect,
            "model": decision.model,
            "voice": decision.voice,
            "called": call.called,
            "original_called": None,  # each endpoint's copy: in the form its caller setting says (Outbox.emit)
            **(trace or {}),
        }
        recording = str(self.recordings_dir / call_id) if plan.recording.enabled else None
        visible = plan.privacy.caller_visible_digits
        shown = callers(call.caller, visible)
        originals = callers(call.original_called, visible) if call.original_called else None
        entry = _Call(plan.name, identity, shown, recording, store, originals, times or CallTimes())
        self._calls[call_id] = entry

        def listen(report: ev.Report) -> None:
            if isinstance(report, ev.Answered):
                at = stamp(entry.clock.answer())  # to the millisecond, as kept: a lost call's call.ended says the same
                if store is not None:
                    store.update(call_id, answered_at=at)
                self._emit(entry, EventType.CALL_STARTED, call_data(entry.identity, entry.times()))
            elif isinstance(report, ev.CallEnded) and store is not None:
                store.update(call_id, ended_at=stamp(entry.clock.end()))  # the hash's end: the report line's
            elif isinstance(report, ev.TransferStarted):
                shown = {"mode": "blind", "target": report.target, "outcome": "referred"}
                self._emit(entry, EventType.CALL_TRANSFERRED, call_data(entry.identity, entry.times()) | shown)
            elif isinstance(report, ev.WarmTransferEnded) and report.outcome == ev.TransferOutcome.COMPLETED:
                shown = {"mode": "warm", "target": report.target, "outcome": str(report.outcome)}
                self._emit(entry, EventType.CALL_TRANSFERRED, call_data(entry.identity, entry.times()) | shown)

        return listen

    def ended(self, call_id: str, report: CallReport, variant_fields: Mapping[str, Any]) -> str | None:
        """``call.ended`` of a finished call: its report (with the variant's fields: the model it ended on, its
        cost) as the report line has it. The event's ``webhook-id`` (None: not sent)."""
        entry = self._calls.pop(call_id, None)
        if entry is None or self.outbox is None:
            return None
        line = {**report.to_json(), **variant_fields}
        blind = [r.target for _, r in report.reports if isinstance(r, ev.TransferStarted)]
        if line.get("transfer") is None and blind:
            line["transfer"] = {"mode": "blind", "target": blind[-1]}
        identity = entry.identity | {k: variant_fields[k] for k in ("variant", "model", "voice") if k in variant_fields}
        times = entry.times() | {"ended_at": entry.clock.end()}  # the CallEnded's time, as the report line's
        consented = (report.consent or {}).get("status") == ev.ConsentStatus.PLAYED  # else nothing was recorded
        data = call_ended_data(identity, times, line, recording=entry.recording if consented else None)
        return self._emit(entry, EventType.CALL_ENDED, data)

    def lost(self, calls: list[tuple[str, dict[str, str]]]) -> None:
        """``call.ended`` of each call another worker left (its id and hash as marked ended: ``CallStore.on_lost``)."""
        for call_id, state in calls:
            lost_ended(self.outbox, call_id, state, self.recordings_dir)

    def _emit(self, entry: _Call, event_type: EventType, data: dict[str, Any]) -> str | None:
        assert self.outbox is not None
        entry.seq += 1
        call_id = str(entry.identity["call_id"])
        if entry.store is not None and event_type != EventType.CALL_ENDED:  # the last one: nothing follows it
            entry.store.update(call_id, webhook_seq=entry.seq)
        return self.outbox.emit(
            event_type,
            data | {"seq": entry.seq},
            dialplan=entry.plan,
            callers=entry.callers,
            originals=entry.originals,
            chain=call_id,
            seq=entry.seq,
        )


def lost_ended(
    outbox: Outbox | None, call_id: str, state: Mapping[str, str], recordings_dir: Path, **more: Any
) -> str | None:
    """Queue the ``call.ended`` of a call whose worker died, from ``state`` (its hash in Redis: identity, times, the
    worker's ``webhook_seq`` and ``answered_at``; the caller as stored, so a ``full`` endpoint gets it masked): end
    reason ``worker died``, ended by a fault, outcome ``failed``, no transcript or cost (they died with the worker);
    ``more``: fields added to ``data`` (``worker_exit``). Its ``webhook-id`` (None: not sent)."""
    if outbox is None or not state.get("dialplan"):
        return None
    names = ("call_id", "sip_call_id", "dialplan", "variant", "dialect", "model", "voice", "called")
    identity = {name: state.get(name, "") for name in names} | {"call_id": call_id, "original_called": None}
    times = {name: unix(state.get(name)) for name in TIMES}
    times["ended_at"] = times["ended_at"] or time.time()
    times["started_at"] = times["started_at"] or times["ended_at"]
    reason = state.get("end_reason") or LOST_REASON
    report = {"end_reason": reason, "ended_by": str(ev.EndedBy.FAULT), "outcome": str(ev.CallOutcome.FAILED)}
    report["session_ids"] = stored_record(state)["session_ids"]  # the latest session its hash kept
    recording = recordings_dir / call_id
    data = call_ended_data(identity, times, report, recording=str(recording) if recording.is_dir() else None)
    seq = int(unix(state.get("webhook_seq")) or 0) + 1  # after the worker's last event
    shown, original = stored_forms(state.get("caller", "")), state.get("original_called", "")
    originals = stored_forms(original) if original else None
    data |= more | calltraces.stored_ids(state) | {"seq": seq}  # its deliveries in the call's trace
    dialplan = state["dialplan"]
    sent = outbox.emit(
        EventType.CALL_ENDED, data, dialplan=dialplan, callers=shown, originals=originals, chain=call_id, seq=seq
    )
    calltraces.stand_in({**state, "call_id": call_id}, reason, times["started_at"] or 0.0, times["ended_at"] or 0.0)
    return sent


def stored_forms(stored: str) -> dict[str, str]:
    """A number as each endpoint may ask for it, from the number as stored (masked): a ``full`` endpoint gets it as
    stored too."""
    return {"viewer": viewer_of_stored(stored), "masked": stored, "full": stored}


def viewer_of_stored(stored: str) -> str:
    """The caller as a console viewer sees it, from the caller as stored (its hidden digits ``*``): the same as from
    the number itself, and never a digit the stored form hides."""
    shown = viewer_number(stored.replace(MASK, "0"))
    if len(shown) != len(stored):
        return viewer_number(stored)
    return "".join(VIEWER_MASK if s == MASK and v != VIEWER_MASK else v for s, v in zip(stored, shown, strict=True))


class PlanRoutes:
    """The endpoints of the settings and of the dialplans as they are on disk now (read again when a file changes;
    a plan that does not load keeps the old ones, logged)."""

    def __init__(self, settings: Settings, plans: list[Dialplan] | None = None) -> None:
        self.settings = settings
        self._plans = plans if plans is not None else load_dialplans(settings.dialplans)
        self._mark = self._signature()
        self._checked = time.monotonic()

    def _signature(self) -> tuple[tuple[str, float], ...]:
        try:
            return tuple((p.name, p.stat().st_mtime) for p in dialplan_files(self.settings.dialplans))
        except OSError:
            return ()

    def __call__(self) -> Mapping[str, Endpoint]:
        if time.monotonic() - self._checked >= 1.0:
            self._checked = time.monotonic()
            mark = self._signature()
            if mark != self._mark:
                self._mark = mark
                try:
                    self._plans = load_dialplans(self.settings.dialplans)
                except ConfigError as exc:
                    log.error("webhooks: dialplans not read again (the old endpoints stay): %s", exc)
                else:  # an endpoint new to the plans: its counters at 0 before its first delivery
                    metrics.prime_webhooks(
                        endpoints(self.settings.webhook_url, self._plans, self.settings.webhook_caller)
                    )
        return endpoints(self.settings.webhook_url, self._plans, self.settings.webhook_caller)


class NodeWebhooks:
    """``serve``'s webhooks: the deliverer, and the outbox of events that happen in the ``serve`` process."""

    def __init__(self, outbox: Outbox, deliverer: Deliverer, traces: Tracing | None = None) -> None:
        self.outbox, self.deliverer, self.traces = outbox, deliverer, traces
        deliverer.start()

    async def close(self) -> None:
        await self.deliverer.close()
        if self.traces is not None:
            calltraces.use(None)
            await asyncio.to_thread(self.traces.close)  # the last attempts' spans out
        install(None)
        await self.outbox.close()  # and the client the deliverer shared
        if self.deliverer.waker is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self.deliverer.waker.aclose()


def check_settings(settings: Settings) -> None:
    """``webhook_url`` (http or https, a host, no credentials) and ``webhook_secret`` (``whsec_`` + base64 of at least
    24 bytes; required with the URL). Raises :class:`ConfigError` naming the setting and its source, never the
    secret."""
    if settings.webhook_url is not None:
        try:
            check_url(settings.webhook_url)
        except ValueError as exc:
            raise ConfigError(settings.origin("webhook_url"), "webhook_url", str(exc)) from None
        if settings.webhook_secret is None:
            raise ConfigError("settings", "webhook_secret", "webhook_url is set: its deliveries are signed with it")
    if settings.webhook_secret is not None:
        try:
            secret_bytes(settings.webhook_secret.get_secret_value())
        except ValueError as exc:
            raise ConfigError(settings.origin("webhook_secret"), "webhook_secret", str(exc)) from None


def start_node(settings: Settings) -> NodeWebhooks | None:
    """Start ``serve``'s webhooks when Redis is configured (endpoints a reload adds are served too). Raises
    :class:`ConfigError` when an endpoint is configured without Redis."""
    routes = PlanRoutes(settings)
    found = routes()
    if not settings.redis_url:
        if found:
            owner = next(iter(found))
            where = "webhook_url" if owner == DEFAULT else f"the webhooks of dialplan {owner.split('.', 1)[0]}"
            raise ConfigError("settings", "redis_url", f"{where}: pending webhook deliveries are kept in Redis")
        return None
    check_settings(settings)
    client, limits = connect(settings.redis_url), Limits.of(settings)
    seal_key = queue_key(settings.listen_key.get_secret_value() if settings.listen_key else None)
    outbox = Outbox(client, routes, settings.spool_dir, limits, seal_key)
    outbox.start()
    install(outbox)
    waker = connect(settings.redis_url, socket_timeout=WAIT_S + 10.0)  # its one blocking read waits up to WAIT_S
    tracing = traces.start(settings.tracing, "serve")  # each delivery attempt a span of its call's trace
    calltraces.use(tracing)  # and a stand-in root span for a call whose worker died
    deliverer = Deliverer(
        client, routes, lambda e: secret_of(e, settings), waker=waker, limits=limits, traces=tracing, seal_key=seal_key
    )
    log.info(
        "webhooks to %s; retries over %.1f h, then dead letters kept %.1f d (`callbridge webhooks list --dead`)",
        ", ".join(f"{e.name} ({mask_url(e.url)})" for e in found.values()) or "no endpoint yet",
        total_s() / 3600,
        limits.dead_ttl_s / 86400,
    )
    for e in found.values():
        if e.caller == "full":  # over https only (refused at load otherwise): an operator should know who gets them
            setting = "webhook_caller: full" if e.dialplan is None else f"caller: full in dialplan {e.dialplan}"
            log.warning("webhooks to %s (%s) carry the callers' full numbers (%s)", e.name, mask_url(e.url), setting)
    return NodeWebhooks(outbox, deliverer, tracing)
