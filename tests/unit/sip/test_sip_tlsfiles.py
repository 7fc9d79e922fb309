"""The start-up check of the TLS files and ports (bridge.sip.tlsfiles): every refusal names the setting and the file.
Certificates are made here (``bridge.devkit.tlscert``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import Settings
from bridge.devkit.tlscert import self_signed
from bridge.errors import ConfigError
from bridge.sip.tlsfiles import check_tls, check_tls_files, check_tls_ports, read_certificate


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[Path, Path], tuple[Path, Path]]:
    directory = tmp_path_factory.mktemp("tls")
    one, two = (self_signed(directory, name, key_type="ec", stem=name) for name in ("one", "two"))
    return one, two


def _refusal(*args: object, **kwargs: object) -> ConfigError:
    with pytest.raises(ConfigError) as refused:
        check_tls_files(*args, **kwargs)  # type: ignore[arg-type]  # the test passes what a caller could
    return refused.value


def test_a_good_pair_passes_and_says_until_when(pairs: tuple[tuple[Path, Path], ...]) -> None:
    (cert, key), _ = pairs
    line = check_tls_files(cert, key, cert)
    assert str(cert) in line and "CN=one" in line and "valid until" in line


def test_missing_mismatched_expired_and_early_are_refused_by_name(
    pairs: tuple[tuple[Path, Path], ...], tmp_path: Path
) -> None:
    (cert, key), (_other, other_key) = pairs
    missing = _refusal(tmp_path / "nope.pem", key)
    assert (missing.field, str(tmp_path / "nope.pem") in missing.message) == ("sip_tls_cert", True)
    assert _refusal(cert, tmp_path).field == "sip_tls_key"  # a directory is no key file
    mismatched = _refusal(cert, other_key)
    assert mismatched.field == "sip_tls_key" and "not the private key" in mismatched.message
    expiry = read_certificate(cert).not_after.timestamp()
    expired = _refusal(cert, key, now=expiry + 1)
    assert expired.field == "sip_tls_cert" and "expired" in expired.message and str(cert) in expired.message
    assert "not valid before" in _refusal(cert, key, now=0.0).message
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    assert _refusal(cert, key, garbage).field == "sip_tls_ca"
    assert _refusal(garbage, key).field == "sip_tls_cert"
    assert _refusal(None, key).field == "sip_tls_cert"


def test_tls_ports_must_not_take_the_sip_tcp_ports() -> None:
    check_tls_ports(5060, 5160, 9)
    with pytest.raises(ConfigError) as refused:
        check_tls_ports(5060, 5061, 9)  # 8 workers behind a front: 5060..5068 are SIP's
    assert refused.value.field == "sip_tls_port"


def test_serve_settings_are_checked_as_a_whole(pairs: tuple[tuple[Path, Path], ...], tmp_path: Path) -> None:
    (cert, key), _ = pairs
    assert "no TLS; SRTP off" in check_tls(Settings())
    line = check_tls(Settings(sip_tls_port=5161, sip_tls_cert=cert, sip_tls_key=key, srtp="mandatory"))
    assert "TLS on port 5161" in line and line.endswith("SRTP mandatory")
    with pytest.raises(ConfigError) as refused:
        check_tls(Settings(sip_tls_port=5161, sip_tls_cert=tmp_path / "gone.pem", sip_tls_key=key))
    assert refused.value.field == "sip_tls_cert" and "gone.pem" in refused.value.message
    with pytest.raises(ConfigError) as refused:
        check_tls(Settings(sip_tls_port=0, sip_tls_cert=cert, sip_tls_key=key, front="kamailio"))
    assert refused.value.field == "sip_tls_port"
