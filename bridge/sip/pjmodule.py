"""A pjsip module of the bridge's own (:mod:`bridge.sip.rxhook`, :mod:`bridge.sip.txhook`): its registration with the
started endpoint, through ctypes (pjsua2 does not wrap ``pjsip_endpt_register_module``), and the one read of a
pointer both need."""

from __future__ import annotations

import ctypes

from bridge.sip.cport import PJSUA

PTR = ctypes.sizeof(ctypes.c_void_p)


def word(address: int) -> int:
    """The pointer-sized little-endian word at ``address``."""
    return int.from_bytes(ctypes.string_at(address, PTR), "little")


class ModuleHook:
    """A ``pjsip_module`` structure (kept alive here: pjsip holds its address) added to the endpoint by
    :meth:`register` and taken out by :meth:`unregister`; :attr:`why` says why it is off, if it is."""

    def __init__(self, module: ctypes.Structure) -> None:
        self._module = module
        self._endpt: int | None = None
        self.why = ""

    @property
    def active(self) -> bool:
        return self._endpt is not None and not self.why

    def register(self) -> bool:
        """Add the module to the started endpoint; False (and :attr:`why`) if it cannot be."""
        if PJSUA is None:
            self.why = "the pjsua2 library cannot be loaded with ctypes"
            return False
        PJSUA.pjsua_get_pjsip_endpt.restype = ctypes.c_void_p
        endpt = PJSUA.pjsua_get_pjsip_endpt()
        status = PJSUA.pjsip_endpt_register_module(ctypes.c_void_p(endpt), ctypes.byref(self._module)) if endpt else -1
        if status != 0:
            self.why = f"pjsip_endpt_register_module failed ({status})"
            return False
        self._endpt = endpt
        return True

    def unregister(self) -> None:
        endpt, self._endpt = self._endpt, None
        if endpt is not None and PJSUA is not None:
            PJSUA.pjsip_endpt_unregister_module(ctypes.c_void_p(endpt), ctypes.byref(self._module))
