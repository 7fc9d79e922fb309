"""``SipConfig`` access settings are validated at construction, naming the field; secrets stay out of its repr;
pjsip's log lines are bounded by ``LogLimiter``."""

from __future__ import annotations

import pytest
from fakes.clock import Clock

from bridge.sip.endpoint import BurstPolls, LogLimiter
from bridge.sip.sipconfig import JitterBuffer, MediaPortKind, SipConfig, SrtpMode
from bridge.sip.sipmsg import Transport


def test_defaults_allow_everyone_without_auth() -> None:
    config = SipConfig()
    assert config.allowed_sources == ()
    assert config.digest_auth() is None


def test_access_settings_are_kept() -> None:
    config = SipConfig(
        allowed_sources=["10.0.0.0/8", "192.0.2.7"],  # type: ignore[arg-type]  # a list is accepted and frozen
        auth_users={"trunk1": "pw"},
        auth_realm="trunks.example",
        auth_nonce_ttl_s=60.0,
    )
    assert config.allowed_sources == ("10.0.0.0/8", "192.0.2.7")
    auth = config.digest_auth()
    assert auth is not None and auth.realm == "trunks.example" and auth.nonce_ttl_s == 60.0


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"allowed_sources": ("10.0.0.0/8", "10.0.0.300")}, "SipConfig.allowed_sources"),
        ({"allowed_sources": "10.0.0.0/8"}, "SipConfig.allowed_sources"),
        ({"jitter_buffer_ms": 201}, "SipConfig.jitter_buffer_ms"),
        ({"jitter_buffer_ms": -20}, "SipConfig.jitter_buffer_ms"),
        ({"auth_exempt_sources": ("nope",)}, "SipConfig.auth_exempt_sources"),
        ({"auth_users": {"": "pw"}}, "SipConfig.auth_users"),
        ({"auth_users": {"u": 1}}, "SipConfig.auth_users"),
        ({"auth_users": {"u": "pw"}, "auth_realm": 'a"b'}, "SipConfig.auth_realm"),
        ({"auth_users": {"u": "pw"}, "auth_nonce_ttl_s": 0}, "SipConfig.auth_nonce_ttl_s"),
    ],
)
def test_malformed_access_settings_name_the_field(settings: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        SipConfig(**settings)  # type: ignore[arg-type]


def test_passwords_and_the_nonce_secret_stay_out_of_repr() -> None:
    text = repr(SipConfig(auth_users={"trunk1": "hunter2"}, auth_nonce_secret="shared-key"))
    assert "hunter2" not in text and "shared-key" not in text
    assert "auth_realm" in text


def test_log_limiter_cuts_long_lines() -> None:
    limiter = LogLimiter(max_chars=10)
    assert limiter.admit("x" * 25) == "x" * 10 + "... [15 more chars]"
    assert limiter.admit("short") == "short"


def test_log_limiter_bounds_the_rate_and_reports_what_it_dropped() -> None:
    clock = Clock()
    limiter = LogLimiter(per_second=10.0, burst=5.0, clock=clock)
    passed = [limiter.admit(f"line {i}") for i in range(100)]
    assert sum(line is not None for line in passed) == 5
    assert limiter.suppressed == 95
    clock.now += 1.0  # ten more tokens (capped by the burst of 5)
    assert limiter.admit("next") == "[95 pjsip log lines suppressed] next"
    assert limiter.admit("then") == "then"


def test_setup_budget_pauses_intake_while_the_window_is_full() -> None:
    from bridge.sip.endpoint import SetupBudget

    budget = SetupBudget(limit=3, window_s=0.5)
    assert budget.quiet and budget.allows(0.0)  # quiet: the poll does not look
    for t in (0.0, 0.1, 0.2):
        budget.count_setup(t)
    assert not budget.quiet
    assert not budget.allows(0.3)  # three set-ups within 0.5 s: stop polling SIP
    assert not budget.allows(0.45)
    assert budget.pauses == 1  # one pause, however many polls it lasts
    assert budget.allows(0.55)  # the first set-up left the window
    budget.count_setup(0.56)
    assert not budget.allows(0.57)
    assert budget.pauses == 2 and not budget.quiet
    assert budget.allows(2.0) and budget.quiet  # every set-up left the window: quiet again


def test_burst_polls_keep_pace_with_a_flood_and_back_off_after_a_lone_request() -> None:
    polls = BurstPolls(0.005, 0.02)
    assert [polls.after(False), polls.after(False)] == [0.01, None]  # a lone probe: two polls, then the beat
    polls = BurstPolls(0.005, 0.02)
    assert [polls.after(True) for _ in range(50)] == [0.005] * 50  # a flood: the fast pace as long as it lasts
    assert polls.after(False) == 0.01 and polls.after(True) == 0.005  # a gap in it: back to the fast pace


def test_with_tls_srtp_is_never_off_and_nothing_names_the_product() -> None:
    from bridge.sip.transports import srtp_mode

    assert srtp_mode(SipConfig(transports=("udp", "tls"))) == "optional"
    assert srtp_mode(SipConfig(transports=("udp", "tls"), srtp="mandatory")) == "mandatory"
    assert srtp_mode(SipConfig()) == "off"
    assert srtp_mode(SipConfig(srtp="optional")) is SrtpMode.OPTIONAL


def test_modes_are_kept_as_members_and_unknown_ones_named() -> None:
    config = SipConfig(transports=("UDP", "tls"), srtp="mandatory", media_port="python")
    assert config.transports == (Transport.UDP, Transport.TLS)
    assert config.srtp is SrtpMode.MANDATORY and config.media_port is MediaPortKind.PYTHON
    with pytest.raises(ValueError, match=r"SipConfig\.srtp: expected one of off, optional, mandatory, got 'on'"):
        SipConfig(srtp="on")
    with pytest.raises(ValueError, match=r"SipConfig\.transports: unknown sctp"):
        SipConfig(transports=("udp", "sctp"))
    assert SipConfig().user_agent == "" and SipConfig().tls_verify


def test_open_settings_are_named() -> None:
    from bridge.config import Settings
    from bridge.sip.exposure import open_warnings

    assert open_warnings(Settings(sip_host="127.0.0.1", http_port=8080)) == []
    wide = open_warnings(Settings(sip_host="0.0.0.0", sip_allow_any_source=True, http_host="0.0.0.0", http_port=8080))
    assert any(w.startswith("plain SIP") for w in wide) and any(w.startswith("no allow-list") for w in wide)
    assert any("plain HTTP" in w for w in wide)
    listed = open_warnings(
        Settings(sip_host="192.0.2.1", sip_allowed_sources=("198.51.100.0/24",), sip_tls_verify=False)
    )
    assert not any(w.startswith("no allow-list") for w in listed) and any("sip_tls_verify" in w for w in listed)


def test_a_jitter_buffer_floor_sets_pjmedias_four_figures_and_none_keeps_its_defaults() -> None:
    assert JitterBuffer.for_floor(0) is None
    jb = JitterBuffer.for_floor(60)
    # it starts at its floor: one that started higher and shrank would move the echo's delay in the call's first
    # seconds, as the echo guard learns it
    assert jb == JitterBuffer(init_ms=60, min_prefetch_ms=60, max_prefetch_ms=300, max_ms=500)
    big = JitterBuffer.for_floor(200)
    assert big is not None and big.min_prefetch_ms <= big.init_ms <= big.max_prefetch_ms <= big.max_ms
