"""The media source filter's pure parts (bridge.sip.rtpguard), and the filter on a real socket."""

from __future__ import annotations

import socket

import pytest

from bridge.devkit.ports import free_port_block
from bridge.sip.rtpguard import (
    UDP_HEADER_BYTES,
    MediaGuard,
    media_sources,
    random_rtp_start,
    sdp_connection_ip,
    source_filter,
)

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 185.199.108.7\r\ns=-\r\nc=IN IP4 185.199.108.7\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0\r\nc=IN IP4 151.101.1.9\r\na=rtpmap:0 PCMU/8000\r\n"
    "m=video 4002 RTP/AVP 96\r\nc=IN IP4 192.0.2.1\r\n"
)


def test_the_audio_streams_connection_address_wins_over_the_sessions() -> None:
    assert sdp_connection_ip(OFFER) == "151.101.1.9"
    assert sdp_connection_ip(OFFER.replace("c=IN IP4 151.101.1.9\r\n", "")) == "185.199.108.7"
    assert sdp_connection_ip("v=0\r\nm=audio 4000 RTP/AVP 0\r\n") is None


@pytest.mark.parametrize(
    ("sdp_ip", "signalling_ip", "expected"),
    [
        ("151.101.1.9", "185.199.108.7", ("151.101.1.9", "185.199.108.7")),  # a carrier's media gateway, or itself
        ("10.0.0.5", "185.199.108.7", ("185.199.108.7",)),  # a phone behind NAT: media comes from where SIP does
        ("0.0.0.0", "185.199.108.7", ("185.199.108.7",)),  # RFC 2543 hold
        ("10.0.0.5", "10.0.0.9", ("10.0.0.5", "10.0.0.9")),  # a private network end to end
        ("192.0.2.2", "127.0.0.1", ("192.0.2.2", "127.0.0.1")),  # a softphone announcing its other address
        ("127.0.0.1", "127.0.0.1", ("127.0.0.1",)),
        ("127.0.0.1", None, ("127.0.0.1",)),
        (None, "185.199.108.7", ("185.199.108.7",)),
        ("2001:db8::1", None, ()),  # IPv6: no filter
    ],
)
def test_media_sources(sdp_ip: str | None, signalling_ip: str | None, expected: tuple[str, ...]) -> None:
    assert media_sources(sdp_ip, signalling_ip) == expected


def test_the_filter_program_compares_the_ipv4_source_address_with_each_host() -> None:
    program = source_filter(["127.0.0.1"])
    assert len(program) == 4 * 8  # four struct sock_filter
    assert program[8 + 4 : 8 + 8] == (0x7F000001).to_bytes(4, "little")
    two = source_filter(["127.0.0.1", "192.0.2.2"], UDP_HEADER_BYTES)
    assert len(two) == 5 * 8
    assert two[16 + 4 : 16 + 8] == (0xC0000202).to_bytes(4, "little")
    assert two[24 + 4 : 24 + 8] == UDP_HEADER_BYTES.to_bytes(4, "little")  # a stranger's datagram, cut


def test_random_rtp_ports_are_even_and_inside_the_range() -> None:
    drawn = {random_rtp_start(20000, 99) for _ in range(400)}
    assert all(p % 2 == 0 and 20000 <= p < 20099 for p in drawn)
    assert len(drawn) > 20


def test_the_drawn_rtp_pair_is_one_no_live_socket_holds() -> None:
    """A live call's sockets hold their pair: the next draw is a free pair, never one pjsua would fail to bind."""
    first = free_port_block(10) // 2 * 2 + 2  # 8 ports (4 pairs) inside a free block
    held = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for sock, port in zip(held, (first, first + 2 + 1, first + 6), strict=True):  # an RTP, an RTCP, an RTP port
            sock.bind(("127.0.0.1", port))
        assert {random_rtp_start(first, 7, "127.0.0.1") for _ in range(40)} == {first + 4}
    finally:
        for sock in held:
            sock.close()


def test_the_draw_moves_off_the_pair_it_starts_at_while_another_is_free() -> None:
    """pjsua restarts at the account's RTP port only when a modify changes it: the draw names another pair than the
    current one while one is free, and the current one when it is the only free pair."""
    first = free_port_block(10) // 2 * 2 + 2  # a span of 7: the pairs at first, first + 2 and first + 4
    drawn = {random_rtp_start(first, 7, "127.0.0.1", avoid=first + 2) for _ in range(60)}
    assert drawn == {first, first + 4}
    held = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    try:
        for sock, port in zip(held, (first, first + 4), strict=True):
            sock.bind(("127.0.0.1", port))
        assert {random_rtp_start(first, 7, "127.0.0.1", avoid=first + 2) for _ in range(20)} == {first + 2}
    finally:
        for sock in held:
            sock.close()


def test_a_locked_socket_drops_and_counts_other_sources() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as target,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as friend,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger,
    ):
        target.bind(("127.0.0.1", 0))
        friend.bind(("127.0.0.1", 0))
        try:
            stranger.bind(("127.0.0.3", 0))
        except OSError:
            pytest.skip("127.0.0.3 is not usable here")
        guard = MediaGuard({"t": socket.socket(fileno=target.dup().detach())})
        guard.lock(("127.0.0.1",))
        for _ in range(5):
            stranger.sendto(b"x" * 20, target.getsockname())
        friend.sendto(b"ok", target.getsockname())
        target.settimeout(2)
        assert target.recv(100) == b"ok"
        assert guard.close() == 5


def test_two_hosts_are_admitted_and_a_sampled_stranger_arrives_empty_with_its_address() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as target,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as one,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as two,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger,
    ):
        target.bind(("127.0.0.1", 0))
        one.bind(("127.0.0.1", 0))
        try:
            two.bind(("127.0.0.2", 0))
            stranger.bind(("127.0.0.3", 0))
        except OSError:
            pytest.skip("127.0.0.2 and 127.0.0.3 are not usable here")
        target.settimeout(2)
        guard = MediaGuard({"t": socket.socket(fileno=target.dup().detach())})
        guard.lock(("127.0.0.1", "127.0.0.2"))
        stranger.sendto(b"x" * 20, target.getsockname())
        one.sendto(b"one", target.getsockname())
        two.sendto(b"two", target.getsockname())
        assert [target.recvfrom(100)[0] for _ in range(2)] == [b"one", b"two"]
        assert guard.sample(target.getsockname()[1])
        stranger.sendto(b"x" * 172, target.getsockname())
        assert target.recvfrom(100) == (b"", stranger.getsockname())  # the header only: no RTP for pjmedia
        guard.strict()
        stranger.sendto(b"x" * 20, target.getsockname())
        one.sendto(b"one", target.getsockname())
        assert target.recv(100) == b"one"
        assert guard.close() == 2
