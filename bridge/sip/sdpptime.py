"""The packet time the bridge sends, named in every SDP it sends (``a=ptime``, RFC 4566 §6): a pjsip module.

Every audio stream of the endpoint sends 20 ms packets whatever the offer asked (``MediaConfig.ptime``,
:mod:`bridge.sip.endpoint`: pjsua sets each stream's frames per packet from it), but pjmedia writes no ``a=ptime``
into the SDP it builds, so the answer to an offer of ``a=ptime:30`` or ``a=ptime:40`` said nothing of the 20 ms the
caller then gets (an SBC that sizes its jitter buffer or its transcoding by the answer's ptime guesses). pjsua2
cannot change the SDP of a call's first answer (``Call.onCallSdpCreated`` reaches only calls the application already
holds, and the answer is built before ``onIncomingCall``), so :class:`PtimeHook` does it on the way out: a pjsip
module just above ``mod-msg-print`` (priority 9: it sees each message before it is printed) reads an
``application/sdp`` body (:func:`with_ptime` on its text) and, when an audio section names no ``a=ptime``, puts the
same SDP with ``a=ptime:20`` in its place (``pjsip_msg_body_create`` in the message's pool). The session the
negotiator keeps is untouched; only the text sent changes.

Offsets (64-bit builds only; :func:`bridge.sip.txhook.proven` proves the ``pjsip_tx_data`` layout on the first
message): ``tdata->pool`` after the list links, ``tdata->msg`` (:data:`bridge.sip.txhook.MSG`), ``msg->body`` after
the type, the first line's union (32 bytes) and the header list head (64), and the body's ``content_type``
(``type``, ``subtype``: two ``pj_str_t`` then the parameter list, 80 bytes), ``data``, ``len`` and ``print_body``.
A body is touched only when its content type reads ``application``/``sdp`` there and it prints as an SDP.
"""

from __future__ import annotations

import ctypes
import logging
import re

from bridge.sip.cport import PJSUA, PjStr
from bridge.sip.pjmodule import ModuleHook, word
from bridge.sip.txhook import MSG, TX, TxModule, proven

_LOG = logging.getLogger("bridge.sip")
PRIORITY = 9  # PJSIP_MOD_PRIORITY_TRANSPORT_LAYER (8) + 1: before mod-msg-print prints the message
_PTR = ctypes.sizeof(ctypes.c_void_p)
_POOL = 2 * _PTR  # pjsip_tx_data: prev, next, pool
_MSG_BODY = 8 + 32 + 64  # pjsip_msg: type (padded), the request or status line union, the header list head; body
_BODY_TYPE, _BODY_SUBTYPE, _BODY_DATA, _BODY_PRINT = 0, 16, 80, 96
_MAX_SDP = 1 << 16
_APPLICATION, _SDP = b"application", b"sdp"
_PTIME = re.compile(r"^a=ptime:", re.IGNORECASE)

_PRINT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


def with_ptime(sdp: str, ptime_ms: int) -> str | None:
    """``sdp`` with ``a=ptime:<ptime_ms>`` at the end of each audio section that names none (its line endings
    kept); None when nothing changes (no audio section lacks one, or it is no SDP)."""
    if not sdp.startswith("v="):
        return None
    eol = "\r\n" if "\r\n" in sdp else "\n"
    lines = sdp.split(eol)
    trailing = lines[-1] == ""
    if trailing:
        lines.pop()
    out: list[str] = []
    section: list[str] = []
    changed = False

    def close() -> None:
        nonlocal changed
        if section and section[0].startswith("m=audio ") and not any(_PTIME.match(s) for s in section):
            section.append(f"a=ptime:{ptime_ms}")
            changed = True
        out.extend(section)
        section.clear()

    for line in lines:
        if line.startswith("m="):
            close()
        section.append(line)
    close()
    if not changed:
        return None
    return eol.join(out) + (eol if trailing else "")


def _pj_text(address: int, limit: int = 64) -> bytes | None:
    """The bytes of the ``pj_str_t`` at ``address`` (None if its length is not within ``limit``)."""
    pointer, length = word(address), ctypes.c_ssize_t.from_address(address + _PTR).value
    if not pointer or not 0 < length <= limit:
        return None
    return ctypes.string_at(pointer, length)


class PtimeHook(ModuleHook):
    """The module that names ``ptime_ms`` in each SDP the endpoint sends (module doc)."""

    def __init__(self, ptime_ms: int) -> None:
        self.ptime_ms = ptime_ms
        self.written = 0  # SDP bodies given an a=ptime
        self._proven = False
        self._callback = TX(self._tx)  # kept: pjsip holds the pointer
        self._name = b"mod-callbridge-ptime"
        super().__init__(
            TxModule(
                name=PjStr(self._name, len(self._name)),
                id=-1,
                priority=PRIORITY,
                on_tx_request=self._callback,
                on_tx_response=self._callback,
            )
        )

    def _tx(self, tdata: int | None) -> int:
        try:
            if tdata and not self.why:
                self._handle(tdata)
        except Exception:
            _LOG.exception("SDP ptime: a message could not be read (sent as it was)")
        return 0  # PJ_SUCCESS: the message goes on, whatever happened here

    def _handle(self, tdata: int) -> None:
        if not self._proven:
            why = proven(tdata) or ("" if _PTR == 8 else "a 32-bit build")
            if why:
                self.why = why
                _LOG.warning("SDP ptime off: %s (answers name no a=ptime)", why)
                return
            self._proven = True
        msg = word(tdata + MSG)
        body = word(msg + _MSG_BODY) if msg else 0
        if not body or PJSUA is None:
            return
        if _pj_text(body + _BODY_TYPE) != _APPLICATION or _pj_text(body + _BODY_SUBTYPE) != _SDP:
            return
        printer = word(body + _BODY_PRINT)
        if not printer:
            return
        buffer = ctypes.create_string_buffer(_MAX_SDP)
        length = _PRINT(printer)(body, ctypes.addressof(buffer), _MAX_SDP)
        if not 0 < length < _MAX_SDP:
            return
        text = with_ptime(buffer.raw[:length].decode("utf-8", "surrogateescape"), self.ptime_ms)
        if text is None:
            return
        raw = text.encode("utf-8", "surrogateescape")
        PJSUA.pjsip_msg_body_create.restype = ctypes.c_void_p
        created = PJSUA.pjsip_msg_body_create(
            ctypes.c_void_p(word(tdata + _POOL)),
            ctypes.byref(PjStr(_APPLICATION, len(_APPLICATION))),
            ctypes.byref(PjStr(_SDP, len(_SDP))),
            ctypes.byref(PjStr(raw, len(raw))),
        )
        if not created:
            return
        ctypes.c_void_p.from_address(msg + _MSG_BODY).value = created
        PJSUA.pjsip_tx_data_invalidate_msg(ctypes.c_void_p(tdata))
        self.written += 1
