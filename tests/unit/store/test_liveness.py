"""The SIP liveness probe: which worker ids are SIP addresses, the OPTIONS it sends, what counts as an answer, and
what a closed or a silent port says."""

from __future__ import annotations

import socket

import pytest

from bridge.store.liveness import answers_sip, is_answer, options_request, sip_address


@pytest.mark.parametrize(
    ("worker", "address"),
    [
        ("10.77.0.21:5071", ("10.77.0.21", 5071)),
        ("[::1]:5072", ("::1", 5072)),
        ("::1:5072", ("::1", 5072)),
        ("host-1234", None),  # a default worker id (host name and pid): nothing to ask
        ("127.0.0.1:0", None),  # a worker without a fixed SIP port
        ("127.0.0.1:70000", None),
        (":5070", None),
    ],
)
def test_a_worker_id_is_its_sip_address_or_nothing_to_ask(worker: str, address: tuple[str, int] | None) -> None:
    assert sip_address(worker) == address


def test_the_options_request_names_the_worker_and_the_sender_and_only_its_own_answer_counts() -> None:
    request = options_request("::1", 5072, ("::1", 40000), "abc123").decode()
    lines = request.split("\r\n")
    assert lines[0] == "OPTIONS sip:[::1]:5072 SIP/2.0"
    assert lines[1].startswith("Via: SIP/2.0/UDP [::1]:40000;branch=z9hG4bK") and lines[1].endswith(";rport")
    assert "Call-ID: abc123" in lines and "CSeq: 1 OPTIONS" in lines and request.endswith("\r\n\r\n")
    for status in (b"200 OK", b"403 Forbidden", b"503 Service Unavailable"):
        assert is_answer(b"SIP/2.0 " + status + b"\r\nCall-ID: abc123\r\n\r\n", "abc123")
    assert not is_answer(b"SIP/2.0 200 OK\r\nCall-ID: other\r\n\r\n", "abc123")
    assert not is_answer(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: abc123\r\n\r\n", "abc123")


async def test_a_closed_port_and_a_silent_one_are_dead() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        assert await answers_sip(f"127.0.0.1:{port}", timeout_s=0.3) is False  # received, never answered
        assert silent.recv(65535).startswith(b"OPTIONS sip:127.0.0.1:%d SIP/2.0" % port)
    assert await answers_sip(f"127.0.0.1:{port}", timeout_s=5.0) is False  # closed now: ICMP port unreachable
    assert await answers_sip("host-1234") is False
