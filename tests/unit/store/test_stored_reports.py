"""A call's stream entries as the writer makes them (:class:`bridge.store.pending.PendingWrites`) and as the console
reads them back (:meth:`bridge.store.read.StreamEntry.report`): the report itself, enums as enums."""

from __future__ import annotations

from bridge import events as ev
from bridge.store.pending import PendingWrites
from bridge.store.read import stream_entry

REPORTS: list[ev.Report] = [
    ev.Ringing("+15550100", "1000", "support", "ga"),
    ev.PhaseChanged("LISTENING", "SPEAKING", "audio"),
    ev.OutputItem(ev.ItemType.MESSAGE, "item_1"),
    ev.ToolFinished("order_status", "c1", '{"order":"42"}', '{"ok":true}', ev.ToolCallOutcome.OK, 812.5, 300.0),
    ev.EchoJudged(ev.EchoOutcome.PAUSED, -41.5, None),
    ev.WaitHold(True),
    ev.SessionLost(None, 1006, "gone", True),
    ev.WarmTransferEnded(ev.TransferOutcome.DECLINED, "sip:agent@pbx", 603, 4.25),
    ev.PeerReasonGiven("BYE", 'Q.850;cause=41;text="Temporary failure"'),
    ev.CallEnded("network failure (Q.850 cause 41)", ev.CallOutcome.NETWORK_FAILURE, ev.EndedBy.NETWORK),
]


def _written(reports: list[ev.Report]) -> list[ev.Report | None]:
    pending = PendingWrites("w1", clock=lambda: 1_700_000_000.0)
    pending.begin("call-1", caller="+15550100")
    for report in reports:
        pending.on_report("call-1", report)
    return [stream_entry(e.id, e.fields).report for e in pending.take(resync=False).entries]


def test_every_stream_entry_reads_back_as_the_report_it_stores() -> None:
    assert _written(REPORTS) == REPORTS


def test_a_stream_entry_keeps_the_stored_fields_the_hash_and_console_read() -> None:
    pending = PendingWrites("w1", clock=lambda: 1_700_000_000.0)
    pending.begin("call-1")
    pending.on_report("call-1", ev.Truncated("item_3", 1234))
    (entry,) = pending.take(resync=False).entries
    assert entry.fields == {
        "kind": "truncated",
        "summary": "item_3 at 1234 ms",
        "t": "1700000000.000",
        "item_id": "item_3",
        "audio_end_ms": "1234",
        "result": "ok",
    }


def test_an_entry_of_no_known_report_reads_as_none() -> None:
    assert stream_entry("1-0", {b"kind": b"mystery", b"summary": b"?"}).report is None
    assert stream_entry("1-0", {b"kind": b"latency", b"ms": b"fast"}).report is None


def test_the_peers_reason_and_the_networks_end_are_the_calls_hash_fields() -> None:
    pending = PendingWrites("w1", clock=lambda: 1_700_000_000.0)
    pending.begin("call-1")
    pending.on_report("call-1", ev.PeerReasonGiven("CANCEL", 'SIP;cause=200;text="Call completed elsewhere"'))
    pending.on_report("call-1", ev.CallEnded("call completed elsewhere", ev.CallOutcome.COMPLETED_ELSEWHERE,
                                             ev.EndedBy.NETWORK))  # fmt: skip
    state = pending.take(resync=False).hashes["call-1"]
    assert state["peer_reason"] == 'SIP;cause=200;text="Call completed elsewhere"'
    assert (state["end_reason"], state["ended_by"], state["outcome"]) == (
        "call completed elsewhere", "network", "completed_elsewhere"
    )  # fmt: skip
