"""``CALLBRIDGE_PORT_RANGE``: free ports come from the range, a pick is never handed out twice in a row, a port in
use is passed over, and a malformed range is refused naming the variable; a server's port, a pool's and a
softphone's RTP ports come from it too, and without it the kernel (or pjsua) picks."""

from __future__ import annotations

import random
import socket

import pytest

from bridge.devkit import ports
from bridge.devkit.ports import (
    PORT_RANGE_ENV,
    RTP_PORTS_PER_WORKER,
    free_port,
    free_port_block,
    listen_port,
    pool_rtp,
    port_range,
    rtp_block,
    softphone_port_args,
)


@pytest.fixture
def ranged(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    low = 20000 + 40 * random.randrange(200)  # a slice of the range; busy ports in it are passed over
    monkeypatch.setenv(PORT_RANGE_ENV, f"{low}-{low + 39}")
    monkeypatch.setattr(ports, "_cursor", None)
    return low, low + 39


def test_blocks_come_from_the_range_one_after_another(ranged: tuple[int, int]) -> None:
    low, high = ranged
    picks = [free_port_block(3) for _ in range(4)]
    for base in picks:
        assert low <= base and base + 2 <= high
    assert len(set(picks)) == 4  # never the same block again before the range wraps
    assert low <= free_port() <= high


def test_a_port_in_use_is_passed_over(ranged: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    low, _ = ranged
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", low))
        busy.listen()
        monkeypatch.setattr(ports, "_cursor", low)
        assert free_port_block(1) != low


def test_without_the_variable_the_kernel_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PORT_RANGE_ENV, raising=False)
    assert port_range() is None
    assert 1024 <= free_port_block(2) < 65535


@pytest.mark.parametrize("text", ["20000", "abc-def", "30000-20000", "80-90", "20000-70000"])
def test_a_malformed_range_names_the_variable(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv(PORT_RANGE_ENV, text)
    with pytest.raises(ValueError, match=PORT_RANGE_ENV):
        port_range()


def test_servers_rtp_and_softphones_take_their_ports_from_the_range(ranged: tuple[int, int]) -> None:
    low, high = ranged
    assert low <= listen_port() <= high
    first = rtp_block(4)
    assert first % 2 == 0 and low <= first and first + 3 <= high  # RTP even, RTCP odd
    rtp = pool_rtp(1)
    assert rtp["rtp_ports_per_worker"] == RTP_PORTS_PER_WORKER
    assert rtp["rtp_port"] % 2 == 0 and low <= rtp["rtp_port"] and rtp["rtp_port"] + RTP_PORTS_PER_WORKER + 1 <= high
    flags = softphone_port_args()
    assert flags[0::2] == ["--local-port", "--rtp-port"]
    sip, pair = int(flags[1]), int(flags[3])
    assert low <= sip <= high and low <= pair < high and pair % 2 == 0


def test_without_the_range_servers_and_pjsua_pick_any(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PORT_RANGE_ENV, raising=False)
    assert listen_port() == 0 and rtp_block(2) == 0  # bound at once: the kernel's (pjsua's) pick, no race
    assert pool_rtp(2)["rtp_port"] == 0 and softphone_port_args() == []
