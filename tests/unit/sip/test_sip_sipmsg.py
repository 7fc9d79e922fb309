"""SIP text helpers: user parts of URIs and the request line and headers of an INVITE (RFC 3261)."""

from __future__ import annotations

import pytest

from bridge.sip.sipmsg import (
    body_shorter_than_declared,
    header_values,
    host_part,
    message_body,
    parse_request_head,
    split_message,
    user_part,
)


@pytest.mark.parametrize(
    ("text", "user"),
    [
        ('"Alice" <sip:alice@example.com>;tag=abc', "alice"),
        ("<sip:+15551234@gw.example.com;user=phone>", "+15551234"),
        ("sip:100@127.0.0.1:5060", "100"),
        ("sips:bob;ext=1@example.com", "bob"),
        ("<tel:+15551234;phone-context=example.com>", "+15551234"),
        ("<sip:example.com>", ""),
        ("garbage", ""),
    ],
)
def test_user_part(text: str, user: str) -> None:
    assert user_part(text) == user


def test_host_part() -> None:
    assert host_part("sip:100@127.0.0.1:5060;transport=udp") == "127.0.0.1:5060"
    assert host_part('"X" <sip:a@[::1]:5070>') == "[::1]:5070"


def test_parse_invite_head() -> None:
    message = (
        "INVITE sip:4000@10.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1\r\n"
        "f: <sip:alice@10.0.0.2>;tag=1\r\n"
        "i: abc@10.0.0.2\r\n"
        "X-Account: 42\r\n"
        "Via: SIP/2.0/UDP 10.0.0.3:5060;branch=z9hG4bK2\r\n"
        "\r\n"
        "v=0\r\n"
    )
    head = parse_request_head(message)
    assert head is not None
    assert head.method == "INVITE"
    assert head.uri == "sip:4000@10.0.0.1:5060"
    assert user_part(head.uri) == "4000"
    assert head.headers["from"] == "<sip:alice@10.0.0.2>;tag=1"  # compact form expanded
    assert head.headers["call-id"] == "abc@10.0.0.2"
    assert head.headers["x-account"] == "42"
    assert head.headers["via"].endswith("branch=z9hG4bK1")  # first occurrence wins


def test_a_response_is_not_a_request() -> None:
    assert parse_request_head("SIP/2.0 200 OK\r\n\r\n") is None
    assert parse_request_head("") is None


def test_header_values_finds_every_occurrence_in_any_form() -> None:
    message = (
        "INVITE sip:1@h SIP/2.0\r\n"
        'Authorization: Digest realm="a"\r\n'
        "Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        'authorization: Digest realm="b"\r\n'
        "l: 0\r\n"
        "\r\n"
        "Authorization: in the body, not a header\r\n"
    )
    assert header_values(message, "Authorization") == ['Digest realm="a"', 'Digest realm="b"']
    assert header_values(message, "content-length") == ["0"]  # compact form
    assert header_values(message, "x-missing") == []


@pytest.mark.parametrize(
    ("message", "short"),
    [
        ("INVITE sip:1@h SIP/2.0\r\nContent-Length: 4\r\n\r\nv=0\n", False),
        ("INVITE sip:1@h SIP/2.0\r\nContent-Length: 1200\r\n\r\nv=0\n", True),
        ("INVITE sip:1@h SIP/2.0\r\nContent-Length: 2\r\n\r\nv=0\n", False),  # extra bytes are discarded (§18.3)
        ("INVITE sip:1@h SIP/2.0\r\nl: 5\r\n\r\nv=0\n", True),
        ("INVITE sip:1@h SIP/2.0\r\n\r\nv=0\n", False),  # no Content-Length: the datagram is the message
        ("INVITE sip:1@h SIP/2.0\r\nContent-Length: abc\r\n\r\n", False),
        ("INVITE sip:1@h SIP/2.0\r\nContent-Length: 4\r\n\r\n\udce9\udce9\udce9\udce9", False),  # bytes, not chars
        ("INVITE sip:1@h SIP/2.0\r\nContent-Length: 4\r\n\r\né\udce9\udce9", False),  # é is 2 bytes in UTF-8
    ],
)
def test_body_shorter_than_declared(message: str, short: bool) -> None:
    assert body_shorter_than_declared(message) is short


_INVITE = (
    "INVITE sip:1000@10.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bKp;received=10.0.0.9\r\n"
    "Via: SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bKc\r\n"
    "Record-Route: <sip:10.0.0.9:5070;lr>, <sip:edge.example.com;lr>\r\n"
    'From: "Alice" <sip:alice@example.com>;tag=caller1\r\n'
    "To: <sip:1000@10.0.0.1>\r\n"
    "Call-ID: c-42@192.168.1.5\r\n"
    "CSeq: 7 INVITE\r\n"
    "m: <sip:alice@192.168.1.5:5060;transport=udp>\r\n"
    "Content-Length: 0\r\n\r\n"
)
_ACK = (
    "ACK sip:callbridge@10.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bKa\r\n"
    'From: "Alice" <sip:alice@example.com>;tag=caller1\r\n'
    "To: <sip:1000@10.0.0.1>;tag=ours9\r\n"
    "Call-ID: c-42@192.168.1.5\r\n"
    "CSeq: 7 ACK\r\n"
    "Content-Length: 0\r\n\r\n"
)


def test_dialog_from_the_ack_and_invite_and_the_bye_built_from_it() -> None:
    from bridge.sip.sipmsg import Dialog, build_bye, dialog_from_ack

    dialog = dialog_from_ack(_ACK, _INVITE, "10.0.0.9:5070")
    assert dialog is not None
    assert dialog.call_id == "c-42@192.168.1.5"
    assert dialog.local == "<sip:1000@10.0.0.1>;tag=ours9"  # our side: the ACK's To, with our tag
    assert dialog.remote == '"Alice" <sip:alice@example.com>;tag=caller1'
    assert dialog.target == "sip:alice@192.168.1.5:5060;transport=udp"  # compact Contact, brackets stripped
    assert dialog.routes == ("<sip:10.0.0.9:5070;lr>", "<sip:edge.example.com;lr>")
    assert dialog.destination() == ("10.0.0.9", 5070)  # a route set: its first hop
    assert Dialog.from_json(dialog.to_json()) == dialog  # what Redis keeps round-trips

    bye = build_bye(dialog, "10.0.0.1:40000", "z9hG4bKx", 1795000000).decode()
    head = parse_request_head(bye)
    assert head is not None and head.method == "BYE" and head.uri == dialog.target
    assert head.headers["from"] == dialog.local and head.headers["to"] == dialog.remote
    assert head.headers["call-id"] == dialog.call_id and head.headers["cseq"] == "1795000000 BYE"
    assert header_values(bye, "route") == list(dialog.routes)  # in order (RFC 3261 §12.2.1.1)
    assert head.headers["via"].startswith("SIP/2.0/UDP 10.0.0.1:40000;branch=z9hG4bKx")
    assert "user-agent" not in head.headers  # nothing names the product unless the operator says
    assert (
        parse_request_head(build_bye(dialog, "10.0.0.1:40000", "z9hG4bKy", 1, "lab").decode()).headers["user-agent"]
        == "lab"
    )
    assert bye.endswith("Content-Length: 0\r\n\r\n")


def test_the_bye_of_a_tcp_dialog_goes_over_tcp_any_other_over_udp() -> None:
    from bridge.sip.sipmsg import Dialog, Transport, dialog_from_ack

    tcp = dialog_from_ack(_ACK, _INVITE.replace("SIP/2.0/UDP 10.0.0.9", "SIP/2.0/tcp 10.0.0.9"), "10.0.0.9:5070")
    assert tcp is not None and tcp.transport is Transport.TCP
    assert tcp.to_json()["transport"] == "tcp" and Dialog.from_json(tcp.to_json()).transport is Transport.TCP
    tls = dialog_from_ack(_ACK, _INVITE.replace("SIP/2.0/UDP 10.0.0.9", "SIP/2.0/TLS 10.0.0.9"), "10.0.0.9:5070")
    assert tls is not None and tls.transport is Transport.UDP  # a plain socket cannot speak TLS
    stored = {**tcp.to_json(), "transport": "sctp"}
    assert Dialog.from_json(stored).transport is Transport.UDP


def test_without_routes_the_bye_goes_where_the_invite_came_from_else_to_the_contact() -> None:
    from bridge.sip.sipmsg import Dialog

    plain = Dialog("c", "<sip:a@h>;tag=1", "<sip:b@h>;tag=2", "sip:b@192.168.1.5:5062", peer="127.0.0.1:5099")
    assert plain.destination() == ("127.0.0.1", 5099)
    assert Dialog("c", "l", "r", "sip:b@[::1]:5062").destination() == ("::1", 5062)
    assert Dialog("c", "l", "r", "sips:b@example.com").destination() == ("example.com", 5061)
    assert Dialog("c", "l", "r", "tel:+1555").destination() is None


def test_no_dialog_without_tags_or_from_a_non_ack() -> None:
    from bridge.sip.sipmsg import dialog_from_ack

    assert dialog_from_ack(_INVITE, _INVITE, "") is None  # not an ACK
    untagged = _ACK.replace(";tag=ours9", "")
    assert dialog_from_ack(untagged, _INVITE, "") is None
    assert dialog_from_ack(_ACK, _INVITE.replace("m: <sip:alice@192.168.1.5:5060;transport=udp>\r\n", ""), "") is None


_HEAD = "INVITE sip:2000@h SIP/2.0{eol}Call-ID: c1{eol}X-Callbridge-Source: 10.0.0.1:5060{eol}"


@pytest.mark.parametrize(
    ("message", "sources", "body"),
    [
        (_HEAD.format(eol="\r\n") + "\r\nv=0\r\n", ["10.0.0.1:5060"], "v=0\r\n"),
        (_HEAD.format(eol="\n") + "\nv=0\n", ["10.0.0.1:5060"], "v=0\n"),
        ("INVITE sip:2000@h SIP/2.0\r\nCall-ID: c1\nX-A: 1\r\n\nv=0", [], "v=0"),
        # a blank line of a bare LF after CRLF lines ends the header block: what follows is body, header-like or not
        (
            "INVITE sip:2000@h SIP/2.0\r\nCall-ID: c1\r\n\nX-Callbridge-Source: 192.0.2.7:5060\r\n\r\nv=0\r\n",
            [],
            "X-Callbridge-Source: 192.0.2.7:5060\r\n\r\nv=0\r\n",
        ),
        ("INVITE sip:2000@h SIP/2.0\r\nCall-ID: c1\n\r\nX-Callbridge-Source: 192.0.2.7:5060\r\n\r\n", [], None),
    ],
)
def test_the_header_block_ends_at_the_first_empty_line_crlf_or_lf(
    message: str, sources: list[str], body: str | None
) -> None:
    assert header_values(message, "x-callbridge-source") == sources
    head = parse_request_head(message)
    assert head is not None and head.headers["call-id"] == "c1"
    assert ("x-callbridge-source" in head.headers) == bool(sources)
    if body is not None:
        assert message_body(message) == body
    lines, _ = split_message(message)
    assert lines[0] == "INVITE sip:2000@h SIP/2.0" and not any(line.endswith("\r") for line in lines)
