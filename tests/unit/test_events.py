"""The call session's report vocabulary (``bridge.events.Report``) and its typed consumers: the stored text of each
report, the type dispatch, the metrics listener and the rollout's health."""

from __future__ import annotations

import dataclasses
import enum
import json
import typing
from typing import Any

import pytest
from prometheus_client import REGISTRY

from bridge import events as ev
from bridge import metrics
from bridge.rollout.health import CallStats

# (report, kind, summary, stored data): the timeline, Redis stream and recording text of each report.
CASES: list[tuple[ev.Report, str, str, dict[str, Any]]] = [
    (ev.Ringing("+1555", "1000", "support", "ga"), "ringing", "+1555 -> 1000 (support, ga)", {}),
    (ev.RealtimeUnavailable("timeout", "network"), "realtime_unavailable", "timeout", {"error_class": "network"}),
    (ev.Answered(), "answered", "", {}),
    (
        ev.PhaseChanged("IDLE", "THINKING", "greeting"),
        "phase",
        "IDLE -> THINKING: greeting",
        {"old": "IDLE", "new": "THINKING"},
    ),
    (ev.Latency("turn", 612.4), "latency", "turn 612 ms", {"segment": "turn", "ms": 612.4}),
    (ev.SessionOpened("sess_1"), "session_ready", "sess_1", {"session_id": "sess_1"}),
    (ev.SessionAccepted("sess_1"), "session_configured", "sess_1", {"session_id": "sess_1"}),
    (ev.ConversationOpened("conv_1"), "conversation_ready", "conv_1", {"conversation_id": "conv_1"}),
    (ev.OutputItem("message", "item_1"), "output_item", "message item_1", {"item_id": "item_1"}),
    (ev.CallerSpeechStarted(4320), "speech_started", "at 4320 ms", {}),
    (ev.CallerSpeechStopped(7870), "speech_stopped", "at 7870 ms", {}),
    (ev.CallerSaid("Hi", "item_2"), "caller_transcript", "Hi", {"item_id": "item_2"}),
    (ev.CallerNotTranscribed("no audio", "item_2"), "caller_transcript_failed", "no audio", {"item_id": "item_2"}),
    (ev.AgentSaid("Hello", "item_3"), "agent_transcript", "Hello", {"item_id": "item_3"}),
    (ev.ResponseBegan("resp_1"), "response_started", "resp_1", {}),
    (ev.ResponseEnded("resp_1", "completed"), "response_done", "resp_1 completed", {"status": "completed"}),
    (ev.TruncateSent("item_3", 1234), "truncate", "item_3 at 1234 ms", {"item_id": "item_3", "audio_end_ms": 1234}),
    (ev.Truncated("item_3", 1234), "truncated", "item_3 at 1234 ms", {"result": "ok"}),
    (ev.TruncateRefused("item not found"), "truncate_refused", "item not found", {"result": "failed"}),
    (
        ev.BargeIn("caller spoke over the agent", 4.0),
        "barge_in",
        "caller spoke over the agent",
        {"truncate_error_ms": 4.0},
    ),
    (
        ev.UsageTotals(61.5, 120, 80),
        "usage",
        "61.5 s of session audio, 120+80 tokens",
        {"audio_seconds": 61.5, "input_tokens": 120, "output_tokens": 80},
    ),
    (
        ev.TalkedOver(320.0),
        "talked_over",
        "the agent talked over the caller for 320 ms",
        {"talk_over_ms": 320.0},
    ),
    (
        ev.CallerAudioDropped(54, "192.0.2.2, 127.0.0.1", "127.0.0.3"),
        "media_dropped",
        "caller audio dropped: 54 packets from 127.0.0.3 (admitted: 192.0.2.2, 127.0.0.1)",
        {"dropped": 54, "admitted": "192.0.2.2, 127.0.0.1", "source": "127.0.0.3"},
    ),
    (ev.CallerHeld(), "caller_held", "the caller put the call on hold", {}),
    (
        ev.CallerResumed(12.25),
        "caller_resumed",
        "the caller took the call off hold after 12.2 s",
        {"held_s": 12.25},
    ),
    (
        ev.EchoJudged(ev.EchoOutcome.REJECTED, -62.5, 120.0),
        "echo_judged",
        "rejected, residual -62 dBFS, echo path 120 ms",
        {"outcome": "rejected", "residual_dbfs": -62.5, "delay_ms": 120.0},
    ),
    (
        ev.TransferDecided("sip:agent@pbx", ev.TransferMode.WARM),
        "transfer_decided",
        "warm transfer to sip:agent@pbx",
        {"target": "sip:agent@pbx", "mode": "warm"},
    ),
    (
        ev.TransferLineInterrupted(),
        "transfer_line_interrupted",
        "caller spoke over the transfer line; the transfer goes ahead",
        {},
    ),
    (
        ev.ToolCalled("end_call", "{}", '{"ok":true}'),
        "tool_call",
        'end_call({}) -> {"ok":true}',
        {"name": "end_call"},
    ),
    (
        ev.ToolStarted("order_status", "call_1", '{"order":"42"}'),
        "tool_started",
        'order_status({"order":"42"}) started',
        {"name": "order_status", "call_id": "call_1"},
    ),
    (
        ev.ToolFinished("order_status", "call_1", "{}", '{"ok":false}', ev.ToolCallOutcome.TIMEOUT, 3000.4, 980.0),
        "tool_result",
        'order_status: timeout in 3000 ms -> {"ok":false}',
        {
            "name": "order_status",
            "call_id": "call_1",
            "outcome": "timeout",
            "latency_ms": 3000.4,
            "longest_silence_ms": 980.0,
        },
    ),
    (
        ev.ToolGuarded("order_status", "call_1", ev.ToolGuard.UNVERIFIED, "verify_customer"),
        "tool_guarded",
        "order_status: not called, the caller is not verified (verify_customer)",
        {"name": "order_status", "call_id": "call_1", "guard": "unverified"},
    ),
    (
        ev.ToolGuarded("order_status", "call_2", ev.ToolGuard.PINNED_ARGUMENT, "customer_id"),
        "tool_guarded",
        "order_status: the model's customer_id discarded (pinned by the plan)",
        {"name": "order_status", "call_id": "call_2", "guard": "pinned_argument"},
    ),
    (
        ev.FillerSaid("One moment.", "filler", 1000.2),
        "filler",
        "filler after 1000 ms: One moment.",
        {"why": "filler", "waited_ms": 1000.2},
    ),
    (ev.WaitHold(True), "wait_hold", "soft hold on", {"on": True}),
    (
        ev.LongestSilence(1020.5),
        "longest_silence",
        "longest silence so far 1020 ms",
        {"longest_silence_ms": 1020.5},
    ),
    (ev.LongestWait(3640.2), "longest_wait", "longest wait so far 3640 ms", {"longest_wait_ms": 3640.2}),
    (ev.TransferStarted("sip:agent@pbx"), "transfer", "sip:agent@pbx", {}),
    (ev.AgentHungUp(), "hangup", "end_call tool", {}),
    (
        ev.SupervisorActed("whisper", "dana", "say hi"),
        "supervisor",
        "whisper by dana: say hi",
        {"action": "whisper", "who": "dana"},
    ),
    (ev.TransferUpdate(200, "OK", True), "transfer_progress", "200 OK", {"final": True}),
    (ev.KeyPressed("2", "rfc4733"), "dtmf", "2", {"source": "rfc4733"}),
    (
        ev.ServiceError("bad", "protocol", "nope"),
        "error",
        "protocol/bad: nope",
        {"code": "bad", "error_class": "protocol"},
    ),
    (ev.CallerSilent(100, 9100, "item_4"), "idle_timeout", "silence 100-9100 ms", {"item_id": "item_4"}),
    (ev.UnknownServerEvent("response.mystery"), "unknown_event", "response.mystery", {}),
    (
        ev.SessionLost(ev.ErrorClass.SERVER, 1001, "session expired", True),
        "realtime_closed",
        "server/1001: session expired",
        {"retryable": True, "error_class": "server"},
    ),
    (
        ev.SessionLost(None, None, "closed", False),
        "realtime_closed",
        "None/None: closed",
        {"retryable": False, "error_class": "network"},
    ),
    (
        ev.ReconnectFailed(2, "auth", "refresh"),
        "reconnect_failed",
        "auth: refresh",
        {"attempt": 2, "error_class": "auth"},
    ),
    (ev.Recovered(1), "recovered", "attempt 1", {}),
    (ev.RecoveryFailed(20), "recovery_failed", "gave up after 20 reconnects", {}),
    (ev.RecoveryFailed(None), "recovery_failed", "no realtime session", {}),
    (ev.CallerTurnLost(1, replaced=False), "caller_turn_lost", "1 turn(s) with no transcript", {}),
    (
        ev.CallerTurnLost(2, replaced=True),
        "caller_turn_lost",
        "2 turn(s) with no transcript from the replaced session",
        {},
    ),
    (ev.RolloverReady(), "rollover_ready", "next session configured", {}),
    (ev.RolloverFailed("timeout"), "rollover_failed", "timeout", {}),
    (ev.RolledOver("rollover at a turn boundary"), "rollover", "rollover at a turn boundary", {}),
    (ev.PlayoutTotals(3, 1), "playout", "3 underruns, 1 dropped frames", {"underruns": 3, "dropped_frames": 1}),
    (
        ev.CallEnded("caller hung up", "completed", ev.EndedBy.CALLER),
        "ended",
        "caller hung up",
        {"outcome": "completed", "ended_by": "caller"},
    ),
    (
        ev.PostCallDone("ok", "refund", "The caller wants a refund.", '{"order":"4417"}'),
        "post_call",
        "refund: The caller wants a refund.",
        {"status": "ok", "disposition": "refund"},
    ),
    (
        ev.PostCallDone("session lost"),
        "post_call",
        "no post-call summary: session lost",
        {"status": "session lost", "disposition": ""},
    ),
    (ev.ChecksDone(3, "never_say"), "checks", "checks failed: never_say", {"failed": "never_say"}),
    (
        ev.PeerReasonGiven("BYE", 'Q.850;cause=41;text="Temporary failure"'),
        "peer_reason",
        'BYE with Reason Q.850;cause=41;text="Temporary failure"',
        {"request": "BYE", "reason": 'Q.850;cause=41;text="Temporary failure"'},
    ),
    (ev.ChecksDone(2), "checks", "all 2 check(s) passed", {"failed": ""}),
    (ev.LegHungUp(), "leg_hangup", "the bridge hung up", {}),
    (ev.LegTransferred("sip:agent@pbx"), "leg_transfer", "sip:agent@pbx", {}),
    (ev.HoldStarted(), "hold_started", "caller on hold", {}),
    (ev.TransferStepped(ev.TransferStep.BRIEFING), "transfer_step", "briefing", {"step": "briefing"}),
    (
        ev.WarmTransferEnded(ev.TransferOutcome.BUSY, "sip:agent@pbx", 486, 1.25),
        "transfer_outcome",
        "busy (486)",
        {"outcome": "busy", "target": "sip:agent@pbx", "sip_code": 486, "seconds": 1.25},
    ),
    (
        ev.WarmTransferEnded(ev.TransferOutcome.NO_ANSWER, "sip:agent@pbx", 0, 20.0),
        "transfer_outcome",
        "no_answer",
        {"outcome": "no_answer", "target": "sip:agent@pbx", "sip_code": 0, "seconds": 20.0},
    ),
    (ev.HoldEnded(2.5), "hold_ended", "2.5 s on hold", {"held_s": 2.5}),
    (
        ev.ConsentPrompt(ev.ConsentStatus.PLAYED, 4200, 4200, True, "consent.wav"),
        "consent",
        "consent prompt played (4200 of 4200 ms, the caller spoke over it)",
        {"status": ev.ConsentStatus.PLAYED},
    ),
    (ev.OutageEnded(3.25), "outage_ended", "model back after 3.2 s", {"outage_s": 3.25}),
    (
        ev.FailedOver("goodbye", 30.0),
        "failed_over",
        "goodbye after 30.0 s without the model",
        {"failover": "goodbye", "outage_s": 30.0},
    ),
    (
        ev.OrchestratorDecided("say", "Your order 4471 ships today.", 212.5),
        "orchestrator_decision",
        "say: Your order 4471 ships today.",
        {"action": "say", "ms": 212.5},
    ),
    (
        ev.OrchestratorDecided("nothing", "", 80.0),
        "orchestrator_decision",
        "nothing",
        {"action": "nothing", "ms": 80.0},
    ),
    (
        ev.OrchestratorLate(1500.0, "One moment, please."),
        "orchestrator_filler",
        "no answer after 1500 ms: One moment, please.",
        {"waited_ms": 1500.0},
    ),
    (
        ev.OrchestratorFailed("http_5xx", "http://127.0.0.1:9000: HTTP 503", "respond"),
        "orchestrator_error",
        "http_5xx: http://127.0.0.1:9000: HTTP 503 (respond)",
        {"error": "http_5xx", "then": "respond"},
    ),
]


def _all_reports() -> list[type[ev.Report]]:
    found, todo = [], list(ev.Report.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    # (slots=True makes a new class; the one it replaces may still be listed until it is collected)
    return sorted({c for c in found if getattr(ev, c.__name__, None) is c}, key=lambda c: c.__name__)


@pytest.mark.parametrize(("report", "kind", "summary", "data"), CASES, ids=lambda x: type(x).__name__)
def test_each_report_renders_its_stored_text(report: ev.Report, kind: str, summary: str, data: dict[str, Any]) -> None:
    assert (report.kind, report.summary, report.data()) == (kind, summary, data)
    assert list(report.data()) == list(data) == list(type(report).stored)  # the order of a stream entry's fields


def test_every_report_type_is_covered_and_stores_only_its_own_fields() -> None:
    assert {type(r) for r, *_ in CASES} == set(_all_reports())
    for cls in _all_reports():
        names = {f.name for f in dataclasses.fields(cls)}
        assert cls.data is not ev.Report.data or set(cls.stored) <= names, cls
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]  # set by @dataclass


def test_every_report_has_a_kind_of_its_own() -> None:
    kinds = [cls.kind for cls in _all_reports()]
    assert sorted(k for k in set(kinds) if kinds.count(k) > 1) == []


def test_the_table_dispatches_on_the_exact_type_and_ignores_the_rest() -> None:
    seen: list[str] = []
    table = (
        ev.ReportTable().on(ev.Latency, lambda r: seen.append(r.segment)).on(ev.Answered, lambda r: seen.append("a"))
    )
    for report in (ev.Latency("turn", 1.0), ev.Ringing("a", "b", "c", "d"), ev.Answered()):
        table(report)
    assert seen == ["turn", "a"]


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _counts(d: str, dp: str) -> dict[str, float]:
    return {
        "started": _sample("callbridge_calls_started_total", dialect=d, dialplan=dp),
        "failed": _sample("callbridge_calls_ended_total", dialect=d, dialplan=dp, outcome="failed"),
        "dropped": _sample("callbridge_realtime_dropped_sessions_total", dialect=d, error_class="network"),
        "connect": _sample("callbridge_realtime_connect_failures_total", dialect=d, error_class="auth"),
        "truncated": _sample("callbridge_truncates_total", dialect=d, result="failed"),
        "underruns": _sample("callbridge_playout_underruns_total", dialect=d),
        "turn": _sample("callbridge_latency_seconds_count", segment="turn", dialect=d),
        "echo_rejected": _sample("callbridge_echo_guard_speech_starts_total", dialect=d, outcome="rejected"),
        "echo_resumed": _sample("callbridge_echo_guard_speech_starts_total", dialect=d, outcome="resumed"),
        "warm_busy": _sample("callbridge_warm_transfers_total", dialplan=dp, outcome="busy"),
        "unverified": _sample("callbridge_tool_guarded_total", dialplan=dp, tool="order_status", guard="unverified"),
        "pinned": _sample("callbridge_tool_guarded_total", dialplan=dp, tool="order_status", guard="pinned_argument"),
    }


def test_the_metrics_listener_counts_what_the_reports_say() -> None:
    d, dp = "ga", "test-reports"
    listener = metrics.call_listener(d, dp)
    before = _counts(d, dp)
    for report in (
        ev.Answered(),
        ev.Latency("turn", 250.0),
        ev.Latency("not_a_segment", 1.0),
        ev.SessionLost(None, None, "gone", True),
        ev.ReconnectFailed(0, "auth", "refresh"),
        ev.TruncateRefused("item not found"),
        ev.PlayoutTotals(3, 0),
        ev.EchoJudged(ev.EchoOutcome.REJECTED, -60.0, 120.0),
        ev.EchoJudged(ev.EchoOutcome.REJECTED, -58.0, 120.0),
        ev.EchoJudged(ev.EchoOutcome.RESUMED, -55.0, None),
        ev.WarmTransferEnded(ev.TransferOutcome.BUSY, "sip:agent@pbx", 486, 0.4),
        ev.ToolGuarded("order_status", "c1", ev.ToolGuard.UNVERIFIED, "verify_customer"),
        ev.ToolGuarded("order_status", "c2", ev.ToolGuard.UNVERIFIED, "verify_customer"),
        ev.ToolGuarded("order_status", "c3", ev.ToolGuard.PINNED_ARGUMENT, "customer_id"),
        ev.CallEnded("realtime unavailable", "failed", ev.EndedBy.FAULT),
    ):
        listener(report)
    after = _counts(d, dp)
    assert {k: after[k] - before[k] for k in before} == {
        "started": 1, "failed": 1, "dropped": 1, "connect": 1, "truncated": 1, "underruns": 3, "turn": 1,
        "echo_rejected": 2, "echo_resumed": 1, "warm_busy": 1, "unverified": 2, "pinned": 1,
    }  # fmt: skip
    assert _sample("callbridge_calls_active", dialect=d, dialplan=dp) == 0  # answered, then ended


@pytest.mark.parametrize(
    ("reports", "outcome"),
    [
        ([ev.Answered()], "ok"),
        ([ev.RealtimeUnavailable("timeout", "network"), ev.Answered()], "connect_failure"),
        # a session that came back is recovered, neither ok nor a failure (docs/operating.md, the figures)
        ([ev.RealtimeUnavailable("timeout", "network"), ev.Recovered(1)], "recovered"),
        ([ev.SessionLost(ev.ErrorClass.NETWORK, None, "lost", True), ev.Recovered(1)], "recovered"),
        ([ev.RealtimeUnavailable("t", "network"), ev.Recovered(1), ev.SessionLost(None, None, "x", True)], "dropped"),
    ],
)
def test_the_rollout_health_of_a_call(reports: list[ev.Report], outcome: str) -> None:
    health = CallStats()
    for report in reports:
        health(report)
    assert health.outcome == outcome


def test_a_business_tools_result_is_counted_per_variant_and_tool() -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    where = {"dialplan": "orders", "variant": "ga"}
    before = sample("callbridge_tool_calls_total", **where, tool="order_status", outcome="timeout")
    metrics.observe_tool(
        "orders", "ga", ev.ToolFinished("order_status", "c1", "{}", "{}", ev.ToolCallOutcome.TIMEOUT, 3000.0, 900.0)
    )
    assert sample("callbridge_tool_calls_total", **where, tool="order_status", outcome="timeout") == before + 1
    assert sample("callbridge_tool_latency_seconds_bucket", **where, tool="order_status", le="3.0") >= 1
    assert sample("callbridge_tool_latency_seconds_bucket", **where, tool="order_status", le="2.0") == 0
    assert sample("callbridge_tool_wait_longest_silence_seconds_bucket", **where, le="1.0") >= 1


def _value(hint: Any, name: str) -> Any:
    """A value of the type ``hint`` that no default equals (a record's fields all set)."""
    if typing.get_origin(hint) is not None:  # X | None: the X
        (hint,) = (a for a in typing.get_args(hint) if a is not type(None))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return list(hint)[-1]
    if hint is ev.Usage:
        return ev.Usage(30, 20, 10)
    return {bool: True, int: 7, float: 12.25, str: f"{name}, with a comma: and a colon"}[hint]


def _filled(cls: type[ev.Report]) -> ev.Report:
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _value(hints[f.name], f.name) for f in dataclasses.fields(cls)})


def _emptied(cls: type[ev.Report]) -> ev.Report:
    """Every optional field None, every other as in :func:`_filled`."""
    hints = typing.get_type_hints(cls)
    return cls(
        **{
            f.name: None if type(None) in typing.get_args(hints[f.name]) else _value(hints[f.name], f.name)
            for f in dataclasses.fields(cls)
        }
    )


def test_the_report_table_by_kind_holds_every_report() -> None:
    assert sorted(ev.REPORTS.values(), key=lambda c: c.__name__) == _all_reports()
    assert all(ev.REPORTS[cls.kind] is cls for cls in _all_reports())


@pytest.mark.parametrize("cls", _all_reports(), ids=lambda c: c.__name__)
def test_every_report_reads_back_as_it_was_stored(cls: type[ev.Report]) -> None:
    for report in (_filled(cls), _emptied(cls)):
        stored = ev.encode(report)
        assert all(isinstance(v, str) for v in stored.values())  # what a Redis stream entry holds
        assert (stored["kind"], stored["summary"]) == (report.kind, report.summary)
        back = ev.decode(stored)
        assert back == report
        for f in dataclasses.fields(report):  # enums come back as enums, not as equal strings
            assert type(getattr(back, f.name)) is type(getattr(report, f.name)), f.name


@pytest.mark.parametrize("cls", _all_reports(), ids=lambda c: c.__name__)
def test_every_report_reads_back_from_its_json_line(cls: type[ev.Report]) -> None:
    for report in (_filled(cls), _emptied(cls)):
        line = json.loads(json.dumps(ev.as_json(report)))  # a recording's note, as written and read
        back = ev.decode(line)
        assert back == report
        assert [type(getattr(back, f.name)) for f in dataclasses.fields(back)] == [
            type(getattr(report, f.name)) for f in dataclasses.fields(report)
        ]


def test_an_entry_from_before_every_field_was_stored_takes_its_text_from_the_summary() -> None:
    assert ev.decode({"kind": "caller_transcript", "summary": "Hi there", "item_id": "i1"}) == ev.CallerSaid(
        "Hi there", "i1"
    )
    assert ev.decode({"kind": "dtmf", "summary": "5", "source": "info"}) == ev.KeyPressed("5", ev.DtmfSource.INFO)
    # a summary that is more than one field is never taken apart: the fields it lacks are empty
    assert ev.decode({"kind": "ringing", "summary": "+1555 -> 1000 (support, ga)"}) == ev.Ringing("", "", "", "")


def test_a_stored_entry_keeps_what_the_report_adds_and_reads_back_from_native_values() -> None:
    stored = {"kind": "truncated", "summary": "item_3 at 1234 ms", "item_id": "item_3", "audio_end_ms": "1234"}
    assert ev.encode(ev.Truncated("item_3", 1234)) == stored | {"result": "ok"}
    note = {"kind": "tool_result", "name": "t", "call_id": "c", "outcome": "timeout", "latency_ms": 3000.4}
    back = ev.decode(note)  # a recording's note: JSON's numbers; fields it lacks are empty
    assert back == ev.ToolFinished("t", "c", "", "", ev.ToolCallOutcome.TIMEOUT, 3000.4)
    assert ev.decode({"kind": "wait_hold", "on": True}) == ev.WaitHold(True)


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ({"kind": "no_such_kind"}, "no report of kind 'no_such_kind'"),
        ({"summary": "x"}, "no report of kind None"),
        ({"kind": "tool_result", "outcome": "exploded"}, "outcome: 'exploded' is no ToolCallOutcome"),
        ({"kind": "latency", "segment": "turn", "ms": "fast"}, "ms: 'fast' is no float"),
    ],
)
def test_an_entry_that_is_no_report_is_refused_by_name(entry: dict[str, Any], error: str) -> None:
    with pytest.raises(ev.UndecodableEntry) as caught:
        ev.decode(entry)
    assert str(caught.value) == error
