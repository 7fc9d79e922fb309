"""The impairment relay does what it was asked, measured on real UDP at the receiving end: the loss rate (at
random and in bursts), the delay with its jitter, and the reordering; a clean line changes nothing. The SDP of a
call is rewritten so that its media runs through the relay."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest

from bridge.devkit.netem import Impairment, Line
from bridge.devkit.rtprelay import MediaPair, RtpRelay, rewrite_sdp

PACKETS = 2000


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[int, float, float]] = []  # (sequence, sent at, received at)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        seq, sent = struct.unpack("!xxHd", data[:12])
        self.got.append((seq, sent, time.monotonic()))


async def _send_through(imp: Impairment, spacing_s: float = 0.0) -> tuple[_Receiver, MediaPair]:
    """PACKETS RTP-like packets (PT 0) from a caller socket through a pair to a callee socket."""
    loop = asyncio.get_running_loop()
    receiver = _Receiver()
    callee, _ = await loop.create_datagram_endpoint(lambda: receiver, local_addr=("127.0.0.1", 0))
    caller, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    async with RtpRelay(("127.0.0.1", 9), uplink=imp) as relay:
        pair = await relay.new_pair()
        pair.callee_media(callee.get_extra_info("sockname"), ("127.0.0.1", 9))
        pair.caller_media(caller.get_extra_info("sockname"), ("127.0.0.1", 9))
        to = ("127.0.0.1", pair.a.port)
        for seq in range(PACKETS):
            caller.sendto(struct.pack("!BBHd", 0x80, 0, seq, time.monotonic()) + bytes(160), to)
            await asyncio.sleep(spacing_s)  # also lets the loop deliver: loopback's buffer never overflows
        wait_s = (imp.delay_ms + imp.jitter_ms + imp.reorder_ms) / 1000 + 2.0
        deadline = time.monotonic() + wait_s
        while len(receiver.got) < pair.up.line.stats.delivered or time.monotonic() < deadline:
            if len(receiver.got) + pair.up.line.stats.lost >= PACKETS:
                break
            await asyncio.sleep(0.02)
        pair.close()
    caller.close()
    callee.close()
    return receiver, pair


def _reordered(got: list[tuple[int, float, float]]) -> int:
    latest, count = -1, 0
    for seq, _, _ in got:
        count += seq < latest
        latest = max(latest, seq)
    return count


async def test_a_clean_line_delivers_every_packet_in_order() -> None:
    receiver, pair = await _send_through(Impairment())
    assert [seq for seq, _, _ in receiver.got] == list(range(PACKETS))
    assert pair.up.line.stats.as_dict()["reordered"] == 0


async def test_random_loss_is_the_rate_asked_for_and_the_relay_counts_what_the_receiver_misses() -> None:
    receiver, pair = await _send_through(Impairment(loss=0.05, seed=7))
    missing = PACKETS - len(receiver.got)
    stats = pair.up.line.stats
    assert stats.lost == missing and stats.lost_burst == 0
    assert 0.03 <= missing / PACKETS <= 0.07  # 5 % of 2000: about 100 +- 10 (binomial)


async def test_burst_loss_comes_in_bursts_of_the_mean_length_asked_for() -> None:
    receiver, pair = await _send_through(Impairment(burst_loss=0.05, burst_len=4.0, seed=3))
    got = {seq for seq, _, _ in receiver.got}
    runs, run = [], 0
    for seq in range(PACKETS):
        if seq in got:
            if run:
                runs.append(run)
            run = 0
        else:
            run += 1
    lost = PACKETS - len(got)
    assert pair.up.line.stats.lost_burst == lost and pair.up.line.stats.lost_random == 0
    assert 0.02 <= lost / PACKETS <= 0.09  # bursty: wider than random loss at the same rate
    assert 2.5 <= sum(runs) / len(runs) <= 6.0, runs  # random loss at 5 % would give runs of about 1.05


async def test_delay_and_jitter_hold_each_packet_within_the_window_asked_for() -> None:
    receiver, _ = await _send_through(Impairment(delay_ms=30.0, jitter_ms=20.0, seed=5), spacing_s=0.001)
    delays = sorted(1000 * (received - sent) for _, sent, received in receiver.got)
    assert len(delays) == PACKETS
    assert delays[0] >= 29.0  # never earlier than the fixed delay (the timer's rounding aside)
    median = delays[len(delays) // 2]
    assert 35.0 <= median <= 60.0, median  # 30 + uniform 0..20: 40 at the middle, plus the loop's own latency
    spread = delays[int(0.9 * PACKETS)] - delays[int(0.1 * PACKETS)]
    assert spread >= 10.0  # the jitter is there: 80 % of a uniform 20 ms spread is 16 ms


async def test_reordering_holds_back_the_share_asked_for_and_the_receiver_sees_each_one() -> None:
    receiver, pair = await _send_through(Impairment(reorder=0.1, reorder_ms=40.0, seed=11), spacing_s=0.002)
    stats = pair.up.line.stats
    assert len(receiver.got) == PACKETS
    assert 0.07 <= stats.held_back / PACKETS <= 0.13
    # Each packet held back 40 ms arrives behind the ones sent after it (every 2 ms): seen out of order once.
    assert _reordered(receiver.got) == stats.reordered == stats.held_back


def test_the_same_seed_gives_the_same_fates_and_the_long_run_loss_is_the_sum_asked_for() -> None:
    imp = Impairment(loss=0.015, burst_loss=0.015, burst_len=3.0, jitter_ms=40.0, seed=2)
    first, second = Line(imp), Line(imp)
    assert [first.fate() for _ in range(500)] == [second.fate() for _ in range(500)]
    long = Line(imp)
    for _ in range(100_000):
        long.fate()
    assert long.stats.lost / 100_000 == pytest.approx(imp.expected_loss, abs=0.004)


def test_bad_settings_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"Impairment\.loss"):
        Impairment(loss=1.5)
    with pytest.raises(ValueError, match=r"Impairment\.burst_len"):
        Impairment(burst_loss=0.1, burst_len=0.5)


def test_the_sdp_is_rewritten_to_the_relay_and_names_the_far_sides_media() -> None:
    offer = (
        "v=0\r\no=- 1 2 IN IP4 10.0.0.5\r\ns=pjmedia\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 0 8 101\r\na=rtcp:4001 IN IP4 10.0.0.5\r\na=sendrecv\r\n"
    )
    body, rtp, rtcp = rewrite_sdp(offer, "127.0.0.1", 5555)
    assert rtp == ("10.0.0.5", 4000) and rtcp == ("10.0.0.5", 4001)
    assert "c=IN IP4 127.0.0.1\r\n" in body and "m=audio 5555 RTP/AVP 0 8 101\r\n" in body
    assert "a=rtcp:5555 IN IP4 127.0.0.1\r\n" in body and "10.0.0.5" not in body.split("s=")[1]
    _, _, rtcp = rewrite_sdp(offer.replace("a=rtcp:4001 IN IP4 10.0.0.5\r\n", ""), "127.0.0.1", 5555)
    assert rtcp == ("10.0.0.5", 4001)  # no a=rtcp: the port above RTP's
