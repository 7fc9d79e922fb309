"""A listener given port 0 for UDP and TCP gets one number free for both (bridge.sip.transports.shared_port)."""

from __future__ import annotations

import socket

import pytest

from bridge.sip.transports import shared_port


def test_a_port_held_by_a_tcp_listener_is_passed_over_for_the_next_candidate() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
    ):
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        udp.bind(("127.0.0.1", 0))
        taken_udp = udp.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        assert shared_port("127.0.0.1", [taken, taken_udp, free]) == free


def test_the_kernels_pick_is_bindable_for_both() -> None:
    port = shared_port("127.0.0.1")
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
    ):
        udp.bind(("127.0.0.1", port))
        tcp.bind(("127.0.0.1", port))


def test_no_candidate_free_says_so() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        with pytest.raises(OSError, match=r"no port free for both UDP and TCP on 127\.0\.0\.1"):
            shared_port("127.0.0.1", [held.getsockname()[1]])
