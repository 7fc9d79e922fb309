"""bridge.devkit.tlscert: the self-signed certificate the srtp bench path's workers listen with passes the start-up
check of the TLS files, and a client verifying against it as its CA accepts 127.0.0.1 (the name a ``sips:`` URI of
the bench carries), a different address not."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest

from bridge.devkit.tlscert import self_signed
from bridge.sip.tlsfiles import check_tls_files, read_certificate


def _handshake(cert: Path, key: Path, name: str) -> None:
    """A TLS handshake in memory: a server with ``cert``/``key``, a client verifying ``name`` against ``cert``."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    pipes = [ssl.MemoryBIO() for _ in range(4)]
    server = server_ctx.wrap_bio(pipes[0], pipes[1], server_side=True)
    client = client_ctx.wrap_bio(pipes[2], pipes[3], server_hostname=name)
    done = {"client": False, "server": False}
    for _ in range(10):
        for side, tls, outgoing, incoming in (
            ("client", client, pipes[3], pipes[0]),
            ("server", server, pipes[1], pipes[2]),
        ):
            if not done[side]:
                try:
                    tls.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
            incoming.write(outgoing.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not complete")


def test_the_certificate_passes_the_start_up_check_and_names_its_address(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "tls")
    assert "valid until" in check_tls_files(cert, key, cert)
    assert read_certificate(cert).subject == "CN=127.0.0.1"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_a_client_with_it_as_ca_accepts_127_0_0_1_and_no_other_address(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    _handshake(cert, key, "127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(cert, key, "127.0.0.2")


def test_an_ec_certificate_for_several_names_under_its_own_file_names(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "10.0.0.7", also=["127.0.0.1", "localhost"], key_type="ec", stem="node")
    assert (cert.name, key.name) == ("node.pem", "node.key") and b"BEGIN PRIVATE KEY" in key.read_bytes()
    assert read_certificate(cert).subject == "CN=10.0.0.7"
    for name in ("127.0.0.1", "localhost"):  # an address and a host name, each its own kind of entry
        _handshake(cert, key, name)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(cert, key, "example.org")
