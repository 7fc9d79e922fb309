"""The pure access checks: source allowlists (CIDR) and SIP digest authentication (RFC 2617 / RFC 7616)."""

from __future__ import annotations

import ipaddress

import pytest
from fakes.clock import Clock

from bridge.sip.access import (
    FORBIDDEN_CREDENTIALS,
    DigestAuth,
    DigestFields,
    digest_ha1,
    digest_response,
    in_networks,
    parse_auth_params,
    parse_networks,
    source_allowed,
    source_ip,
)

# -- allowlists ----------------------------------------------------------------------------------------------


def test_parse_networks_accepts_cidrs_addresses_and_host_bits() -> None:
    nets = parse_networks(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", " ::1 ", "198.51.100.9/24"])
    assert [str(n) for n in nets] == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::1/128", "198.51.100.0/24"]


@pytest.mark.parametrize("bad", ["10.0.0.300/8", "example.com", "10.0.0.0/33", ""])
def test_parse_networks_names_the_field_and_the_entry(bad: str) -> None:
    with pytest.raises(ValueError, match=r"SipConfig\.allowed_sources: .* is not an IP address or CIDR"):
        parse_networks(["10.0.0.0/8", bad], "SipConfig.allowed_sources")


def test_parse_networks_refuses_a_bare_string() -> None:
    # ("10.0.0.0/8") without the comma is a string, and iterating it would check single characters.
    with pytest.raises(ValueError, match="expected a list"):
        parse_networks("10.0.0.0/8")


@pytest.mark.parametrize(
    ("address", "ip"),
    [
        ("192.0.2.7:5060", "192.0.2.7"),
        ("192.0.2.7", "192.0.2.7"),
        ("[2001:db8::1]:5060", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("[::1]", "::1"),
    ],
)
def test_source_ip(address: str, ip: str) -> None:
    assert source_ip(address) == ip


@pytest.mark.parametrize(
    ("address", "cidrs", "allowed"),
    [
        ("203.0.113.5:5060", [], True),  # empty list: allow all
        ("10.1.2.3:5060", ["10.0.0.0/8"], True),
        ("10.1.2.3", ["10.0.0.0/8"], True),
        ("11.1.2.3:5060", ["10.0.0.0/8"], False),
        ("192.0.2.7:5", ["192.0.2.7"], True),
        ("192.0.2.8:5", ["192.0.2.7"], False),
        ("[2001:db8::5]:5060", ["2001:db8::/32"], True),
        ("[2001:db9::5]:5060", ["2001:db8::/32"], False),
        ("[::ffff:10.1.2.3]:5060", ["10.0.0.0/8"], True),  # IPv4-mapped IPv6 matches IPv4 networks
        ("10.1.2.3:5060", ["::/0"], False),  # an IPv6 network never matches an IPv4 source
        ("not-an-address", ["0.0.0.0/0"], False),
        ("", ["0.0.0.0/0"], False),
        ("10.1.2.3", [ipaddress.ip_network("10.0.0.0/8")], True),  # pre-parsed networks work too
    ],
)
def test_source_allowed(address: str, cidrs: list[str], allowed: bool) -> None:
    assert source_allowed(address, cidrs) is allowed


def test_source_allowed_raises_on_a_bad_cidr() -> None:
    with pytest.raises(ValueError):
        source_allowed("10.0.0.1", ["10.0.0.0/99"])


def test_in_networks_with_no_networks_is_false() -> None:
    assert not in_networks("10.0.0.1", ())  # unlike source_allowed, where empty means "everyone"


# -- digest: the arithmetic against the RFC examples ---------------------------------------------------------


def test_digest_response_rfc2617_example() -> None:
    """RFC 2617 §3.5 (the "Mufasa" example, qop=auth)."""
    assert (
        digest_response(
            DigestFields(
                username="Mufasa",
                realm="testrealm@host.com",
                method="GET",
                uri="/dir/index.html",
                nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                qop="auth",
                nc="00000001",
                cnonce="0a4f113b",
            ),
            "Circle Of Life",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_digest_response_rfc7616_examples(algorithm: str, expected: str) -> None:
    """RFC 7616 §3.9.1, both algorithms."""
    assert (
        digest_response(
            DigestFields(
                username="Mufasa",
                realm="http-auth@example.org",
                method="GET",
                uri="/dir/index.html",
                nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                algorithm=algorithm,
                qop="auth",
                nc="00000001",
                cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            ),
            "Circle of Life",
        )
        == expected
    )


def test_digest_response_without_qop_rfc2069_form() -> None:
    # RFC 2617 §3.2.2.1: response = H(H(A1):nonce:H(A2)) when the server offered no qop.
    import hashlib

    ha1 = hashlib.md5(b"u:r:p").hexdigest()
    ha2 = hashlib.md5(b"INVITE:sip:a@b").hexdigest()
    expected = hashlib.md5(f"{ha1}:n:{ha2}".encode()).hexdigest()
    assert digest_response(DigestFields("u", "r", "INVITE", "sip:a@b", "n"), "p") == expected
    assert digest_ha1("u", "r", "p") == ha1


def test_parse_auth_params() -> None:
    scheme, params = parse_auth_params(
        'Digest username="bob", realm="a, b", nonce="x\\"y", uri="sip:100@h", nc=00000001, qop=auth, response="r"'
    )
    assert scheme == "digest"
    assert params == {
        "username": "bob",
        "realm": "a, b",  # a comma inside quotes
        "nonce": 'x"y',  # an escaped quote
        "uri": "sip:100@h",
        "nc": "00000001",
        "qop": "auth",
        "response": "r",
    }


@pytest.mark.parametrize(
    "value",
    [
        'Digest username="unterminated',
        'Digest username="a", username="b"',  # a parameter twice (RFC 7616 §3.4)
        "Digest garbage",
    ],
)
def test_parse_auth_params_refuses_malformed_values(value: str) -> None:
    assert parse_auth_params(value) == ("", {})


# -- digest: the server's decisions ------------------------------------------------------------------------------


EPOCH = 1_700_000_000.0  # the digest tests' clock starts here
USERS = {"trunk1": "s3cret"}
URI = "sip:100@198.51.100.1:5060"


def make_auth(clock: Clock, nonce_ttl_s: float = 300.0, max_tracked: int = 10_000) -> DigestAuth:
    return DigestAuth(
        "trunks.example", USERS, clock=clock, secret=b"k" * 32, nonce_ttl_s=nonce_ttl_s, max_tracked=max_tracked
    )


def credentials(
    auth: DigestAuth,
    nonce: str,
    *,
    user: str = "trunk1",
    password: str = "s3cret",
    nc: str = "00000001",
    qop: str = "auth",
    algorithm: str = "MD5",
    uri: str = URI,
    realm: str | None = None,
) -> str:
    realm = realm or auth.realm
    signed = DigestFields(user, realm, "INVITE", uri, nonce, algorithm, qop, nc if qop else "", "cn" if qop else "")
    response = digest_response(signed, password)
    value = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{response}"'
    value += f", algorithm={algorithm}"
    if qop:
        value += f', qop={qop}, nc={nc}, cnonce="cn"'
    return value


def nonce_of(challenge: str) -> str:
    return parse_auth_params(challenge)[1]["nonce"]


def test_no_credentials_get_a_challenge() -> None:
    auth = make_auth(Clock(EPOCH))
    result = auth.check("INVITE", [])
    assert (result.status, result.reason, result.ok) == (401, "Unauthorized", False)
    scheme, params = parse_auth_params(result.www_authenticate)
    assert scheme == "digest"
    assert params["realm"] == "trunks.example" and params["algorithm"] == "MD5" and params["qop"] == "auth"
    assert "stale" not in params


def test_nonces_are_random_and_unforgeable() -> None:
    clock = Clock(EPOCH)
    auth = make_auth(clock)
    nonces = {auth.new_nonce() for _ in range(100)}
    assert len(nonces) == 100
    other = DigestAuth("trunks.example", USERS, clock=clock, secret=b"x" * 32)
    foreign = other.new_nonce()
    result = auth.check("INVITE", [credentials(auth, foreign)])
    assert (result.status, result.detail) == (401, "nonce not issued here")
    assert "stale" not in parse_auth_params(result.www_authenticate)[1]


def test_a_shared_secret_lets_another_worker_accept_the_nonce() -> None:
    clock = Clock(EPOCH)
    first, second = make_auth(clock), make_auth(clock)
    nonce = first.new_nonce()
    assert second.check("INVITE", [credentials(second, nonce)]).ok


def test_valid_credentials_are_accepted_once_per_nc() -> None:
    auth = make_auth(Clock(EPOCH))
    nonce = nonce_of(auth.challenge())
    first = auth.check("INVITE", [credentials(auth, nonce)])
    assert first.ok and first.user == "trunk1"
    replay = auth.check("INVITE", [credentials(auth, nonce)])
    assert (replay.status, replay.detail) == (401, "nonce or nc replayed")
    assert parse_auth_params(replay.www_authenticate)[1]["stale"] == "true"
    assert auth.check("INVITE", [credentials(auth, nonce, nc="00000002")]).ok  # a client counting up is fine
    assert not auth.check("INVITE", [credentials(auth, nonce, nc="00000002")]).ok


def test_without_qop_a_nonce_is_good_once() -> None:
    auth = make_auth(Clock(EPOCH))
    nonce = auth.new_nonce()
    assert auth.check("INVITE", [credentials(auth, nonce, qop="")]).ok
    again = auth.check("INVITE", [credentials(auth, nonce, qop="")])
    assert (again.status, again.detail) == (401, "nonce or nc replayed")


def test_expired_nonce_is_stale() -> None:
    clock = Clock(EPOCH)
    auth = make_auth(clock, nonce_ttl_s=30.0)
    nonce = auth.new_nonce()
    clock.now += 31
    result = auth.check("INVITE", [credentials(auth, nonce)])
    assert (result.status, result.detail) == (401, "nonce expired")
    assert parse_auth_params(result.www_authenticate)[1]["stale"] == "true"


def test_wrong_password_and_unknown_user_are_forbidden_alike() -> None:
    auth = make_auth(Clock(EPOCH))
    nonce = auth.new_nonce()
    wrong = auth.check("INVITE", [credentials(auth, nonce, password="guess")])
    unknown = auth.check("INVITE", [credentials(auth, nonce, user="mallory")])
    assert (wrong.status, wrong.reason) == (403, FORBIDDEN_CREDENTIALS)
    assert (unknown.status, unknown.reason) == (403, FORBIDDEN_CREDENTIALS)
    assert wrong.www_authenticate == "" and unknown.www_authenticate == ""


def test_wrong_password_is_forbidden_even_with_a_stale_nonce() -> None:
    # stale=true is only for a correct response (RFC 2617 §3.2.1): a guesser gets 403, never a retry hint.
    clock = Clock(EPOCH)
    auth = make_auth(clock, nonce_ttl_s=1.0)
    nonce = auth.new_nonce()
    clock.now += 10
    assert auth.check("INVITE", [credentials(auth, nonce, password="guess")]).status == 403


def test_the_method_is_part_of_the_response() -> None:
    auth = make_auth(Clock(EPOCH))
    nonce = auth.new_nonce()
    assert auth.check("BYE", [credentials(auth, nonce)]).status == 403  # signed for INVITE


def test_credentials_for_another_realm_get_a_challenge() -> None:
    auth = make_auth(Clock(EPOCH))
    result = auth.check("INVITE", [credentials(auth, auth.new_nonce(), realm="elsewhere")])
    assert (result.status, result.detail) == (401, "no credentials for this realm")


def test_the_header_for_our_realm_is_found_among_several() -> None:
    auth = make_auth(Clock(EPOCH))
    nonce = auth.new_nonce()
    headers = ['Digest username="x", realm="elsewhere", nonce="n", uri="sip:a", response="r"', credentials(auth, nonce)]
    assert auth.check("INVITE", headers).ok


def test_sha256_credentials_are_accepted() -> None:
    auth = make_auth(Clock(EPOCH))
    assert auth.check("INVITE", [credentials(auth, auth.new_nonce(), algorithm="SHA-256")]).ok


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"algorithm": "MD5-sess"}, "unsupported algorithm"),
        ({"qop": "auth-int"}, "unsupported algorithm"),
        ({"uri": "http://example.com/"}, "is not a SIP URI"),
    ],
)
def test_unsupported_credentials_are_forbidden(changes: dict[str, str], detail: str) -> None:
    auth = make_auth(Clock(EPOCH))
    nonce = auth.new_nonce()
    value = credentials(auth, nonce)
    if "algorithm" in changes:
        value = value.replace("algorithm=MD5", f"algorithm={changes['algorithm']}")
    if "qop" in changes:
        value = value.replace("qop=auth", f"qop={changes['qop']}")
    if "uri" in changes:
        value = credentials(auth, nonce, uri=changes["uri"])
    result = auth.check("INVITE", [value])
    assert result.status == 403 and detail in result.detail


def test_a_proxy_rewritten_request_uri_does_not_matter() -> None:
    # The response is checked over the uri the client signed (e.g. SIPp's sip:host:port, or the public number
    # before the dispatcher rewrote the Request-URI to the worker).
    auth = make_auth(Clock(EPOCH))
    assert auth.check("INVITE", [credentials(auth, auth.new_nonce(), uri="sip:10.0.0.1:5060")]).ok


def test_evicted_nonce_history_fails_safe() -> None:
    clock = Clock(EPOCH)
    auth = make_auth(clock, max_tracked=2)
    old = [auth.new_nonce() for _ in range(3)]
    for nonce in old:
        assert auth.check("INVITE", [credentials(auth, nonce)]).ok
    # The first nonce's history was evicted: a replay of it must not pass as a first use.
    replay = auth.check("INVITE", [credentials(auth, old[0], nc="00000002")])
    assert (replay.status, replay.detail) == (401, "nonce or nc replayed")
    clock.now += 1
    assert auth.check("INVITE", [credentials(auth, auth.new_nonce())]).ok  # newer nonces still work


@pytest.mark.parametrize(
    ("realm", "users", "ttl"),
    [('bad"realm', USERS, 300.0), ("", USERS, 300.0), ("ok", USERS, 0.0)],
)
def test_bad_settings_are_refused(realm: str, users: dict[str, str], ttl: float) -> None:
    with pytest.raises(ValueError):
        DigestAuth(realm, users, nonce_ttl_s=ttl)


def test_garbage_authorization_values_do_not_raise() -> None:
    auth = make_auth(Clock(EPOCH))
    for value in ["", "Basic dXNlcjpwYXNz", "Digest", 'Digest username="trunk1", response="\u00e9\u00e9"', "\x00\xff"]:
        result = auth.check("INVITE", [value])
        assert result.status in (401, 403)
    nonce = "é" * 72  # non-ASCII where hex is expected
    assert auth.check("INVITE", [credentials(auth, nonce)]).status == 401


def test_lockout_after_repeated_bad_credentials_per_address_then_it_expires() -> None:
    from bridge.sip.access import AuthLockout

    now = [1000.0]
    lockout = AuthLockout(max_failures=3, window_s=60.0, lockout_s=300.0, clock=lambda: now[0])
    assert not lockout.failure("192.0.2.7") and not lockout.failure("192.0.2.7")
    assert not lockout.locked("192.0.2.7")
    assert lockout.failure("192.0.2.7")  # the third within the window locks it
    assert lockout.locked("192.0.2.7") and not lockout.locked("192.0.2.8")  # per address
    now[0] += 299.0
    assert lockout.locked("192.0.2.7")
    now[0] += 2.0
    assert not lockout.locked("192.0.2.7") and lockout.lockouts == 1


def test_lockout_counts_only_failures_inside_the_window_and_a_success_clears_them() -> None:
    from bridge.sip.access import AuthLockout

    now = [0.0]
    lockout = AuthLockout(max_failures=3, window_s=10.0, lockout_s=60.0, clock=lambda: now[0])
    lockout.failure("a")
    lockout.failure("a")
    now[0] = 11.0  # both have left the window
    assert not lockout.failure("a")
    lockout.failure("a")
    lockout.success("a")  # the right password: start over
    assert not lockout.failure("a") and not lockout.locked("a")


def test_lockout_memory_is_bounded_and_bad_settings_are_refused() -> None:
    from bridge.sip.access import AuthLockout

    lockout = AuthLockout(max_failures=5, max_tracked=100)
    for i in range(1000):
        lockout.failure(f"10.0.{i // 256}.{i % 256}")
    assert len(lockout._failures) == 100
    with pytest.raises(ValueError, match="max_failures"):
        AuthLockout(max_failures=0)
