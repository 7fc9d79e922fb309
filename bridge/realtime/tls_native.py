"""The TLS engine in C (``bridge/native/tls.c``): a TLS client over memory BIOs for the native uplink over ``wss://``.

The C uplink sends the caller's audio from pjmedia's media clock thread; over ``wss://`` it encrypts each WebSocket
frame there too, with ``cbt_seal`` (:attr:`NativeTls.seal_fn`) on the engine :attr:`NativeTls.handle`. The event
loop owns the socket and uses the same engine through :class:`NativeTls`: it sends what :meth:`~NativeTls.take`
and :meth:`~NativeTls.seal` give, feeds what arrives (:meth:`~NativeTls.feed`) and reads the plaintext
(:meth:`~NativeTls.read`). One mutex per engine keeps the records of both threads in one order.

The engine uses the OpenSSL the interpreter's :mod:`ssl` module already has mapped (:func:`libssl_path`), through
dlopen, so building it needs no OpenSSL headers. :func:`load` builds and loads it once per process (``None`` when it
cannot, :func:`problem` says why; ``CALLBRIDGE_NATIVE_TLS=0`` turns it off). Failures raise :class:`ssl.SSLError`
(:class:`ssl.SSLCertVerificationError` for a certificate or name that does not verify), as Python's ssl does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import ssl
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from bridge.native.build import LoadOnce

ENV = "CALLBRIDGE_NATIVE_TLS"
READ_CHUNK = 64 * 1024  # plaintext taken per cbt_read
SEAL_CHUNK = 1024 * 1024  # plaintext sealed per cbt_seal: bounds the seal buffer
_VERIFY_FAILED = "certificate verify failed"

_P, _I, _S = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
_SIGNATURES: tuple[tuple[str, Any, list[Any]], ...] = (  # name, return type, argument types
    ("cbt_load", _I, [_S]),
    ("cbt_load_error", _S, []),
    ("cbt_new", _P, [_S, _I, _S, _S]),
    ("cbt_handshake", _I, [_P]),
    ("cbt_feed", _I, [_P, _P, _I]),
    ("cbt_read", _I, [_P, _P, _I]),
    ("cbt_seal", _I, [_P, _P, _I, _P, _I]),
    ("cbt_seal_room", _I, [_I]),
    ("cbt_pending", _I, [_P]),
    ("cbt_take", _I, [_P, _P, _I]),
    ("cbt_close_notify", _I, [_P]),
    ("cbt_error", _S, [_P]),
    ("cbt_version", _S, [_P]),
    ("cbt_cipher", _S, [_P]),
    ("cbt_free", None, [_P]),
)


@dataclass(frozen=True)
class NativeTlsLib:
    """The loaded engine: its library (functions declared) and the libssl it uses."""

    cdll: ctypes.CDLL
    libssl: str


def libssl_path() -> str | None:
    """The libssl the interpreter's ssl module uses (mapped into this process), else the system's, else None."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and not fields[5].endswith("(deleted)\n"):
                    path = fields[5].strip()
                    if os.path.basename(path).startswith("libssl.so"):
                        return path
    except OSError:
        pass
    return ctypes.util.find_library("ssl")


def load() -> NativeTlsLib | None:
    """Build and load the engine, once per process; None if it cannot be (:func:`problem` says why)."""
    return _LIB.get()


def problem() -> str | None:
    """Why :func:`load` gives None (None when it loaded, or before it was tried)."""
    return _LIB.problem()


def _reset_for_tests() -> None:
    """Forget the outcome of :func:`load` (the library itself stays loaded: dlopen'd code is never unloaded)."""
    _LIB.forget()


def _load() -> tuple[NativeTlsLib | None, str | None]:
    if os.environ.get(ENV, "1") == "0":
        return None, f"off by {ENV}=0"
    path = libssl_path()
    if not path:
        return None, "no libssl found"
    from bridge.native import build

    try:
        cdll = build.load(build.TLS_SOURCE, _SIGNATURES)
    except (OSError, AttributeError) as exc:
        return None, str(exc)
    if cdll.cbt_load(os.fsencode(path)) != 0:
        return None, f"cbt_load: {_text(cdll.cbt_load_error())}"
    return NativeTlsLib(cdll, path), None


def _text(raw: bytes | None) -> str:
    return (raw or b"").decode("utf-8", errors="replace")


Buffer = bytes | bytearray | memoryview


def _pointer(data: Buffer) -> tuple[bytes | ctypes.Array[ctypes.c_char], int]:
    """``data`` as something a ``c_void_p`` parameter takes, without a copy where it is bytes or writable."""
    if isinstance(data, bytes):
        return data, len(data)
    view = memoryview(data).cast("B")
    if not view.readonly:
        return (ctypes.c_char * view.nbytes).from_buffer(view), view.nbytes
    return view.tobytes(), view.nbytes


class NativeTls:
    """One TLS client connection in the C engine, for ``host`` (the SNI name and the name or address its certificate
    must carry when ``verify``), trusting ``cafile`` and/or ``capath`` (as :meth:`ssl.SSLContext.load_verify_locations`
    takes them), else the default store (``SSL_CERT_FILE``/``SSL_CERT_DIR`` as they were when the process's first
    engine without them was made, else the system's). The caller moves the bytes: it sends what :meth:`take` and
    :meth:`seal` give and feeds what arrives. Safe to use from several threads; :meth:`close` frees the engine (the
    C side must be done with it)."""

    def __init__(
        self,
        host: str,
        verify: bool = True,
        cafile: str | os.PathLike[str] | None = None,
        capath: str | os.PathLike[str] | None = None,
    ) -> None:
        lib = load()
        if lib is None:
            raise OSError(f"the native TLS engine is unavailable: {problem()}")
        if verify and not host:
            raise ValueError("a verified connection needs the host name (or address) to check")
        if cafile is not None and not os.path.isfile(cafile):
            raise FileNotFoundError(f"no CA file {os.fspath(cafile)!r}")
        if capath is not None and not os.path.isdir(capath):
            raise FileNotFoundError(f"no CA directory {os.fspath(capath)!r}")
        self._lib = lib.cdll
        raw = self._lib.cbt_new(
            host.encode("idna") if host else None,
            int(verify),
            None if cafile is None else os.fsencode(cafile),
            None if capath is None else os.fsencode(capath),
        )
        if not raw:
            raise ssl.SSLError(1, f"the TLS engine for {host!r} could not be made (a CA file without certificates?)")
        self._t: int | None = raw
        self._finalizer = weakref.finalize(self, self._lib.cbt_free, raw)
        self._lock = threading.Lock()
        self._read_buf = ctypes.create_string_buffer(READ_CHUNK)
        self._seal_buf = ctypes.create_string_buffer(0)

    def _handle(self) -> int:
        if self._t is None:
            raise ValueError("the TLS engine is closed")
        return self._t

    def _error(self, handle: int) -> ssl.SSLError:
        text = _text(self._lib.cbt_error(handle)) or "TLS failure"
        if text.startswith(_VERIFY_FAILED):
            exc = ssl.SSLCertVerificationError(1, text)
            exc.verify_message = text[len(_VERIFY_FAILED) :].lstrip(": ")
            return exc
        return ssl.SSLError(1, text)

    def handshake(self) -> bool:
        """Advance the handshake: True once done; False while it needs the peer's answer (send :meth:`take`'s bytes,
        :meth:`feed` the reply, call again). Raises :class:`ssl.SSLError` if it failed."""
        with self._lock:
            handle = self._handle()
            rc = self._lib.cbt_handshake(handle)
            if rc < 0:
                raise self._error(handle)
            return bool(rc)

    def feed(self, data: Buffer) -> None:
        """Ciphertext that came from the network."""
        pointer, size = _pointer(data)
        with self._lock:
            handle = self._handle()
            if self._lib.cbt_feed(handle, pointer, size) != 0:
                raise self._error(handle)

    def read(self) -> tuple[bytes, bool]:
        """All the plaintext decrypted from what was fed so far, and whether the peer sent close_notify. Reading may
        queue ciphertext to send (e.g. a key update's answer): :meth:`take` it."""
        chunks: list[bytes] = []
        closed = False
        with self._lock:
            handle = self._handle()
            while True:
                rc = self._lib.cbt_read(handle, self._read_buf, READ_CHUNK)
                if rc > 0:
                    chunks.append(ctypes.string_at(self._read_buf, rc))
                elif rc == 0:
                    break
                elif rc == -1:
                    closed = True
                    break
                else:
                    raise self._error(handle)
        return b"".join(chunks), closed

    def seal(self, data: Buffer) -> bytes:
        """Encrypt ``data`` as application data: the ciphertext to send, with anything queued before it."""
        pointer, size = _pointer(data)
        with self._lock:
            handle = self._handle()
            if size <= SEAL_CHUNK:
                return self._seal_once(handle, pointer, size)
            view = memoryview(pointer).cast("B")
            return b"".join(
                self._seal_once(handle, view[at : at + SEAL_CHUNK].tobytes(), min(SEAL_CHUNK, size - at))
                for at in range(0, size, SEAL_CHUNK)
            )

    def _seal_once(self, handle: int, data: bytes | ctypes.Array[ctypes.c_char], size: int) -> bytes:
        room = self._lib.cbt_seal_room(size)
        for _ in range(2):
            if len(self._seal_buf) < room:
                self._seal_buf = ctypes.create_string_buffer(room)
            rc = self._lib.cbt_seal(handle, data, size, self._seal_buf, len(self._seal_buf))
            if rc >= 0:
                return ctypes.string_at(self._seal_buf, rc)
            if rc != -1:
                raise self._error(handle)
            room = self._lib.cbt_pending(handle) + room  # more was queued than the room allows for: make space
        raise ssl.SSLError(1, "the TLS engine keeps asking for more room to seal")

    def take(self) -> bytes:
        """The ciphertext waiting to be sent (after :meth:`handshake`, :meth:`read` or :meth:`close_notify`)."""
        with self._lock:
            return self._take(self._handle())

    def _take(self, handle: int) -> bytes:
        chunks: list[bytes] = []
        while (pending := self._lib.cbt_pending(handle)) > 0:
            buf = ctypes.create_string_buffer(pending)
            chunks.append(ctypes.string_at(buf, self._lib.cbt_take(handle, buf, pending)))
        return b"".join(chunks)

    def close_notify(self) -> bytes:
        """End the session: the close_notify alert to send (with anything queued before it). Nothing is sealed after."""
        with self._lock:
            handle = self._handle()
            if self._lib.cbt_close_notify(handle) != 0:
                raise self._error(handle)
            return self._take(handle)

    @property
    def version(self) -> str:
        """The protocol version negotiated, e.g. "TLSv1.3" (for logs)."""
        with self._lock:
            return _text(self._lib.cbt_version(self._handle()))

    @property
    def cipher(self) -> str:
        """The cipher suite negotiated, e.g. "TLS_AES_256_GCM_SHA384" (for logs)."""
        with self._lock:
            return _text(self._lib.cbt_cipher(self._handle()))

    @property
    def handle(self) -> int:
        """The engine's address, for C (``cbt_tls *``). Valid until :meth:`close`."""
        return self._handle()

    @property
    def seal_fn(self) -> int:
        """The address of ``cbt_seal`` (a ``cbt_seal_fn``, callbridge.h), for C."""
        fn = ctypes.cast(self._lib.cbt_seal, ctypes.c_void_p).value
        if not fn:
            raise OSError("cbt_seal has no address")
        return fn

    def failure(self) -> str:
        """What failed in the engine (its last error's text)."""
        with self._lock:
            return _text(self._lib.cbt_error(self._handle())) if self._t is not None else "closed"

    def close(self) -> None:
        """Free the engine (once; later calls do nothing). The C side must no longer use :attr:`handle`."""
        with self._lock:
            self._t = None
            self._finalizer()


def opening_fns() -> tuple[int, int, int] | None:
    """The addresses of ``cbt_feed``, ``cbt_read`` and ``cbt_pending`` (callbridge.h), for the downlink's reader of
    the sockets over ``wss://`` (``cbd_set_tls``); None where the engine is not loaded."""
    lib = load()
    if lib is None:
        return None
    feed, read, pending = (ctypes.cast(getattr(lib.cdll, name), ctypes.c_void_p).value for name in _OPENING)
    return (feed, read, pending) if feed and read and pending else None


_OPENING = ("cbt_feed", "cbt_read", "cbt_pending")
_LIB = LoadOnce(_load)
