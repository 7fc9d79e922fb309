"""Self-signed certificates for the development harness and the tests (``bench calls --srtp``, the TLS tests).

A certificate names its first name as its common name and every name as a subject alternative name (RFC 5280
§4.2.1.6: an ``iPAddress`` entry for an address, what a TLS client checks a ``sips:127.0.0.1`` URI against; a
``dNSName`` entry otherwise), and is its own CA: the calling side verifies the listener against it
(``SipConfig.tls_ca``). Made with ``cryptography`` (a dependency already: the start-up check of the TLS files reads
certificates with it), so no ``openssl`` binary is needed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

RSA_BITS = 2048
SKEW = dt.timedelta(minutes=5)  # valid from a little before now: a clock a few seconds behind still accepts it


def self_signed(
    directory: Path,
    address: str = "127.0.0.1",
    days: int = 2,
    *,
    also: Sequence[str] = (),
    key_type: Literal["rsa", "ec"] = "rsa",
    stem: str = "",
) -> tuple[Path, Path]:
    """Write a certificate for ``address`` (and the names in ``also``) valid for ``days``, and its private key
    (unencrypted, mode 0600: RSA, or EC on P-256), to ``directory``: ``cert.pem`` and ``key.pem``, or with a ``stem``
    ``<stem>.pem`` and ``<stem>.key``. Returns their paths (certificate, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if key_type == "ec"
        else rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in (address, *also)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_name, key_name = (f"{stem}.pem", f"{stem}.key") if stem else ("cert.pem", "key.pem")
    cert_path, key_path = directory / cert_name, directory / key_name
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.chmod(0o600)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def _general_name(name: str) -> x509.GeneralName:
    """An address as an ``iPAddress`` entry, anything else as a ``dNSName``."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)
