"""Who called, and whom they dialled (``bridge.sip.identity``): the caller from a trusted trunk's
P-Asserted-Identity (sip: and tel: URIs) or Remote-Party-ID, From from anyone else, a withheld identity
(``Privacy: id``, RPID ``privacy=full``) as ``anonymous``; the original called number from the oldest Diversion entry
or History-Info's lowest index; malformed values give none, never an exception."""

from __future__ import annotations

import random

import pytest

from bridge.sip.identity import (
    ANONYMOUS,
    CallerFrom,
    Identity,
    call_identity,
    original_called,
    split_entries,
)

PILOT = "+18005550100"  # the trunk's own number, in From
REAL = "+15551234567"


def invite(*headers: str) -> str:
    """An INVITE from a trunk: From is its pilot number, the extra ``headers`` as given, an SDP body."""
    lines = [
        "INVITE sip:1000@10.0.0.5:5060 SIP/2.0",
        "Via: SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bK776asdhds",
        f'From: "Acme" <sip:{PILOT}@203.0.113.7>;tag=1928301774',
        "To: <sip:1000@10.0.0.5>",
        "Call-ID: a84b4c76e66710@pc33.example",
        "CSeq: 314159 INVITE",
        "Contact: <sip:trunk@203.0.113.7:5060>",
        *headers,
        "Content-Type: application/sdp",
        "Content-Length: 0",
    ]
    return "\r\n".join(lines) + "\r\n\r\nv=0\r\nP-Asserted-Identity: <sip:+19999999999@body.example>\r\n"


def trusted(*headers: str) -> Identity:
    return call_identity(invite(*headers), PILOT, trusted=True)


def untrusted(*headers: str) -> Identity:
    return call_identity(invite(*headers), PILOT, trusted=False)


# -- the caller ------------------------------------------------------------------------------------------------


def test_without_identity_headers_the_caller_is_from() -> None:
    assert trusted() == Identity(PILOT, CallerFrom.FROM, "")
    assert untrusted() == Identity(PILOT, CallerFrom.FROM, "")


@pytest.mark.parametrize(
    "header",
    [
        f"P-Asserted-Identity: <sip:{REAL}@trunk.example;user=phone>",
        f'P-Asserted-Identity: "Jane Doe" <sip:{REAL}@trunk.example>',
        f"P-Asserted-Identity: sip:{REAL}@trunk.example",
        f"P-Asserted-Identity: <tel:{REAL}>",
        "P-Asserted-Identity: <tel:+1-555-123-4567;phone-context=+1>",  # visual separators dropped (RFC 3966)
        f"p-asserted-identity: <sips:{REAL}@trunk.example>",
    ],
)
def test_a_trusted_trunks_asserted_identity_names_the_caller(header: str) -> None:
    assert trusted(header) == Identity(REAL, CallerFrom.ASSERTED, "")


def test_the_first_usable_number_of_the_asserted_identity_is_taken() -> None:
    both = f"P-Asserted-Identity: <sip:{REAL}@trunk.example>, <tel:+15559990000>"
    assert trusted(both).caller == REAL
    tel_first = f"P-Asserted-Identity: <tel:{REAL}>, <sip:+15559990000@trunk.example>"
    assert trusted(tel_first).caller == REAL
    named = f'P-Asserted-Identity: "Desk, Front" <sip:frontdesk@pbx.example>, <tel:{REAL}>'  # a name: no number
    assert trusted(named).caller == REAL
    two_headers = ("P-Asserted-Identity: <sip:anonymous@anonymous.invalid>", f"P-Asserted-Identity: <tel:{REAL}>")
    assert trusted(*two_headers).caller == REAL


def test_remote_party_id_names_the_caller_when_there_is_no_asserted_identity() -> None:
    rpid = f'Remote-Party-ID: "Jane" <sip:{REAL}@trunk.example>;party=calling;privacy=off;screen=yes'
    assert trusted(rpid) == Identity(REAL, CallerFrom.REMOTE_PARTY, "")
    called_party = "Remote-Party-ID: <sip:+15550000001@trunk.example>;party=called"
    assert trusted(called_party, f"Remote-Party-ID: <sip:{REAL}@trunk.example>").caller == REAL  # no party: calling
    assert trusted(called_party).caller == PILOT
    asserted = f"P-Asserted-Identity: <tel:{REAL}>"
    assert trusted("Remote-Party-ID: <sip:+15550000002@t.example>;party=calling", asserted).caller == REAL  # PAI first


def test_from_an_untrusted_source_the_identity_headers_are_ignored() -> None:
    rpid = f"Remote-Party-ID: <sip:{REAL}@trunk.example>;party=calling"
    assert untrusted(f"P-Asserted-Identity: <tel:{REAL}>", rpid) == Identity(PILOT, CallerFrom.FROM, "")


@pytest.mark.parametrize(
    "headers",
    [
        ("Privacy: id",),
        ("Privacy: id;critical",),
        ("Privacy: header; ID",),
        (f"Remote-Party-ID: <sip:{REAL}@trunk.example>;party=calling;privacy=full;screen=yes",),
        (f"Remote-Party-ID: <sip:{REAL}@trunk.example>;privacy=uri",),
    ],
)
def test_a_withheld_identity_makes_the_caller_anonymous_whoever_asks(headers: tuple[str, ...]) -> None:
    asserted = f"P-Asserted-Identity: <tel:{REAL}>"
    assert trusted(asserted, *headers) == Identity(ANONYMOUS, CallerFrom.WITHHELD, "")
    assert untrusted(*headers) == Identity(ANONYMOUS, CallerFrom.WITHHELD, "")  # it can only hide: honoured from all


@pytest.mark.parametrize("value", ["none", "user", "history", ""])
def test_other_privacy_values_keep_the_caller(value: str) -> None:
    assert trusted(f"Privacy: {value}", f"P-Asserted-Identity: <tel:{REAL}>").caller == REAL
    rpid = f"Remote-Party-ID: <sip:{REAL}@trunk.example>;party=calling;privacy={value or 'off'}"
    assert trusted(rpid).caller == REAL


@pytest.mark.parametrize(
    "value",
    [
        "",
        "<>",
        "garbage",
        "<sip:trunk.example>",  # no user
        "<sip:@trunk.example>",
        "<sip:alice@trunk.example>",  # a name, not a number
        "<tel:>",
        "<tel:++>",
        "<http://+15551234567@example.com>",
        '"unterminated <sip:+15551234567@x>',
        "<sip:+1555 123@x>",
        "<sip:+15551234567",  # no closing bracket, no host
    ],
)
def test_an_unusable_asserted_identity_leaves_from(value: str) -> None:
    assert trusted(f"P-Asserted-Identity: {value}") == Identity(PILOT, CallerFrom.FROM, "")


def test_caller_written_values_are_cleaned() -> None:
    long = "1" * 300
    assert trusted(f"P-Asserted-Identity: <tel:+{long}>").caller == "+" + "1" * 124 + "..."
    assert untrusted().caller == PILOT
    assert call_identity(invite(), "bob\x01\udcff", trusted=False).caller == "bob\\x01\ufffd"


# -- the original called number ---------------------------------------------------------------------------------


def test_no_diversion_or_history_means_no_original_called_number() -> None:
    assert original_called(invite()) == ""


def test_the_bottom_most_diversion_is_the_original() -> None:
    one = "Diversion: <sip:+15550001111@pbx.example>;reason=unconditional;counter=1"
    assert original_called(invite(one)) == "+15550001111"
    listed = "Diversion: <sip:+15550002222@a.example>;reason=no-answer, <tel:+1-555-000-1111>;reason=unconditional"
    assert original_called(invite(listed)) == "+15550001111"
    headers = ("Diversion: <sip:+15550003333@b.example>;reason=busy", listed)  # the newest on top
    assert original_called(invite(*headers)) == "+15550001111"
    assert untrusted(*headers) == Identity(PILOT, CallerFrom.FROM, "+15550001111")  # data, from any source


def test_a_malformed_bottom_diversion_entry_gives_the_oldest_usable_one() -> None:
    headers = ("Diversion: <sip:+15550002222@a.example>;reason=no-answer", "Diversion: <sip:pbx.example>;counter=1")
    assert original_called(invite(*headers)) == "+15550002222"
    assert original_called(invite("Diversion: garbage", "Diversion: <>")) == ""


def test_a_diversion_asking_for_privacy_hides_the_original() -> None:
    assert original_called(invite("Diversion: <sip:+15550001111@pbx.example>;privacy=full")) == ""
    assert original_called(invite("Diversion: <sip:+15550001111@pbx.example>;privacy=off")) == "+15550001111"


def test_history_info_gives_the_lowest_index_of_a_retargeted_request() -> None:
    entries = (
        "History-Info: <sip:1000@bridge.example?Reason=SIP%3Bcause%3D302>;index=1.1.1;mp=1.1",
        "History-Info: <sip:+15550004444@pbx.example;user=phone>;index=1, <sip:desk@pbx.example>;index=1.1;rc=1",
    )
    assert original_called(invite(*entries)) == "+15550004444"
    assert original_called(invite("History-Info: <sip:1000@bridge.example>;index=1")) == ""  # never retargeted
    order = "History-Info: <sip:222@x>;index=1.2, <sip:111@x>;index=1.10, <sip:333@x>;index=2, <sip:444@x>;index=1.1"
    assert original_called(invite(order)) == "444"  # 1.1 < 1.2 < 1.10 < 2
    skipped = "History-Info: <sip:999@x>;index=one, <sip:888@x>, <sip:777@x>;index=1, <sip:666@x>;index=1.1"
    assert original_called(invite(skipped)) == "777"  # entries without a valid index are not history


def test_diversion_comes_before_history_info() -> None:
    headers = ("History-Info: <sip:111@x>;index=1, <sip:1000@y>;index=1.1", "Diversion: <sip:222@x>;counter=1")
    assert original_called(invite(*headers)) == "222"


def test_history_privacy_hides_the_original() -> None:
    entries = "History-Info: <sip:111@x>;index=1, <sip:1000@y>;index=1.1"
    assert original_called(invite(entries, "Privacy: history")) == ""
    hidden = "History-Info: <sip:111@x?Privacy=history>;index=1, <sip:1000@y>;index=1.1"
    assert original_called(invite(hidden)) == ""


def test_the_original_called_number_is_cleaned_and_bounded() -> None:
    assert original_called(invite(f"Diversion: <sip:{'7' * 300}@x>")) == "7" * 125 + "..."
    assert original_called(invite("Diversion: <sip:sales;ext=1@x>")) == "sales"  # no user parameters
    assert original_called(invite("Diversion: <sip:sales:secret@x>")) == "sales"  # no password
    many = "Diversion: " + ", ".join(f"<sip:{n}@x>" for n in range(1000))
    assert original_called(invite(many)) == "999"  # the oldest (the last) is kept; the newest past 64 are dropped
    headers = [f"Diversion: <sip:{n}@x>, <sip:{n}b@x>" for n in range(40)]
    assert original_called(invite(*headers)) == "39b"  # 80 entries in 40 headers: the bottom-most
    unusable = "Diversion: " + ", ".join(f"<sip:{n}@x>" for n in range(100)) + ", " + ", ".join(["<sip:x>"] * 64)
    assert original_called(invite(unusable)) == ""  # only the 64 oldest are read: none has a user part


# -- the splitter and malformed input ----------------------------------------------------------------------------


def test_entries_split_at_commas_outside_quotes_and_brackets() -> None:
    value = r'"Doe, \"J\"" <sip:1@h;a=b,c>;x=1, <tel:2>,, sip:3@h;y'
    assert split_entries(value) == [r'"Doe, \"J\"" <sip:1@h;a=b,c>;x=1', "<tel:2>", "sip:3@h;y"]


def test_any_text_gives_an_identity_and_never_raises() -> None:
    rng = random.Random(7)
    alphabet = 'sip:tel:+0123456789@<>";,=.-()\\ \t\r\nindex=privacy=party=idPrivacyDiversion\x00\udcff'
    names = ("P-Asserted-Identity", "Remote-Party-ID", "Diversion", "History-Info", "Privacy")
    for _ in range(2000):
        headers = [
            f"{rng.choice(names)}: {''.join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))}"
            for _ in range(rng.randint(0, 4))
        ]
        found = call_identity(invite(*headers), PILOT, trusted=rng.random() < 0.5)
        assert isinstance(found.caller, str) and isinstance(found.original_called, str)
        assert len(found.caller) <= 128 and len(found.original_called) <= 128
        assert "\x00" not in found.caller + found.original_called
    assert call_identity("", "", trusted=True) == Identity("", CallerFrom.FROM, "")
    assert call_identity("not sip at all", "x", trusted=True) == Identity("x", CallerFrom.FROM, "")
