"""The pure rules of the worker's edge: caller text made safe, RTP silence, session-timer ends, who may call, and
where a recording may go."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.call.recorder import recording_dir
from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.sip.access import exposure, is_loopback_host
from bridge.sip.bounds import RtpWatch, session_timer_expired
from bridge.sip.exposure import check_exposure
from bridge.sip.sipmsg import clean_text


def test_clean_text_replaces_what_is_not_utf8_escapes_controls_and_cuts() -> None:
    assert clean_text("bad-\udcff\udcfe") == "bad-\ufffd\ufffd"  # how pjsua2 hands over bytes that are not UTF-8
    assert clean_text("a\r\nb\x00") == "a\\x0d\\x0ab\\x00"
    assert clean_text("\ud800lone").encode("utf-8")  # any lone surrogate: still encodable
    cut = clean_text("x" * 1024, 256)
    assert len(cut) == 256 and cut.endswith("...")
    assert clean_text("../../x") == "../../x"  # data, kept as written: it never names anything


def test_rtp_watch_expires_after_silence_and_uses_the_hold_timeout_while_held() -> None:
    watch = RtpWatch(30, 600, started=0.0)
    assert not watch.observe(None, held=False, now=29.0)
    assert watch.observe(None, held=False, now=30.0)  # INVITE and ACK, then nothing
    watch = RtpWatch(30, 600, started=0.0)
    assert not watch.observe(50, held=False, now=10.0)
    assert not watch.observe(50, held=False, now=39.0)
    assert watch.observe(50, held=False, now=40.0)  # 30 s since the count last moved
    held = RtpWatch(30, 600, started=0.0)
    assert not held.observe(10, held=True, now=5.0)
    assert not held.observe(10, held=True, now=600.0)
    assert held.observe(10, held=True, now=605.0)
    assert not held.observe(10, held=False, now=606.0)  # a resume restarts the clock


def test_session_timer_end_is_a_408_of_a_confirmed_call_the_app_did_not_hang_up() -> None:
    assert session_timer_expired(confirmed=True, local_hangup=False, status=408)
    assert not session_timer_expired(confirmed=False, local_hangup=False, status=408)  # no ACK
    assert not session_timer_expired(confirmed=True, local_hangup=True, status=408)
    assert not session_timer_expired(confirmed=True, local_hangup=False, status=200)  # the caller's BYE


def test_exposure_closed_by_default() -> None:
    def check(host: str, **kw: object) -> tuple[str, str]:
        args: dict[str, object] = {"allowed_sources": (), "auth_users": 0, "trusted_fronts": (), "allow_any": False}
        return exposure(host, **(args | kw))  # type: ignore[arg-type]

    assert all(is_loopback_host(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(is_loopback_host(h) for h in ("0.0.0.0", "::", "", "192.0.2.7", "sip.example.com"))
    what, problem = check("127.0.0.1")
    assert "loopback callers only" in what and not problem
    what, problem = check("0.0.0.0")
    assert all(name in problem for name in ("sip_allowed_sources", "sip_auth_users", "sip_trusted_fronts"))
    assert "sip_allow_any_source" in problem
    assert not check("0.0.0.0", allowed_sources=("192.0.2.0/24",))[1]
    assert not check("0.0.0.0", auth_users=2)[1]
    assert not check("0.0.0.0", trusted_fronts=("192.0.2.9",))[1]
    what, problem = check("0.0.0.0", allow_any=True)
    assert "any source" in what and not problem


def test_check_exposure_reads_settings_and_names_them() -> None:
    with pytest.raises(ConfigError) as refused:
        check_exposure(Settings(sip_host="192.0.2.7"))
    assert "sip_allow_any_source" in str(refused.value)
    assert "any source" in check_exposure(Settings(sip_host="0.0.0.0", sip_allow_any_source=True))
    assert "loopback" in check_exposure(Settings())


def test_settings_defaults_of_the_edge() -> None:
    s = Settings()
    assert s.recordings_dir.is_absolute() and s.recordings_dir.parts[-2:] == ("callbridge", "recordings")
    assert (s.rtp_timeout_s, s.rtp_hold_timeout_s, s.sip_session_expires_s, s.sip_session_min_se_s) == (
        30,
        600,
        1800,
        90,
    )
    assert not s.sip_allow_any_source
    with pytest.raises(ValueError):
        Settings(sip_session_min_se_s=60)  # pjsip aborts below 90
    with pytest.raises(ValueError):
        Settings(sip_session_expires_s=120, sip_session_min_se_s=300)


def test_recording_dir_stays_inside_its_root(tmp_path: Path) -> None:
    assert recording_dir(tmp_path, "c-0123") == tmp_path.resolve() / "c-0123"
    for bad in ("../../x", "/tmp/abs", "a/b", "", ".", ".."):
        with pytest.raises(ValueError):
            recording_dir(tmp_path, bad)
