"""Who may call: the source allowlist (``SipConfig.allowed_sources``, and per dialplan ``enforce_sources``) and
digest authentication of trunks (``SipConfig.auth_users``), against the gateway test app in a subprocess.

A second source address on loopback (127.0.0.2, which Linux routes to ``lo`` like all of 127/8) plays the
stranger. Digest retries are computed here from RFC 2617 (``bridge.sip.access.digest_response``), by SIPp's
``[authentication]``, and by pjsip's own client (the softphone's ``--auth``).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from _helpers import (
    LOCALHOST,
    Finished,
    GatewayApp,
    RawSip,
    SipResponse,
    describe,
    free_port,
    run_sipp,
    run_softphone,
    sdp_offer,
    sipp_failure,
)

from bridge.devkit.ports import can_bind
from bridge.sip.access import DigestFields, digest_response, parse_auth_params

pytestmark = pytest.mark.integration

needs_sipp = pytest.mark.skipif(
    shutil.which("sipp") is None, reason="sipp is not installed (apt-get install sip-tester)"
)
STRANGER = "127.0.0.2"
USER, PASSWORD, REALM = "trunk1", "s3cret:with-colon", "trunks.example"
PCMU = {0: "PCMU/8000"}


needs_stranger = pytest.mark.skipif(not can_bind(STRANGER), reason="cannot bind 127.0.0.2 here")


def stop(app: GatewayApp) -> Finished:
    app.wait_calls_ended()  # the BYE of the last accepted call
    finished = app.stop()
    assert finished.returncode == 0, describe(finished)
    assert finished.report is not None, describe(finished)
    return finished


def authorization(
    challenge: SipResponse,
    uri: str,
    *,
    user: str = USER,
    password: str = PASSWORD,
    nc: str = "00000001",
    cnonce: str = "0a4f113b",
    method: str = "INVITE",
    nonce: str | None = None,
) -> str:
    """An ``Authorization`` header answering ``challenge`` (RFC 2617 §3.2.2, qop=auth), or signing ``nonce``."""
    scheme, params = parse_auth_params(challenge.headers["www-authenticate"])
    assert scheme == "digest", challenge.raw
    nonce = nonce or params["nonce"]
    signed = DigestFields(user, params["realm"], method, uri, nonce, qop="auth", nc=nc, cnonce=cnonce)
    response = digest_response(signed, password)
    return (
        f'Authorization: Digest username="{user}", realm="{params["realm"]}", nonce="{nonce}", '
        f'uri="{uri}", response="{response}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"'
    )


def challenge_and_answer(
    raw: RawSip, port: int, call_id: str, **credentials: str
) -> tuple[SipResponse, SipResponse, list[int]]:
    """An INVITE, then the same INVITE (CSeq 2) answering its challenge with ``credentials`` (default: the right
    user and password). Returns the challenge, the answer and what the answer's exchange saw."""
    uri = f"sip:100@{LOCALHOST}:{port}"
    challenge, _ = raw.invite(sdp_offer(free_port(), PCMU), call_id=call_id)
    answer, seen = raw.invite(
        sdp_offer(free_port(), PCMU), call_id=call_id, cseq=2, extra=authorization(challenge, uri, **credentials)
    )
    return challenge, answer, seen


# -- source allowlist ------------------------------------------------------------------------------------------


@needs_stranger
def test_allowlisted_source_is_accepted_and_others_get_403() -> None:
    app = GatewayApp("--mode", "silent", "--allow", "127.0.0.1/32", "--allow", "10.0.0.0/8")
    try:
        with RawSip(app.port) as friend, RawSip(app.port, local_host=STRANGER) as stranger:
            accepted, _ = friend.invite(sdp_offer(free_port(), PCMU))
            refused, seen = stranger.invite(sdp_offer(free_port(), PCMU))
            refused_again, _ = stranger.invite(sdp_offer(free_port(), PCMU))
    finally:
        finished = stop(app)
    assert accepted.status == 200
    assert (refused.status, refused.reason) == (403, "Forbidden (source address not allowed)"), seen
    assert seen == [403]  # refused before pjsua makes it a call (bridge.sip.admission): no 100 Trying, no call slot
    assert refused_again.status == 403
    report = finished.report
    assert report is not None
    assert report["rejected"] == {"403": 2}  # counted by status code
    assert [r["source"].split(":")[0] for r in report["rejections"]] == [STRANGER, STRANGER]  # on_rejected
    assert [r["detail"] for r in report["rejections"]] == ["not in SipConfig.allowed_sources"] * 2
    (call,) = report["calls"]  # the app saw only the allowed one
    assert call["remote_ip"] == LOCALHOST


@needs_stranger
def test_invite_flood_from_a_stranger_is_refused_without_hurting_the_worker() -> None:
    """300 INVITEs at once from a refused source: each is refused (403, before pjsua makes it a call: no call slot,
    no media sockets), counted, and the worker stays up for an allowed caller."""
    app = GatewayApp("--mode", "silent", "--allow", "127.0.0.1/32")
    try:
        with RawSip(app.port, local_host=STRANGER) as stranger:
            uri = f"sip:100@{LOCALHOST}:{app.port}"
            for n in range(300):
                request = stranger._request(
                    "INVITE", uri, f"flood-{n}", 1, f"z9hG4bKflood{n}", body=sdp_offer(free_port(), PCMU)
                )
                stranger.sock.sendto(request, stranger.target)
            time.sleep(2.0)
        assert app.proc.poll() is None, "the worker died under the flood"
        with RawSip(app.port) as friend:
            accepted, seen = friend.invite(sdp_offer(free_port(), PCMU))
    finally:
        finished = stop(app)
    assert accepted.status == 200, seen
    report = finished.report
    assert report is not None
    assert set(report["rejected"]) <= {"403", "486"} and report["rejected"].get("403", 0) >= 4, report["rejected"]
    assert report["refused_held"] == 0  # every refused call's pjsua2 object was released
    assert [call["remote_ip"] for call in report["calls"]] == [LOCALHOST]


@needs_stranger
def test_dialplan_allowlist_refuses_with_403_through_the_app() -> None:
    """``IncomingCall.enforce_sources`` (what a dialplan's allowed_sources calls): the app gets the call, the
    check refuses it with the same 403 and counts it like the gateway's own."""
    app = GatewayApp("--mode", "silent", "--dialplan-allow", "127.0.0.1")
    try:
        with RawSip(app.port) as friend, RawSip(app.port, local_host=STRANGER) as stranger:
            accepted, _ = friend.invite(sdp_offer(free_port(), PCMU))
            refused, seen = stranger.invite(sdp_offer(free_port(), PCMU))
    finally:
        finished = stop(app)
    assert accepted.status == 200
    assert (refused.status, refused.reason) == (403, "Forbidden (source address not allowed)"), seen
    report = finished.report
    assert report is not None
    assert report["rejected"] == {"403": 1}
    assert report["rejections"][0]["detail"] == "not in the dialplan's allowed sources"
    allowed, stranger_call = report["calls"]
    assert allowed["answered"] and "refused_by_dialplan" not in allowed
    assert stranger_call["refused_by_dialplan"] is True
    assert (stranger_call["answered"], stranger_call["hangup_code"]) == (False, 403)


@needs_stranger
def test_allowlist_is_checked_before_digest_auth() -> None:
    """A stranger is refused for its address; it never gets a challenge to work on."""
    app = GatewayApp("--mode", "silent", "--allow", "127.0.0.1", "--auth-user", f"{USER}:{PASSWORD}")
    try:
        with RawSip(app.port, local_host=STRANGER) as stranger:
            refused, _ = stranger.invite(sdp_offer(free_port(), PCMU))
    finally:
        finished = stop(app)
    assert refused.status == 403 and "www-authenticate" not in refused.headers
    assert finished.report is not None and finished.report["rejected"] == {"403": 1}


# -- digest authentication -------------------------------------------------------------------------------------


def test_digest_challenge_then_retry_is_accepted() -> None:
    app = GatewayApp("--mode", "silent", "--auth-user", f"{USER}:{PASSWORD}", "--auth-realm", REALM)
    try:
        with RawSip(app.port) as raw:
            challenge, retry, retry_seen = challenge_and_answer(raw, app.port, "digest-1")
    finally:
        finished = stop(app)
    assert (challenge.status, challenge.reason) == (401, "Unauthorized"), challenge.raw
    scheme, params = parse_auth_params(challenge.headers["www-authenticate"])
    assert scheme == "digest"
    assert params["realm"] == REALM
    assert params["algorithm"] == "MD5" and params["qop"] == "auth"
    assert len(params["nonce"]) == 72 and "stale" not in params
    assert retry.status == 200, retry_seen
    report = finished.report
    assert report is not None
    assert report["rejected"] == {"401": 1}  # the challenge counts once
    (call,) = report["calls"]
    assert call["auth_user"] == USER


def test_digest_wrong_password_and_unknown_user_get_403() -> None:
    app = GatewayApp("--mode", "silent", "--auth-user", f"{USER}:{PASSWORD}")
    try:
        with RawSip(app.port) as raw:
            first, wrong, _ = challenge_and_answer(raw, app.port, "wrong-1", password="guess")
            second, unknown, _ = challenge_and_answer(raw, app.port, "wrong-2", user="mallory", password=PASSWORD)
    finally:
        finished = stop(app)
    assert first.status == 401 and second.status == 401
    assert (wrong.status, wrong.reason) == (403, "Forbidden (bad credentials)")
    assert (unknown.status, unknown.reason) == (403, "Forbidden (bad credentials)")  # same answer: no user probing
    assert "www-authenticate" not in wrong.headers
    report = finished.report
    assert report is not None
    assert report["rejected"] == {"401": 2, "403": 2}
    assert report["calls"] == []


@needs_stranger
def test_a_source_guessing_passwords_is_locked_out_and_others_are_not() -> None:
    """Three bad passwords from one address lock it out: even the right password then gets 403 at once, with no
    challenge; another address still authenticates."""
    app = GatewayApp("--mode", "silent", "--auth-user", f"{USER}:{PASSWORD}", "--auth-max-failures", "3")
    answers = []
    try:
        with RawSip(app.port) as raw:
            uri = f"sip:100@{LOCALHOST}:{app.port}"
            for attempt in range(3):
                challenge, wrong, _ = challenge_and_answer(
                    raw, app.port, f"guess-{attempt}", password=f"guess{attempt}"
                )
                answers.append((challenge.status, wrong.status))
            # the right password over the last challenge's (still fresh, never accepted) nonce: refused all the same
            locked, _ = raw.invite(
                sdp_offer(free_port(), PCMU), call_id="guess-2", cseq=3, extra=authorization(challenge, uri)
            )
        with RawSip(app.port, local_host=STRANGER) as other:
            _, accepted, seen = challenge_and_answer(other, app.port, "other-1")
    finally:
        finished = stop(app)
    assert answers == [(401, 403)] * 3
    assert (locked.status, locked.reason) == (403, "Forbidden (too many failed authentications)")
    assert "www-authenticate" not in locked.headers  # no challenge: no digest work for the guesser
    assert accepted.status == 200, seen
    report = finished.report
    assert report is not None
    assert report["rejected"] == {"401": 4, "403": 4}  # counted like every refusal
    (call,) = report["calls"]  # only the other address's
    assert call["auth_user"] == USER


def test_digest_replayed_or_expired_credentials_are_challenged_again() -> None:
    """A replayed Authorization (same nonce and nc) and one with an expired nonce get a new 401 with
    ``stale=true`` (RFC 2617 §3.2.1: retry with the new nonce, no new password prompt); a made-up nonce gets a
    plain 401. Answering the stale challenge works."""
    app = GatewayApp("--mode", "silent", "--auth-user", f"{USER}:{PASSWORD}", "--nonce-ttl", "1.5")
    try:
        with RawSip(app.port) as raw:
            uri = f"sip:100@{LOCALHOST}:{app.port}"
            challenge, _ = raw.invite(sdp_offer(free_port(), PCMU), call_id="replay-1")
            good = authorization(challenge, uri)
            accepted, _ = raw.invite(sdp_offer(free_port(), PCMU), call_id="replay-1", cseq=2, extra=good)
            replayed, _ = raw.invite(sdp_offer(free_port(), PCMU), call_id="replay-2", extra=good)
            counted = authorization(challenge, uri, nc="00000002", cnonce="c2")  # the next nc is a fresh use
            next_nc, _ = raw.invite(sdp_offer(free_port(), PCMU), call_id="replay-3", extra=counted)
            forged = authorization(challenge, uri, nonce="ab" * 36)  # right password, a nonce we never issued
            made_up, _ = raw.invite(sdp_offer(free_port(), PCMU), call_id="replay-4", extra=forged)
            time.sleep(2.0)
            late = authorization(challenge, uri, nc="00000003", cnonce="c3")
            expired, _ = raw.invite(sdp_offer(free_port(), PCMU), call_id="replay-5", extra=late)
            fresh = authorization(expired, uri)
            after_stale, _ = raw.invite(sdp_offer(free_port(), PCMU), call_id="replay-5", cseq=2, extra=fresh)
    finally:
        finished = stop(app)
    assert challenge.status == 401 and accepted.status == 200
    assert replayed.status == 401 and parse_auth_params(replayed.headers["www-authenticate"])[1]["stale"] == "true"
    assert next_nc.status == 200
    assert made_up.status == 401 and "stale" not in parse_auth_params(made_up.headers["www-authenticate"])[1]
    assert expired.status == 401 and parse_auth_params(expired.headers["www-authenticate"])[1]["stale"] == "true"
    assert after_stale.status == 200
    report = finished.report
    assert report is not None
    assert [r["detail"] for r in report["rejections"]] == [
        "no credentials for this realm",
        "nonce or nc replayed",
        "nonce not issued here",
        "nonce expired",
    ]
    assert [call["auth_user"] for call in report["calls"]] == [USER, USER, USER]


def test_exempt_source_needs_no_credentials() -> None:
    """``auth_exempt_sources``: peers trusted by address (a carrier trunk, the dispatcher) skip the challenge."""
    app = GatewayApp("--mode", "silent", "--auth-user", f"{USER}:{PASSWORD}", "--auth-exempt", "127.0.0.0/8")
    try:
        with RawSip(app.port) as raw:
            accepted, seen = raw.invite(sdp_offer(free_port(), PCMU))
    finally:
        finished = stop(app)
    assert accepted.status == 200, seen
    assert finished.report is not None and finished.report["rejected"] == {}
    assert finished.report["calls"][0]["auth_user"] is None


def test_pjsua_client_authenticates_with_the_softphone() -> None:
    """pjsip's own digest client (``callbridge call --auth``) against the gateway: the right password gets the
    call, a wrong one 403, none the final 401."""
    app = GatewayApp("--mode", "tone", "--auth-user", f"{USER}:{PASSWORD}", "--hangup-after", "1")
    try:
        good = run_softphone("call", app.uri, "--auth", f"{USER}:{PASSWORD}")
        bad = run_softphone("call", app.uri, "--auth", f"{USER}:nope")
        anonymous = run_softphone("call", app.uri)
    finally:
        finished = stop(app)
    assert good.report is not None and good.report["sip_status"] == 200, describe(good)
    assert good.report["received"]["frames"] > 20  # audio flowed in the authenticated call
    assert bad.report is not None and (bad.report["sip_status"], bad.report["reason"]) == (
        403,
        "Forbidden (bad credentials)",
    )
    assert anonymous.report is not None and anonymous.report["sip_status"] == 401
    report = finished.report
    assert report is not None
    assert [call["auth_user"] for call in report["calls"]] == [USER]
    assert report["rejected"] == {"401": 3, "403": 1}


@needs_sipp
def test_sipp_digest_auth_is_accepted(tmp_path: Path) -> None:
    app = GatewayApp("--mode", "silent", "--auth-user", f"{USER}:{PASSWORD}", "--auth-realm", REALM)
    try:
        result = run_sipp("uac_digest_auth.xml", app.port, tmp_path, "-au", USER, "-ap", PASSWORD)
    finally:
        finished = stop(app)
    assert result.returncode == 0, sipp_failure(result, tmp_path)
    assert finished.report is not None
    assert finished.report["rejected"] == {"401": 1}
    assert [call["auth_user"] for call in finished.report["calls"]] == [USER]


@needs_sipp
def test_sipp_digest_wrong_password_gets_403(tmp_path: Path) -> None:
    app = GatewayApp("--mode", "silent", "--auth-user", f"{USER}:{PASSWORD}")
    try:
        result = run_sipp("uac_digest_wrong_password.xml", app.port, tmp_path, "-au", USER, "-ap", "nope")
    finally:
        finished = stop(app)
    assert result.returncode == 0, sipp_failure(result, tmp_path)
    assert finished.report is not None
    assert finished.report["rejected"] == {"401": 1, "403": 1}
    assert finished.report["calls"] == []


def test_subscribe_is_refused_and_no_notify_is_sent() -> None:
    """pjsua's presence server would accept a SUBSCRIBE from anyone and NOTIFY it (traffic and state for
    strangers); the endpoint has no presence to offer and answers 403 (RFC 6665 §4.2.1.2)."""
    app = GatewayApp("--mode", "silent")
    requests: list[bytes] = []
    try:
        with RawSip(app.port) as raw:
            uri = f"sip:100@{LOCALHOST}:{app.port}"
            raw.sock.sendto(
                raw._request("SUBSCRIBE", uri, "sub-1", 1, "z9hG4bKsub1", extra="Event: presence\r\nExpires: 600"),
                raw.target,
            )
            final, _ = raw._read_final(3.0, "sub-1")
            raw.sock.settimeout(1.0)
            try:
                while True:
                    data = raw.sock.recv(65535)
                    if not data.startswith(b"SIP/2.0"):
                        requests.append(data)
            except TimeoutError:
                pass
    finally:
        stop(app)
    assert (final.status, final.reason) == (403, "Forbidden (no subscriptions here)")
    assert requests == []  # no NOTIFY
