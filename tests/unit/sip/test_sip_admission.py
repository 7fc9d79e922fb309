"""bridge.sip.admission: who may take a call slot (per source, and the unlisted sources' share, so that listed trunks
find room), what is named at WARNING and how often, and the early look whose verdict onIncomingCall reuses."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from bridge.config import Settings
from bridge.sip.access import (
    CALLS_PER_SOURCE_BUSY,
    UNLISTED_SHARE_BUSY,
    DigestFields,
    digest_response,
    parse_auth_params,
)
from bridge.sip.admission import Admission, SlotReason, SourceWarnings, short_session
from bridge.sip.sipconfig import SipConfig

TRUNK = "198.51.100.9"


def admission(live: list[str], **config: object) -> Admission:
    settings = {"allow_any_source": True, "trunk_sources": (f"{TRUNK}/32",), **config}
    return Admission(SipConfig(**settings), lambda: live, lambda: 4)  # type: ignore[arg-type]


def invite(source_header: str = "", authorization: str = "") -> str:
    extra = (f"X-Callbridge-Source: {source_header}\r\n" if source_header else "") + (
        f"Authorization: {authorization}\r\n" if authorization else ""
    )
    return (
        "INVITE sip:1000@worker SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-1\r\n"
        "From: <sip:alice@192.0.2.1>;tag=1\r\nTo: <sip:1000@worker>\r\nCall-ID: a@b\r\nCSeq: 1 INVITE\r\n"
        f"{extra}Content-Length: 0\r\n\r\n"
    )


def test_unlisted_sources_together_hold_half_the_slots_and_the_trunk_is_never_held() -> None:
    live: list[str] = ["192.0.2.1", "192.0.2.2"]  # two unlisted sources, a call each
    gate = admission(live)
    refused = gate.slot("192.0.2.3:5060")
    assert refused is not None and (refused.status, refused.reason) == (486, UNLISTED_SHARE_BUSY)
    assert refused.detail == "2 calls from unlisted sources up (unlisted_share 0.5 of 4)"
    assert gate.slot(f"{TRUNK}:5060") is None  # the room kept for it
    live.append(TRUNK)
    assert gate.slot("192.0.2.3:5060") is not None  # a trunk's call does not make room for strangers
    live[:] = ["192.0.2.1"]
    assert gate.slot("192.0.2.3:5060") is None


def test_the_share_applies_only_where_trunks_are_listed_and_one_turns_it_off() -> None:
    full = ["192.0.2.1", "192.0.2.2", "192.0.2.4"]
    assert admission(full, trunk_sources=()).slot("192.0.2.3:5060") is None  # nothing listed: nothing to keep
    assert admission(full, unlisted_share=1.0).slot("192.0.2.3:5060") is None
    assert admission([], unlisted_share=0.0).slot("192.0.2.3:5060") is not None  # trunks only
    assert admission(["192.0.2.1"], unlisted_share=0.3).slot("192.0.2.3:5060") is not None  # 4 * 0.3: 1, rounded down


def test_a_front_callers_share_counts_by_their_own_address() -> None:
    gate = admission(["192.0.2.1", "192.0.2.2"], trusted_fronts=("10.0.0.1/32",))
    message = invite(source_header="192.0.2.3:5060")
    assert gate.caller_source("10.0.0.1:5060", message) == "192.0.2.3:5060"
    verdict = gate.screen(message, "10.0.0.1:5060")
    assert (verdict.status, verdict.reason) == (486, UNLISTED_SHARE_BUSY)
    trunk = gate.screen(invite(source_header=f"{TRUNK}:5060"), "10.0.0.1:5060")
    assert trunk.status == 0


def test_calls_per_source_exempts_listed_trunks_and_is_named_once_per_source(caplog: pytest.LogCaptureFixture) -> None:
    live = ["192.0.2.1", "192.0.2.1", TRUNK, TRUNK, TRUNK]
    gate = admission(live, unlisted_share=1.0)
    with caplog.at_level(logging.WARNING, "bridge.sip"):
        first, second = gate.slot("192.0.2.1:5060"), gate.slot("192.0.2.1:5061")
        assert gate.slot(f"{TRUNK}:5060") is None  # listed: no limit
    assert first is not None and (first.status, first.reason) == (486, CALLS_PER_SOURCE_BUSY)
    assert second is not None
    named = [r.getMessage() for r in caplog.records if "sip_calls_per_source" in r.getMessage()]
    assert named == [
        "192.0.2.1 holds 2 calls at this worker: its new calls get 486 (sip_calls_per_source 2; a trunk's addresses "
        "belong in sip_trunk_sources or sip_allowed_sources, which have no limit); said once per source every 10 min"
    ]


def test_source_warnings_come_once_per_source_per_interval() -> None:
    now = [0.0]
    warnings = SourceWarnings(every_s=600.0, max_tracked=2, clock=lambda: now[0])
    assert warnings.due(SlotReason.UNLISTED_SHARE, "a")
    assert not warnings.due(SlotReason.UNLISTED_SHARE, "a")
    assert warnings.due(SlotReason.CALLS_PER_SOURCE, "a")  # another reason, another line
    assert warnings.due(SlotReason.UNLISTED_SHARE, "b")
    now[0] = 600.0
    assert warnings.due(SlotReason.UNLISTED_SHARE, "b")


def test_what_the_early_look_admitted_is_not_checked_twice() -> None:
    """A digest nonce is good once: the INVITE the early look authenticated is not checked again in onIncomingCall
    (that check would call its nonce replayed); a second screening of it is a fresh look, which does."""
    gate = admission([], auth_users={"trunk": "pw"}, allow_any_source=False)
    challenge = gate.early(invite(), "192.0.2.1:5060")
    assert challenge is not None and challenge.status == 401
    _scheme, params = parse_auth_params(challenge.headers["WWW-Authenticate"])
    uri = "sip:1000@worker"
    signed = DigestFields(
        "trunk", params["realm"], "INVITE", uri, params["nonce"], qop="auth", nc="00000001", cnonce="c"
    )
    authorization = (
        f'Digest username="trunk", realm="{params["realm"]}", nonce="{params["nonce"]}", uri="{uri}", '
        f'response="{digest_response(signed, "pw")}", qop=auth, nc=00000001, cnonce="c"'
    )
    vetted = invite(authorization=authorization)
    assert gate.early(vetted, "192.0.2.1:5060") is None
    admitted = gate.screen(vetted, "192.0.2.1:5060")
    assert (admitted.status, admitted.user) == (0, "trunk")  # the early look's verdict
    again = gate.screen(vetted, "192.0.2.1:5060")
    assert (again.status, again.detail) == (401, "nonce or nc replayed")  # a fresh look checks, and finds it used


def test_the_settings_check_the_trunk_list_and_the_share() -> None:
    assert Settings(sip_trunk_sources=("203.0.113.0/24",)).sip_unlisted_share == 0.5
    with pytest.raises(ValidationError, match="sip_trunk_sources"):
        Settings(sip_trunk_sources=("not-a-network",))
    with pytest.raises(ValidationError, match="sip_unlisted_share"):
        Settings(sip_unlisted_share=1.5)
    with pytest.raises(ValueError, match=r"SipConfig\.unlisted_share"):
        SipConfig(unlisted_share=-0.1)
    with pytest.raises(ValueError, match=r"SipConfig\.trunk_sources"):
        SipConfig(trunk_sources=("nope",))


def timed_invite(*headers: str) -> str:
    """An INVITE with these session-timer header lines (RFC 4028)."""
    return invite().replace("Content-Length: 0", "".join(f"{h}\r\n" for h in headers) + "Content-Length: 0")


@pytest.mark.parametrize(
    ("headers", "min_se"),
    [
        (("Session-Expires: 60",), 90),  # below the bridge's Min-SE
        (("Supported: timer", "Session-Expires: 89;refresher=uac", "Min-SE: 60"), 90),
        (("x: 30",), 90),  # the compact form
        (("Session-Expires: 100", "Min-SE: 120"), 120),  # below its own Min-SE: the larger is what a retry needs
    ],
)
def test_a_session_interval_below_min_se_is_refused_422_before_it_is_a_call(
    headers: tuple[str, ...], min_se: int
) -> None:
    message = timed_invite(*headers)
    verdict = short_session(message, 90)
    assert verdict is not None
    assert (verdict.status, verdict.reason, verdict.headers) == (
        422,
        "Session Interval Too Small",
        {"Min-SE": str(min_se)},
    )
    early = admission([]).early(message, "192.0.2.1:5060")  # the early look answers it: no call is made
    assert early is not None and early.status == 422


@pytest.mark.parametrize(
    "headers",
    [
        (),  # no session timer asked for
        ("Session-Expires: 90",),
        ("Session-Expires: 1800;refresher=uas", "Min-SE: 90"),
        ("Session-Expires: sixty",),  # pjsip's parser judges what does not parse
        ("Session-Expires: 99999999999",),
    ],
)
def test_a_session_interval_at_min_se_or_none_at_all_is_let_through(headers: tuple[str, ...]) -> None:
    message = timed_invite(*headers)
    assert short_session(message, 90) is None
    assert admission([]).early(message, "192.0.2.1:5060") is None


def test_who_may_call_is_judged_before_the_session_interval() -> None:
    message = timed_invite("Session-Expires: 60")
    gate = Admission(SipConfig(allowed_sources=("198.51.100.0/24",)), lambda: [], lambda: 4)
    refused = gate.early(message, "192.0.2.1:5060")
    assert refused is not None and refused.status == 403  # a stranger learns nothing of the bridge's timers
