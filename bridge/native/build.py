"""Find, or compile, the shared library of one of the package's C sources.

The bridge has six small C parts, each with a Python fallback: the native media port (``bridge/native/cport.c``), the
G.711-rate resampler kernels (``bridge/native/resample.c``), the echo guard (``bridge/native/echo.c``), the TLS
engine (``bridge/native/tls.c``: it reaches the process's OpenSSL through dlopen, so no OpenSSL header is needed) and
the downlink's decoder of the model's audio deltas (``bridge/native/downlink.c``) and the playout ring
(``bridge/native/playout.c``).
Besides libc, libm and libdl they use one header, their shared ``bridge/native/callbridge.h`` (the frame's constants and
the types of the kernels passed between them), so a plain ``cc -shared -I bridge/native`` builds each (:func:`command`).
A library is named by a hash of its source, the headers and the platform (:func:`version`): ``<part>-<version>.so``.

The wheel carries them, compiled when it is built (``setup.py``), beside their sources in the installed package:
:func:`library` loads that one, trusted as the package's Python code is. Without it (an sdist installed with no
compiler, or an editable install whose source was edited since) :func:`build` compiles the part on first use into
``$CALLBRIDGE_CACHE``, else ``$XDG_CACHE_HOME/callbridge``, else ``~/.cache/callbridge``, which only this user may
write (:func:`unsafe`: it and the library this user's own and not group or world writable, each folder above this
user's or root's and not group or world writable unless sticky, as ``/tmp``); any other is refused with a log line
saying why, and the Python version runs. Several worker
processes starting together never load a half-written file (each compiles to a private name and renames it into
place). ``python -m bridge.devkit.native_check`` loads them all and says where each came from.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

log = logging.getLogger("bridge.native")
HERE = Path(__file__).parent
CPORT_SOURCE = HERE / "cport.c"  # the native media port and the uplink (loaded by bridge.sip.cport)
RESAMPLE_SOURCE = HERE / "resample.c"  # the resampler kernels (loaded by bridge.audio.resample)
ECHO_SOURCE = HERE / "echo.c"  # the echo guard (loaded by bridge.audio.echo_native)
TLS_SOURCE = HERE / "tls.c"  # the TLS engine (loaded by bridge.realtime.tls_native)
DOWNLINK_SOURCE = HERE / "downlink.c"  # the model's audio deltas decoded (loaded by bridge.realtime.downlink)
PLAYOUT_SOURCE = HERE / "playout.c"  # the playout ring (loaded by bridge.audio.playout_native)
SOURCES = (CPORT_SOURCE, RESAMPLE_SOURCE, ECHO_SOURCE, TLS_SOURCE, DOWNLINK_SOURCE, PLAYOUT_SOURCE)
HEADERS = (HERE / "callbridge.h",)  # included by every source
PACKAGE, CACHE, BUILT = "the package", "the cache", "the cache, compiled now"  # where a library came from

# (function name, its return type, its argument types) as ctypes spells them
Signature = tuple[str, Any, Sequence[Any]]

_origins: dict[str, tuple[str, Path]] = {}  # source name -> (PACKAGE, CACHE or BUILT, the library) of this process


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


def library_name(source: Path) -> str:
    """The file name of the library built from this version of ``source``, in the package and in the cache alike."""
    return f"{source.stem}-{version(source)}.so"


def compiler() -> list[str] | None:
    """The C compiler's command: ``$CC`` (split as a shell would), else ``cc`` or ``gcc`` on ``PATH``; None if none."""
    explicit = shlex.split(os.environ.get("CC", ""))
    if explicit:
        return explicit
    found = shutil.which("cc") or shutil.which("gcc")
    return [found] if found else None


def command(cc: Sequence[str], source: Path, output: Path) -> list[str]:
    """How ``cc`` compiles ``source`` into the shared library ``output`` (the wheel's build and :func:`build` alike)."""
    flags = ["-O3", "-std=c11", "-Wall", "-Werror", "-shared", "-fPIC", "-pthread", f"-I{source.parent}"]
    return [*cc, *flags, str(source), "-o", str(output), "-lm", "-ldl"]


def compile_library(source: Path, output: Path) -> None:
    """Compile ``source`` into ``output`` (written whole or not at all, mode 0755). ``OSError`` naming the compiler
    and its message if there is no compiler or the build fails."""
    cc = compiler()
    if not cc:
        raise OSError("no C compiler (cc or gcc) on PATH")
    fd, tmp = tempfile.mkstemp(prefix=f".{source.stem}-", suffix=".so", dir=output.parent)
    os.close(fd)
    cmd = command(cc, source, Path(tmp))
    try:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise OSError(f"{' '.join(cmd)} failed: {exc}") from exc
        if done.returncode != 0:
            raise OSError(f"{' '.join(cmd)} failed: {done.stderr.strip()[:2000]}")
        os.chmod(tmp, 0o755)  # the linker's mode follows the umask: never group or world writable
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def unsafe(path: Path) -> str | None:
    """Why a library at ``path`` (a file or the directory it goes in) could have been planted by another user: it or
    its directory is not this user's own or is group or world writable, or one of the directories above is neither
    this user's nor root's or is group or world writable without the sticky bit. None when only this user (and root)
    can have put it there (``path`` is read as :func:`os.path.realpath` has it, but a library that is a symbolic link
    is refused: a compiled library never is one)."""
    if path.is_symlink() and not path.is_dir():
        return f"{path} is a symbolic link"
    me = os.geteuid()
    real = Path(os.path.realpath(path))
    strict = [real, real.parent] if real.is_file() else [real]
    for place in (real, *real.parents):
        try:
            info = os.stat(place)
        except OSError as exc:
            return f"{place} cannot be checked: {exc.strerror}"
        writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if place in strict:
            if info.st_uid != me:
                return f"{place} is owned by uid {info.st_uid}, not this user (uid {me})"
            if writable:
                return f"{place} is writable by other users (mode {stat.filemode(info.st_mode)})"
        elif info.st_uid not in (me, 0):
            return f"{place} is owned by uid {info.st_uid}, neither this user (uid {me}) nor root"
        elif writable and not info.st_mode & stat.S_ISVTX:
            return f"{place} is writable by other users (mode {stat.filemode(info.st_mode)}, not sticky)"
    return None


def _refuse_unsafe(path: Path) -> None:
    why = unsafe(path)
    if why:
        log.warning(
            "refusing to load a C part from %s: %s (another user could plant code there); the Python version runs. "
            "Make the cache this user's own and not group or world writable (chmod go-w), or set CALLBRIDGE_CACHE",
            path,
            why,
        )
        raise OSError(f"refused {path}: {why}")


def build(source: Path, force: bool = False) -> Path:
    """The shared library built from ``source`` in the cache; compiled now if this version is not there.

    Raises ``OSError`` naming the compiler and its message if there is no compiler or the build fails, or saying why
    the cache is refused (:func:`unsafe`)."""
    target = Path(os.path.realpath(cache_dir())) / library_name(source)  # the folders checked are those loaded from
    if (target.exists() or target.is_symlink()) and not force:
        _refuse_unsafe(target)
        _origins[source.name] = (CACHE, target)
        return target
    if not compiler():
        raise OSError("no C compiler (cc or gcc) on PATH")
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _refuse_unsafe(target.parent)
    compile_library(source, target)
    _origins[source.name] = (BUILT, target)
    return target


def library(source: Path) -> Path:
    """The shared library of ``source``: the package's own (the wheel's, compiled with it) if there is one for this
    version of the source, else :func:`build`'s."""
    packaged = source.parent / library_name(source)
    if packaged.is_file():
        _origins[source.name] = (PACKAGE, packaged)
        return packaged
    return build(source)


def origin(source: Path) -> tuple[str, Path] | None:
    """Where this process took ``source``'s library from (:data:`PACKAGE`, :data:`CACHE` or :data:`BUILT`, and its
    path); None before :func:`library` or :func:`build` gave one."""
    return _origins.get(source.name)


def load(source: Path, signatures: Iterable[Signature]) -> ctypes.CDLL:
    """The library of ``source`` (:func:`library`), loaded, with ``signatures`` declared.

    Raises ``OSError`` if it cannot be built or loaded, ``AttributeError`` if it lacks a declared function."""
    lib = ctypes.CDLL(str(library(source)))
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
