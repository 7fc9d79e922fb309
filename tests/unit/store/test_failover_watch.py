"""The pure halves of following a failover: Sentinel's ``+switch-master`` message, and the writer's stall clock
(how long writes waited; the reaper's grace after they resume)."""

from __future__ import annotations

from bridge.store.failover import WriteStall, address_text, parse_switch


def test_a_switch_message_names_the_new_primary_of_its_service_only() -> None:
    assert parse_switch(b"callbridge 10.0.0.1 6379 10.0.0.2 6380", "callbridge") == ("10.0.0.2", 6380)
    assert parse_switch("callbridge ::1 6379 ::2 6380", "callbridge") == ("::2", 6380)
    assert parse_switch(b"other 10.0.0.1 6379 10.0.0.2 6380", "callbridge") is None
    assert parse_switch(b"callbridge 10.0.0.1 6379", "callbridge") is None
    assert parse_switch(b"callbridge 10.0.0.1 6379 10.0.0.2 port", "callbridge") is None
    assert (address_text(("10.0.0.2", 6380)), address_text(("::2", 6380))) == ("10.0.0.2:6380", "[::2]:6380")


def test_the_reaper_waits_while_writes_wait_and_for_a_grace_after() -> None:
    stall = WriteStall(reap_grace_s=15.0)
    assert stall.may_reap(100.0) and stall.written(began=100.0, now=100.1) is None  # no stall: no grace
    stall.waiting(now=101.0)
    stall.waiting(now=102.0)  # still the same stall
    assert not stall.may_reap(103.0)
    assert stall.written(began=103.0, now=104.0) == 3.0
    assert not stall.may_reap(118.9) and stall.may_reap(119.0)


def test_a_write_begun_before_the_stall_does_not_end_it() -> None:
    stall = WriteStall(reap_grace_s=1.0)
    stall.waiting(now=10.0)  # e.g. the primary moved while a write to the old one was on its way
    assert stall.written(began=9.9, now=10.2) is None and stall.waiting_since == 10.0
    assert stall.written(began=10.3, now=10.5) == 0.5 and stall.waiting_since is None
