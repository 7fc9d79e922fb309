"""The C TLS engine (``bridge/native/tls.c`` through ``bridge.realtime.tls_native``) against a real TLS server:
Python's ssl over memory BIOs, driven in the test's own thread (the bytes pumped between the two by hand), and once
over a real socket pair with the server on a thread. The certificate is self-signed, for 127.0.0.1 and localhost."""

from __future__ import annotations

import ctypes
import os
import re
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.devkit.tlscert import self_signed
from bridge.realtime import tls_native
from bridge.realtime.tls_native import NativeTls, NativeTlsLib

# cbt_seal_fn (callbridge.h), as the C uplink calls it
SEAL_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int)


@pytest.fixture(scope="module")
def lib() -> NativeTlsLib:
    loaded = tls_native.load()
    if loaded is None:
        why = tls_native.problem() or ""
        if "no libssl" in why or "no C compiler" in why:
            pytest.skip(f"the native TLS engine cannot be built here: {why}")
        pytest.fail(f"the native TLS engine did not load: {why}")
    return loaded


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"), address="127.0.0.1", also=("localhost",))


def server_context(cert: tuple[Path, Path], maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


def sni_names(ctx: ssl.SSLContext) -> list[str | None]:
    """The server names (SNI) the clients of ``ctx`` will send, None for none."""
    names: list[str | None] = []

    def note(_conn: ssl.SSLObject | ssl.SSLSocket, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    ctx.sni_callback = note
    return names


class Server:
    """The far end: Python's ssl over memory BIOs, run by the test's calls."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.inbox, self.outbox = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inbox, self.outbox, server_side=True)

    def handshake(self) -> bool:
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def read_all(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                return b"".join(chunks)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def connect(engine: NativeTls, server: Server, take_last: bool = True) -> None:
    """Pump the handshake between the engine and the server until both are done (or one raises)."""
    for _ in range(10):
        done = engine.handshake()
        if done and not take_last:
            return
        server.inbox.write(engine.take())
        server_done = server.handshake()
        engine.feed(server.outbox.read())
        if done and server_done:
            assert engine.read() == (b"", False)  # the server's session tickets: no application data
            return
    raise AssertionError("the handshake did not finish")


def connected(cert: tuple[Path, Path], host: str = "127.0.0.1", **server: ssl.TLSVersion) -> tuple[NativeTls, Server]:
    engine, far = NativeTls(host, cafile=cert[0]), Server(server_context(cert, **server))
    connect(engine, far)
    return engine, far


def test_a_verified_handshake_by_address_and_by_name_and_data_both_ways(
    lib: NativeTlsLib, cert: tuple[Path, Path]
) -> None:
    for host in ("127.0.0.1", "localhost"):
        ctx = server_context(cert)
        names = sni_names(ctx)
        engine, server = NativeTls(host, cafile=cert[0]), Server(ctx)
        connect(engine, server)
        assert engine.version == "TLSv1.3"
        assert engine.cipher.startswith("TLS_")
        assert names == [None if host == "127.0.0.1" else "localhost"]  # SNI carries names, never addresses
        for size in (1, 1400, 70000):
            sent = os.urandom(size)
            server.inbox.write(engine.seal(sent))
            assert server.read_all() == sent
            reply = os.urandom(size)
            server.tls.write(reply)
            engine.feed(server.outbox.read())
            assert engine.read() == (reply, False)
        engine.close()


def test_a_certificate_for_another_name_or_address_is_refused(lib: NativeTlsLib, cert: tuple[Path, Path]) -> None:
    for host, why in (("example.com", "hostname mismatch"), ("127.0.0.2", "IP address mismatch")):
        engine = NativeTls(host, cafile=cert[0])
        with pytest.raises(ssl.SSLCertVerificationError) as caught:
            connect(engine, Server(server_context(cert)))
        assert str(caught.value.args[1]) == f"certificate verify failed: {why}"
        assert caught.value.verify_message == why
        with pytest.raises(ssl.SSLError):  # and the engine stays failed
            engine.handshake()


def test_a_self_signed_certificate_is_refused_by_the_default_store_unless_not_verifying(
    lib: NativeTlsLib, cert: tuple[Path, Path]
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match=re.compile("self[- ]signed", re.IGNORECASE)):
        connect(NativeTls("127.0.0.1"), Server(server_context(cert)))
    for host in ("127.0.0.1", "example.com"):
        engine, server = NativeTls(host, verify=False), Server(server_context(cert))
        connect(engine, server)
        server.inbox.write(engine.seal(b"hello"))
        assert server.read_all() == b"hello"


def test_a_ca_file_rewritten_in_place_is_trusted_anew(
    lib: NativeTlsLib, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """The engine keeps the context of the last CA file it loaded while that file is unchanged: a new file under the
    same name is loaded again."""
    other = self_signed(tmp_path / "other", address="127.0.0.1", also=("localhost",))
    trusted = tmp_path / "ca.pem"
    trusted.write_bytes(cert[0].read_bytes())
    connect(NativeTls("localhost", cafile=trusted), Server(server_context(cert)))
    connect(NativeTls("localhost", cafile=trusted), Server(server_context(cert)))  # the kept context
    replacement = tmp_path / "ca.pem.new"
    replacement.write_bytes(other[0].read_bytes())
    replacement.replace(trusted)
    connect(NativeTls("localhost", cafile=trusted), Server(server_context(other)))
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(NativeTls("localhost", cafile=trusted), Server(server_context(cert)))


def test_a_ca_directory_is_searched_by_hash(lib: NativeTlsLib, cert: tuple[Path, Path], tmp_path: Path) -> None:
    """``capath`` as OpenSSL takes it: certificates under their subject hashes (none here, so nothing is trusted)."""
    with pytest.raises(ssl.SSLCertVerificationError, match=r"local issuer|self[- ]signed"):
        connect(NativeTls("localhost", capath=tmp_path), Server(server_context(cert)))
    with pytest.raises(FileNotFoundError):
        NativeTls("localhost", capath=tmp_path / "missing")


def test_tls_1_2_is_enough(lib: NativeTlsLib, cert: tuple[Path, Path]) -> None:
    engine, server = connected(cert, maximum=ssl.TLSVersion.TLSv1_2)
    assert engine.version == "TLSv1.2"
    server.inbox.write(engine.seal(b"x" * 40000))
    assert server.read_all() == b"x" * 40000
    server.tls.write(b"y" * 40000)
    engine.feed(server.outbox.read())
    assert engine.read() == (b"y" * 40000, False)


def test_tls_1_0_and_1_1_are_refused(lib: NativeTlsLib, cert: tuple[Path, Path]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # ssl.TLSVersion.TLSv1 and TLSv1_1 are deprecated
        old = server_context(cert, maximum=ssl.TLSVersion.TLSv1_1)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        lenient = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        lenient.check_hostname, lenient.verify_mode = False, ssl.CERT_NONE
        lenient.minimum_version = ssl.TLSVersion.TLSv1
        lenient.set_ciphers("DEFAULT:@SECLEVEL=0")
    # The server can speak TLS 1.1 at all: a client that allows it gets it.
    server, client_in, client_out = Server(old), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = lenient.wrap_bio(client_in, client_out)
    try:
        for _ in range(10):
            try:
                client.do_handshake()
                break
            except ssl.SSLWantReadError:
                server.inbox.write(client_out.read())
                server.handshake()
                client_in.write(server.outbox.read())
    except ssl.SSLError as exc:
        pytest.skip(f"this OpenSSL will not negotiate TLS 1.0/1.1 even at SECLEVEL=0: {exc}")
    assert client.version() == "TLSv1.1"
    # The engine offers TLS 1.2 and 1.3 only (supported_versions, RFC 8446 §4.2.1): the server finds nothing to
    # agree on, and the engine fails on its alert.
    engine, server = NativeTls("127.0.0.1", cafile=cert[0]), Server(old)
    assert not engine.handshake()
    server.inbox.write(engine.take())
    with pytest.raises(ssl.SSLError, match="unsupported protocol"):
        server.handshake()
    engine.feed(server.outbox.read())
    with pytest.raises(ssl.SSLError, match="alert protocol version"):
        engine.handshake()


def test_close_notify_from_the_server_is_seen(lib: NativeTlsLib, cert: tuple[Path, Path]) -> None:
    engine, server = connected(cert)
    server.tls.write(b"last words")
    with pytest.raises(ssl.SSLWantReadError):  # close_notify sent; the engine's is not in yet
        server.tls.unwrap()
    engine.feed(server.outbox.read())
    assert engine.read() == (b"last words", True)
    assert engine.read() == (b"", True)


def test_close_notify_from_the_engine_reaches_the_server(lib: NativeTlsLib, cert: tuple[Path, Path]) -> None:
    engine, server = connected(cert)
    server.inbox.write(engine.seal(b"bye") + engine.close_notify())
    assert server.tls.read(100) == b"bye"
    assert server.tls.read(100) == b""  # _ssl's end of stream: close_notify received, the server's not yet sent
    server.tls.unwrap()  # returns at once (no SSLWantReadError): the engine's close_notify is in
    assert engine.close_notify() == b""  # only once
    with pytest.raises(ssl.SSLError, match="closed"):
        engine.seal(b"more")


def test_seal_from_another_thread_while_the_loop_feeds_and_reads(lib: NativeTlsLib, cert: tuple[Path, Path]) -> None:
    """The clock thread seals through seal_fn and the handle, as C would, while the loop feeds, reads and takes. Each
    seal returns its records whole: the loop never finds any of them waiting (cbt_take), however the calls
    interleave, and the server gets every message in order from the clock thread's returns alone. Three rounds:
    without the engine's mutex, at least one goes wrong nearly always (lost or garbled records, or a crash)."""
    engine, server = connected(cert)
    for _ in range(3):
        race(lib, engine, server)


def race(lib: NativeTlsLib, engine: NativeTls, server: Server) -> None:
    seal = SEAL_FN(engine.seal_fn)
    messages = [f"<frame {i:03d}>".encode() * (1 + i * 37 % 9000) for i in range(500)]  # up to 99 kB: 1-7 records
    incoming = [os.urandom(3000) for _ in range(400)]
    for chunk in incoming:
        server.tls.write(chunk)
    wire = server.outbox.read()
    sealed: list[bytes] = []
    failures: list[str] = []
    start = threading.Barrier(2)

    def clock() -> None:
        out = ctypes.create_string_buffer(lib.cdll.cbt_seal_room(max(map(len, messages))))
        start.wait()
        for message in messages:
            n = seal(engine.handle, message, len(message), out, len(out))
            if n <= len(message):
                failures.append(f"cbt_seal gave {n} for {len(message)} bytes")
                return
            sealed.append(ctypes.string_at(out, n))

    thread = threading.Thread(target=clock)
    thread.start()
    start.wait()
    received: list[bytes] = []
    stolen = at = 0
    while thread.is_alive() or at < len(wire):
        if at < len(wire):
            engine.feed(wire[at : at + 1000])
            at += 1000
        data, closed = engine.read()
        assert not closed
        received.append(data)
        stolen += len(engine.take())
    thread.join()
    assert failures == []
    assert stolen == 0
    assert b"".join(received) == b"".join(incoming)
    server.inbox.write(b"".join(sealed))
    assert server.read_all() == b"".join(messages)


def test_seal_without_room_consumes_nothing(lib: NativeTlsLib, cert: tuple[Path, Path]) -> None:
    engine, server = connected(cert)
    cdll, message = lib.cdll, b"m" * 100
    out = ctypes.create_string_buffer(cdll.cbt_seal_room(len(message)))
    assert cdll.cbt_seal(engine.handle, message, len(message), out, 100) == -1
    assert cdll.cbt_pending(engine.handle) == 0
    n = cdll.cbt_seal(engine.handle, message, len(message), out, len(out))
    assert len(message) < n <= len(out)
    server.inbox.write(out.raw[:n])
    assert server.read_all() == message  # once: the refused call sealed nothing


def test_seal_carries_what_was_queued_before_it(lib: NativeTlsLib, cert: tuple[Path, Path]) -> None:
    engine, server = NativeTls("localhost", cafile=cert[0]), Server(server_context(cert))
    with pytest.raises(ssl.SSLError, match="handshake is not done"):
        engine.seal(b"too early")
    connect(engine, server, take_last=False)  # the engine is done; its Finished still waits in the engine
    assert lib.cdll.cbt_pending(engine.handle) > 0
    server.inbox.write(engine.seal(b"after the handshake"))
    assert server.handshake()
    assert server.read_all() == b"after the handshake"


def test_over_a_real_socket(lib: NativeTlsLib, cert: tuple[Path, Path]) -> None:
    near, far = socket.socketpair()
    near.settimeout(10)
    far.settimeout(10)
    payload = os.urandom(100_000)
    outcome: dict[str, object] = {}

    def serve() -> None:
        try:
            with server_context(cert).wrap_socket(far, server_side=True) as tls:
                got = b""
                while len(got) < len(payload):
                    got += tls.recv(65536)
                tls.sendall(got[::-1])
                outcome["eof"] = tls.recv(100)  # b"": the engine's close_notify
                tls.unwrap()
                outcome["got"] = got
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        engine = NativeTls("localhost", cafile=cert[0])
        while not engine.handshake():
            near.sendall(engine.take())
            engine.feed(near.recv(65536))
        near.sendall(engine.take())
        near.sendall(engine.seal(payload))
        back, closed = b"", False
        while len(back) < len(payload):
            engine.feed(near.recv(65536))
            data, closed = engine.read()
            back += data
        assert back == payload[::-1]
        near.sendall(engine.close_notify())
        while not closed:
            chunk = near.recv(65536)
            assert chunk, "the socket closed before the server's close_notify"
            engine.feed(chunk)
            _, closed = engine.read()
        engine.close()
    finally:
        thread.join(10)
        near.close()
        far.close()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["got"] == payload and outcome["eof"] == b""


def test_a_closed_engine_refuses_use(lib: NativeTlsLib) -> None:
    engine = NativeTls("localhost")
    assert engine.handle and engine.seal_fn
    engine.close()
    engine.close()
    for use in (engine.handshake, engine.take, engine.read, lambda: engine.feed(b"x"), lambda: engine.handle):
        with pytest.raises(ValueError, match="closed"):
            use()


@pytest.fixture
def fresh_load() -> Iterator[None]:
    tls_native._reset_for_tests()
    yield
    tls_native._reset_for_tests()


def test_turned_off_by_the_environment(fresh_load: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBRIDGE_NATIVE_TLS", "0")
    assert tls_native.load() is None
    assert tls_native.problem() == "off by CALLBRIDGE_NATIVE_TLS=0"
    with pytest.raises(OSError, match="CALLBRIDGE_NATIVE_TLS=0"):
        NativeTls("localhost")


def test_the_libssl_is_the_one_ssl_uses() -> None:
    path = tls_native.libssl_path()
    if path is None:
        pytest.skip("no libssl found")
    assert os.path.basename(path).startswith("libssl")
