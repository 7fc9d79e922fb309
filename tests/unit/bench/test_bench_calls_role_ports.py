"""``bench calls``' load callers and loopback apps take their SIP and RTP ports from ``CALLBRIDGE_PORT_RANGE`` when
it is set (``RolePorts.pick``), and any without it; the ports reach the role's process through its command line."""

from __future__ import annotations

import random

import pytest

from bench.calls import cli
from bench.calls.callers import RolePorts
from bridge.devkit import ports
from bridge.devkit.ports import PORT_RANGE_ENV, RTP_PORTS_PER_WORKER


@pytest.fixture
def ranged(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    low = 20000 + 100 * random.randrange(100)  # a slice of the range; busy ports in it are passed over
    monkeypatch.setenv(PORT_RANGE_ENV, f"{low}-{low + 99}")
    monkeypatch.setattr(ports, "_cursor", None)
    return low, low + 99


def test_a_callers_ports_come_from_the_range(ranged: tuple[int, int]) -> None:
    low, high = ranged
    picked = RolePorts.pick(tls=True)
    assert low <= picked.port <= high and low <= picked.tls_port <= high and picked.port != picked.tls_port
    assert picked.rtp_port % 2 == 0 and picked.rtp_port_range == RTP_PORTS_PER_WORKER  # RTP even, RTCP odd
    assert low <= picked.rtp_port and picked.rtp_port + RTP_PORTS_PER_WORKER + 1 <= high  # and the pair after
    assert not picked.rtp_port <= picked.port < picked.rtp_port + RTP_PORTS_PER_WORKER + 2
    assert RolePorts.pick().tls_port == 0  # no TLS listener: no TLS port


def test_a_loopbacks_given_sip_port_is_kept_and_its_rtp_comes_from_the_range(ranged: tuple[int, int]) -> None:
    low, high = ranged
    picked = RolePorts.pick(low)
    assert picked.port == low and picked.tls_port == 0
    assert low <= picked.rtp_port <= high - RTP_PORTS_PER_WORKER - 1


def test_without_the_range_the_roles_take_any_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PORT_RANGE_ENV, raising=False)
    assert RolePorts.pick(tls=True) == RolePorts()  # 0 everywhere: the kernel and pjsua pick, as before
    assert RolePorts.pick(5070) == RolePorts(port=5070)


def test_the_ports_reach_the_role_through_its_command_line() -> None:
    picked = RolePorts(port=20010, tls_port=20011, rtp_port=20012, rtp_port_range=16)
    args = cli._parser().parse_args(["--role", "caller", *picked.args()])
    assert RolePorts(args.port, args.tls_port, args.rtp_port, args.rtp_port_range) == picked
