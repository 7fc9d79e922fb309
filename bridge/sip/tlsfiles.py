"""The start-up check of a node's TLS files (``sip_tls_cert``, ``sip_tls_key``, ``sip_tls_ca``). No pjsua2 here.

pjsip reads the files only when its TLS transport starts, and tells little when they are wrong. So ``serve`` (and
:class:`~bridge.sip.sipconfig.SipConfig`) check them first: each file must exist and be readable, the certificate
(read with ``cryptography``) must be valid now (not expired, not yet to come), the key must match it (Python's own
OpenSSL binding loads the pair), and the CA file must hold certificates. A failure is a
:class:`~bridge.errors.ConfigError` naming the setting and the file.
"""

from __future__ import annotations

import datetime as dt
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from bridge.config import Settings
from bridge.errors import ConfigError

SOURCE = "settings"


@dataclass(frozen=True, slots=True)
class Certificate:
    """What the start-up check reads of a PEM certificate: its validity period (UTC) and subject."""

    not_before: dt.datetime
    not_after: dt.datetime
    subject: str


def read_certificate(path: Path) -> Certificate:
    """The first certificate of a PEM file; ``ValueError`` if there is none."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return Certificate(cert.not_valid_before_utc, cert.not_valid_after_utc, cert.subject.rfc4514_string())


def _readable(setting: str, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(SOURCE, setting, f"{path}: no such file")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(SOURCE, setting, f"{path}: cannot be read ({exc.strerror})") from None


def check_tls_files(
    cert: Path | None,
    key: Path | None,
    ca: Path | None = None,
    *,
    now: float | None = None,
    names: tuple[str, str, str] = ("sip_tls_cert", "sip_tls_key", "sip_tls_ca"),
) -> str:
    """Raise :class:`ConfigError` naming the setting (``names``) and the file if TLS cannot start with these files;
    else one line for the start-up log (the certificate's subject and expiry)."""
    cert_name, key_name, ca_name = names
    if cert is None or key is None:
        missing = cert_name if cert is None else key_name
        raise ConfigError(SOURCE, missing, "TLS needs a certificate and its private key (PEM files)")
    _readable(cert_name, cert)
    _readable(key_name, key)
    try:
        decoded = read_certificate(cert)
    except (OSError, ValueError) as exc:
        raise ConfigError(SOURCE, cert_name, f"{cert}: not a PEM certificate ({exc})") from None
    moment = time.time() if now is None else now
    if moment > decoded.not_after.timestamp():
        raise ConfigError(
            SOURCE, cert_name, f"{cert}: the certificate expired on {decoded.not_after:%Y-%m-%d %H:%M} UTC"
        )
    if moment < decoded.not_before.timestamp():
        raise ConfigError(
            SOURCE, cert_name, f"{cert}: the certificate is not valid before {decoded.not_before:%Y-%m-%d %H:%M} UTC"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        raise ConfigError(SOURCE, key_name, f"{key}: not the private key of {cert} ({exc.reason})") from None
    if ca is not None:
        _readable(ca_name, ca)
        try:
            context.load_verify_locations(cafile=str(ca))
        except ssl.SSLError as exc:
            raise ConfigError(SOURCE, ca_name, f"{ca}: no CA certificates in it ({exc.reason})") from None
    return f"certificate {cert} ({decoded.subject or 'no subject'}) valid until {decoded.not_after:%Y-%m-%d %H:%M} UTC"


def check_tls_ports(sip_port: int, tls_port: int, listeners: int) -> None:
    """The node's TLS ports (``tls_port`` onward, one per listener) must not take its SIP TCP ports (``sip_port``
    onward): both are TCP. :class:`ConfigError` naming ``sip_tls_port`` if they overlap."""
    if sip_port and tls_port and abs(tls_port - sip_port) < listeners:
        last = sip_port + listeners - 1
        raise ConfigError(
            SOURCE,
            "sip_tls_port",
            f"{tls_port}..{tls_port + listeners - 1} overlaps the SIP ports {sip_port}..{last} (TCP too); "
            f"choose one outside them, e.g. {sip_port + 100}",
        )


def check_tls(settings: Settings) -> str:
    """The node's TLS and SRTP at start-up: one line for the log, or :class:`ConfigError` naming the setting."""
    if settings.sip_tls_port is None:
        if settings.sip_tls_cert or settings.sip_tls_key:
            raise ConfigError(SOURCE, "sip_tls_port", "sip_tls_cert/sip_tls_key are set but no TLS port is")
        return f"no TLS; SRTP {settings.srtp}"
    if settings.front != "none" and not settings.sip_tls_port:
        raise ConfigError(SOURCE, "sip_tls_port", "the front needs a fixed TLS port (0 picks any)")
    listeners = settings.workers + (1 if settings.front != "none" else 0)
    check_tls_ports(settings.sip_port, settings.sip_tls_port, listeners)
    files = check_tls_files(settings.sip_tls_cert, settings.sip_tls_key, settings.sip_tls_ca)
    return f"TLS on port {settings.sip_tls_port} onward, {files}; SRTP {settings.srtp}"
