"""bridge.sip.reason: the Reason header (RFC 3326) of the caller's side's BYE or CANCEL, read strictly as data and
within bounds, and what it says of the end: a network failure, a ring completed elsewhere, or a hang-up."""

from __future__ import annotations

import pytest

from bridge.events import PeerEnding, PeerReason
from bridge.sip.reason import (
    MAX_TEXT_CHARS,
    MAX_VALUES,
    NETWORK_Q850,
    NETWORK_SIP,
    network_failure,
    peer_ending,
    reasons,
)


def request(method: str, *reason_lines: str) -> str:
    """A BYE or CANCEL (or any request) with these ``Reason`` header lines."""
    cseq = "1 CANCEL" if method == "CANCEL" else f"2 {method}"
    return (
        f"{method} sip:1000@worker SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK-1\r\n"
        "From: <sip:alice@192.0.2.7>;tag=a\r\nTo: <sip:1000@worker>;tag=b\r\nCall-ID: c@h\r\n"
        f"CSeq: {cseq}\r\n" + "".join(f"Reason: {line}\r\n" for line in reason_lines) + "Content-Length: 0\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("header", "values"),
    [
        ('Q.850;cause=41;text="Temporary failure"', [PeerReason("Q.850", 41, "Temporary failure")]),
        ('SIP ; cause = 408 ; text = "RTP timeout"', [PeerReason("SIP", 408, "RTP timeout")]),
        ('q.850;CAUSE=16;Text="x"', [PeerReason("Q.850", 16, "x")]),  # names and known protocols in any case
        ("Q.850;cause=41", [PeerReason("Q.850", 41, "")]),
        ("Q.850", [PeerReason("Q.850", None, "")]),
        ("X-Carrier;cause=7;text=plain", [PeerReason("X-Carrier", 7, "plain")]),  # a token text, another protocol
        (  # commas and semicolons inside the text, an escaped quote
            r'SIP;cause=503;text="down; a, b \"c\"", Q.850;cause=38',
            [PeerReason("SIP", 503, 'down; a, b "c"'), PeerReason("Q.850", 38, "")],
        ),
        ('Q.850;cause=41a;text="x"', [PeerReason("Q.850", None, "x")]),  # a cause that is no number: none
        ("Q.850;cause=123456", [PeerReason("Q.850", None, "")]),  # too many digits: none
        ("Q.850;cause=-1", [PeerReason("Q.850", None, "")]),
        ('Q.850;cause=41;text="unterminated', [PeerReason("Q.850", 41, "")]),  # not one quoted string: no text
        ('Q.850;cause=41;text="a"b"', [PeerReason("Q.850", 41, "")]),
        ("<b>;cause=41", []),  # a protocol that is no token: the value is left out
        ('"SIP";cause=41', []),
        ("", []),
        ("SIP;cause=408, SIP;cause=200", [PeerReason("SIP", 408, "")]),  # one value per protocol: the first
    ],
)
def test_each_value_is_read_strictly(header: str, values: list[PeerReason]) -> None:
    assert list(reasons(request("BYE", header))) == values


def test_values_of_several_headers_are_read_in_order_and_bounded() -> None:
    message = request("BYE", 'SIP;cause=408;text="t"', 'Q.850;cause=41;text="Temporary failure"')
    assert reasons(message) == (PeerReason("SIP", 408, "t"), PeerReason("Q.850", 41, "Temporary failure"))
    many = request("BYE", ", ".join(f"P{i};cause={i}" for i in range(10)))
    assert len(reasons(many)) == MAX_VALUES
    long = request("BYE", f'Q.850;cause=41;text="{"x" * 1000}"')
    (value,) = reasons(long)
    assert len(value.text) <= MAX_TEXT_CHARS and value.cause == 41
    past = request("BYE", "X;text=" + "y" * 600 + ", Q.850;cause=41")  # what lies past a header's bound is not read
    assert [v.protocol for v in reasons(past)] == ["X"]


def test_the_text_is_data_cleaned_and_written_again_never_as_received() -> None:
    message = request("BYE", 'Q.850;cause=16;text="<script>alert(1)</script>\\"\x07\\\\"')
    (value,) = reasons(message)
    assert value.text == '<script>alert(1)</script>"\\x07\\'  # the control character shown, never passed on
    assert value.header() == 'Q.850;cause=16;text="<script>alert(1)</script>\\"\\\\x07\\\\"'
    assert reasons(request("BYE", value.header())) == (value,)  # what is stored reads back as the same value
    undecodable = request("BYE", 'SIP;cause=408;text="caf\udce9"')  # a byte that is not UTF-8, as SWIG hands it over
    assert reasons(undecodable)[0].text == "caf\ufffd"


@pytest.mark.parametrize("cause", sorted(NETWORK_Q850))
def test_the_q850_causes_of_a_failed_network(cause: int) -> None:
    assert network_failure(PeerReason("Q.850", cause)) == f"Q.850 cause {cause}"


@pytest.mark.parametrize("cause", sorted(NETWORK_SIP))
def test_the_sip_causes_of_a_failed_network(cause: int) -> None:
    assert network_failure(PeerReason("SIP", cause)) == f"SIP {cause}"


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (PeerReason("Q.850", 16, "Normal call clearing"), ""),
        (PeerReason("Q.850", 31, ""), ""),
        (PeerReason("SIP", 200, "Call completed elsewhere"), ""),
        (PeerReason("SIP", 486, ""), ""),
        (PeerReason("X-Carrier", 41, ""), ""),  # the numbers of another protocol mean nothing here
        (PeerReason("Q.850", 408, ""), ""),
        (PeerReason("Q.850", 16, "RTP  Timeout"), "RTP timeout"),  # whatever the cause next to it
        (PeerReason("X-Carrier", None, "media timeout (30 s)"), "media timeout"),
    ],
)
def test_other_values_name_no_network_failure_unless_their_text_says_the_media_stopped(
    value: PeerReason, label: str
) -> None:
    assert network_failure(value) == label


def test_what_a_bye_or_a_cancel_says_of_the_end() -> None:
    dropped = peer_ending(request("BYE", 'SIP;cause=200;text="x", Q.850;cause=41;text="Temporary failure"'))
    assert dropped == PeerEnding(
        "BYE", (PeerReason("SIP", 200, "x"), PeerReason("Q.850", 41, "Temporary failure")), "Q.850 cause 41"
    )
    elsewhere = peer_ending(request("CANCEL", 'SIP;cause=200;text="Call completed elsewhere"'))
    assert elsewhere is not None and elsewhere.elsewhere and not elsewhere.network_failure
    assert elsewhere.header() == 'SIP;cause=200;text="Call completed elsewhere"'
    non_selected = peer_ending(request("CANCEL", "Q.850;cause=26"))  # non-selected user clearing
    assert non_selected is not None and non_selected.elsewhere
    assert not peer_ending(request("BYE", "SIP;cause=200")).elsewhere  # type: ignore[union-attr]  # a BYE: a hang-up
    plain = peer_ending(request("CANCEL"))
    assert plain == PeerEnding("CANCEL") and plain.header() == ""
    assert peer_ending(request("INFO", "Q.850;cause=41")) is None
    assert peer_ending("SIP/2.0 200 OK\r\nReason: Q.850;cause=41\r\nCSeq: 2 BYE\r\n\r\n") is None  # a response
