"""The media source filter's pure parts (bridge.sip.rtpguard), and the filter on a real socket."""

from __future__ import annotations

import socket

import pytest

from bridge.sip.rtpguard import MediaGuard, media_source, random_rtp_start, sdp_connection_ip, source_filter

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
        ("151.101.1.9", "185.199.108.7", "151.101.1.9"),  # a carrier's media gateway: the SDP names it
        ("10.0.0.5", "185.199.108.7", "185.199.108.7"),  # a phone behind NAT: media comes from where SIP does
        ("0.0.0.0", "185.199.108.7", "185.199.108.7"),  # RFC 2543 hold
        ("10.0.0.5", "10.0.0.9", "10.0.0.5"),  # a private network end to end: the SDP is right
        ("127.0.0.1", None, "127.0.0.1"),
        (None, "185.199.108.7", "185.199.108.7"),
        ("2001:db8::1", None, None),  # IPv6: no filter
    ],
)
def test_media_source(sdp_ip: str | None, signalling_ip: str | None, expected: str | None) -> None:
    assert media_source(sdp_ip, signalling_ip) == expected


def test_the_filter_program_compares_the_ipv4_source_address() -> None:
    program = source_filter("127.0.0.1")
    assert len(program) == 4 * 8  # four struct sock_filter
    assert program[8 + 4 : 8 + 8] == (0x7F000001).to_bytes(4, "little")


def test_random_rtp_ports_are_even_and_inside_the_range() -> None:
    drawn = {random_rtp_start(20000, 99) for _ in range(400)}
    assert all(p % 2 == 0 and 20000 <= p < 20099 for p in drawn)
    assert len(drawn) > 20


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
        guard.lock("127.0.0.1")
        for _ in range(5):
            stranger.sendto(b"x" * 20, target.getsockname())
        friend.sendto(b"ok", target.getsockname())
        target.settimeout(2)
        assert target.recv(100) == b"ok"
        assert guard.close() == 5
