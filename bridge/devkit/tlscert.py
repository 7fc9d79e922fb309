"""A self-signed certificate for a loopback address, for the development harness (``bench calls --srtp``).

The certificate names the address as its common name and subject alternative name (RFC 5280 §4.2.1.6, an
``iPAddress`` entry: what a TLS client checks a ``sips:127.0.0.1`` URI against), and is its own CA: the calling side
verifies the listener against it (``SipConfig.tls_ca``). Made with ``cryptography`` (a dependency already: the
start-up check of the TLS files reads certificates with it), so no ``openssl`` binary is needed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

RSA_BITS = 2048
SKEW = dt.timedelta(minutes=5)  # valid from a little before now: a clock a few seconds behind still accepts it


def self_signed(directory: Path, address: str = "127.0.0.1", days: int = 2) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` (unencrypted, mode 0600) to ``directory``: a certificate for ``address``
    valid for ``days``, and its private key. Returns their paths (certificate, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
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
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.chmod(0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    return cert_path, key_path
