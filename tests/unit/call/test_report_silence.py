"""The longest silence a call's hash holds is the report's: reported each time the figure changes, last before the
call's end."""

from __future__ import annotations

from bridge import events as ev
from bridge.call.report import CallReport, silence_watch


def test_the_hash_gets_the_reports_longest_silence_even_when_a_measured_turn_silence_lowers_it() -> None:
    report = CallReport("c-1", "ga", "desk")
    said: list[ev.Report] = []
    watch = silence_watch(report, said.append)
    # the turn's gap (the soft hold included) counts until the turn's measured silence replaces it
    report.latency_ms["caller_turn"] = [6000.0]
    watch(ev.Latency("caller_turn", 6000.0))
    report.turn_silence_ms.append(1020.0)  # the soft hold ended the dead air after 1020 ms
    report.turn_wait_ms.append(6000.0)
    watch(ev.CallerSaid("hello", "item-1"))  # not a source: nothing said
    assert [r.longest_silence_ms for r in said if isinstance(r, ev.LongestSilence)] == [6000.0]
    watch(ev.PlayoutTotals(0, 0))  # the call's last report before its end
    assert [r.longest_silence_ms for r in said if isinstance(r, ev.LongestSilence)] == [6000.0, 1020.0]
    assert report.longest_silence_ms == 1020.0
    assert [r.longest_wait_ms for r in said if isinstance(r, ev.LongestWait)] == [6000.0]  # unchanged: said once
