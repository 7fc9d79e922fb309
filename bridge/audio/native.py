"""Loading one of the audio C kernels (``bridge/native``: the resampler, the echo guard): built for this machine,
its functions' signatures declared, and checked against the numpy path before it is used. Any failure leaves it
unused, with the reason (``callbridge`` logs it once; ``CALLBRIDGE_NATIVE_AUDIO=0`` turns the kernels off)."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bridge.native import build as cbuild
from bridge.native.build import Signature

__all__ = ["NativeLib", "Signature", "load_native"]


@dataclass(frozen=True)
class NativeLib:
    lib: ctypes.CDLL | None
    why: str  # "" when loaded and checked


def load_native(source: str, signatures: Iterable[Signature], prepare: Callable[[ctypes.CDLL], None]) -> NativeLib:
    """Build ``bridge/native/<source>``, declare ``signatures``, and ``prepare`` it (set it up and check it:
    ``OSError`` or ``AttributeError`` says why it is not to be used)."""
    if os.environ.get("CALLBRIDGE_NATIVE_AUDIO", "1") == "0":
        return NativeLib(None, "turned off by CALLBRIDGE_NATIVE_AUDIO=0")
    try:
        lib = cbuild.load(cbuild.HERE / source, signatures)
        prepare(lib)
    except (OSError, AttributeError) as exc:
        return NativeLib(None, str(exc))
    return NativeLib(lib, "")
