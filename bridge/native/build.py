"""Compile one of the package's C sources into a shared library, once per source version.

The bridge has six small C parts, each with a Python fallback: the native media port (``bridge/native/cport.c``), the
G.711-rate resampler kernels (``bridge/native/resample.c``), the echo guard (``bridge/native/echo.c``), the TLS
engine (``bridge/native/tls.c``: it reaches the process's OpenSSL through dlopen, so no OpenSSL header is needed) and
the downlink's decoder of the model's audio deltas (``bridge/native/downlink.c``) and the playout ring
(``bridge/native/playout.c``).
Besides libc, libm and libdl they use one header, their shared ``bridge/native/callbridge.h`` (the frame's constants and
the types of the kernels passed between them), so a plain ``cc -shared -I bridge/native`` builds each. The library lands
in ``$CALLBRIDGE_CACHE``, else ``$XDG_CACHE_HOME/callbridge``, else ``~/.cache/callbridge``, named by a hash of the
source and the headers, so an edited source or header is rebuilt and several worker processes starting together never
load a half-written file (each compiles to a private name and renames it into place). ``./dev setup`` builds them all
ahead (``python -m bridge.devkit.native_check``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

HERE = Path(__file__).parent
CPORT_SOURCE = HERE / "cport.c"  # the native media port and the uplink (loaded by bridge.sip.cport)
RESAMPLE_SOURCE = HERE / "resample.c"  # the resampler kernels (loaded by bridge.audio.resample)
ECHO_SOURCE = HERE / "echo.c"  # the echo guard (loaded by bridge.audio.echo_native)
TLS_SOURCE = HERE / "tls.c"  # the TLS engine (loaded by bridge.realtime.tls_native)
DOWNLINK_SOURCE = HERE / "downlink.c"  # the model's audio deltas decoded (loaded by bridge.realtime.downlink)
PLAYOUT_SOURCE = HERE / "playout.c"  # the playout ring (loaded by bridge.audio.playout_native)
SOURCES = (CPORT_SOURCE, RESAMPLE_SOURCE, ECHO_SOURCE, TLS_SOURCE, DOWNLINK_SOURCE, PLAYOUT_SOURCE)
HEADERS = (HERE / "callbridge.h",)  # included by every source

# (function name, its return type, its argument types) as ctypes spells them
Signature = tuple[str, Any, Sequence[Any]]


def cache_dir() -> Path:
    explicit = os.environ.get("CALLBRIDGE_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "callbridge"


def version(source: Path) -> str:
    """A hash of ``source``, the headers it may include and the platform: names the library built from them."""
    hashed = hashlib.sha256()
    for part in (source, *HEADERS):
        hashed.update(part.name.encode() + b"\0" + part.read_bytes() + b"\0")
    hashed.update(sys.platform.encode())
    return hashed.hexdigest()[:16]


def build(source: Path, force: bool = False) -> Path:
    """The shared library built from ``source``; compiled now if this version is not in the cache.

    Raises ``OSError`` naming the compiler and its message if there is no compiler or the build fails."""
    digest = version(source)
    target = cache_dir() / f"{source.stem}-{digest}.so"
    if target.exists() and not force:
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise OSError("no C compiler (cc or gcc) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{source.stem}-", suffix=".so", dir=target.parent)
    os.close(fd)
    cmd = [compiler, "-O3", "-std=c11", "-Wall", "-Werror", "-shared", "-fPIC", "-pthread", f"-I{HERE}"]
    cmd += [str(source), "-o", tmp, "-lm", "-ldl"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise OSError(f"{' '.join(cmd)} failed: {done.stderr.strip()[:2000]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load(source: Path, signatures: Iterable[Signature]) -> ctypes.CDLL:
    """The library built from ``source`` (:func:`build`), loaded, with ``signatures`` declared.

    Raises ``OSError`` if it cannot be built or loaded, ``AttributeError`` if it lacks a declared function."""
    lib = ctypes.CDLL(str(build(source)))
    for name, restype, argtypes in signatures:
        func = getattr(lib, name)
        func.restype, func.argtypes = restype, list(argtypes)
    return lib


T = TypeVar("T")


class LoadOnce(Generic[T]):
    """A C part built and loaded once per process: ``load`` gives (the library, None) or (None, why not), and
    that outcome is kept (dlopen'd code is never unloaded)."""

    def __init__(self, load: Callable[[], tuple[T | None, str | None]]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._outcome: tuple[T | None, str | None] | None = None

    def get(self) -> T | None:
        """The library, loaded on first use; None if it cannot be (:meth:`problem` says why)."""
        with self._lock:
            if self._outcome is None:
                self._outcome = self._load()
            return self._outcome[0]

    def problem(self) -> str | None:
        """Why :meth:`get` gives None (None when it loaded, or before it was tried)."""
        outcome = self._outcome
        return outcome[1] if outcome else None

    def forget(self) -> None:
        """Try again on the next :meth:`get` (tests)."""
        with self._lock:
            self._outcome = None
