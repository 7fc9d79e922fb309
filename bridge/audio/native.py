"""Loading one of the audio C kernels (``bridge/native``: the resampler, the echo guard): built for this machine,
its functions' signatures declared, and checked against the numpy path before it is used. Any failure leaves it
unused, with the reason (``callbridge`` logs it once; ``CALLBRIDGE_NATIVE_AUDIO=0`` turns the kernels off)."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# (function name, its return type, its argument types) as ctypes spells them
Signature = tuple[str, Any, Sequence[Any]]


@dataclass(frozen=True)
class NativeLib:
    lib: ctypes.CDLL | None
    why: str  # "" when loaded and checked


def load_native(source: str, signatures: Iterable[Signature], prepare: Callable[[ctypes.CDLL], None]) -> NativeLib:
    """Build ``bridge/native/<source>``, declare ``signatures``, and ``prepare`` it (set it up and check it:
    ``OSError`` or ``AttributeError`` says why it is not to be used)."""
    if os.environ.get("CALLBRIDGE_NATIVE_AUDIO", "1") == "0":
        return NativeLib(None, "turned off by CALLBRIDGE_NATIVE_AUDIO=0")
    from bridge.native import build as cbuild

    try:
        lib = ctypes.CDLL(str(cbuild.build(cbuild.HERE / source)))
        for name, restype, argtypes in signatures:
            func = getattr(lib, name)
            func.restype, func.argtypes = restype, list(argtypes)
        prepare(lib)
    except (OSError, AttributeError) as exc:
        return NativeLib(None, str(exc))
    return NativeLib(lib, "")
