"""Every SIP response the endpoint sends, as text, after pjsip has printed it: a second pjsip module of the bridge's.

pjsua answers some INVITEs on its own and statelessly (``486`` once its calls are all taken, ``488`` with no common
codec, ``400`` for a bad SDP), and a pjsua2 application learns of its own answers only through call states. What
:mod:`bridge.sip.answers` needs is simpler and complete: each final answer as it goes out. pjsip hands every
outgoing message to each module's ``on_tx_response`` (``endpt_on_tx_msg``), from the highest priority number down;
``mod-msg-print`` (priority ``PJSIP_MOD_PRIORITY_TRANSPORT_LAYER``, 8) prints the message into ``tdata->buf`` on the
way. :class:`TxHook` registers a module just below it (7, as pjsua's own message logger does), so it sees the
printed text, and passes it to a Python function. It never changes or stops a message.

Two fields of ``pjsip_tx_data`` (sip_transport.h, pjsip 2.15) are read, at offsets proven on the first response: its
``obj_name`` (after ``prev``, ``next`` and ``pool``) is ``"tdta%p"`` of the tdata's own address, which proves where
the structure starts and that it is laid out as below; the buffer (``pjsip_buffer``: ``start``, ``cur``, ``end``)
follows ``info``, ``rx_timestamp``, ``mgr``, ``op_key`` (``pj_ioqueue_op_key_t``: 34 pointers, then ``tdata``,
``token``, ``callback``), ``lock``, ``msg`` and ``saved_strict_route``, and must hold text that starts with
``SIP/2.0``. A layout that does not prove out turns the hook off and says why (:attr:`TxHook.why`).
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable

from bridge.sip.cport import PjStr
from bridge.sip.pjmodule import ModuleHook, word

_LOG = logging.getLogger("bridge.sip")
PRIORITY = 7  # PJSIP_MOD_PRIORITY_TRANSPORT_LAYER (8) - 1: after mod-msg-print has printed the message
_PTR = ctypes.sizeof(ctypes.c_void_p)
_OBJ_NAME = 3 * _PTR  # prev, next, pool
_OBJ_NAME_LEN = 32  # PJ_MAX_OBJ_NAME
# then info (a pointer), rx_timestamp (pj_time_val: two longs), mgr, op_key (34 + 3 pointers), lock, msg,
# saved_strict_route: the buffer's three pointers
_BUF = _OBJ_NAME + _OBJ_NAME_LEN + _PTR + 2 * ctypes.sizeof(ctypes.c_long) + _PTR + 37 * _PTR + 3 * _PTR
MSG = _BUF - 2 * _PTR  # pjsip_tx_data.msg: then saved_strict_route, then the buffer
_MAX_TEXT = 1 << 16  # a response longer than this is not read (PJSIP_MAX_PKT_LEN is 4000)

TX = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)  # on_tx_request / on_tx_response: tdata -> pj_status_t
OnResponse = Callable[[str], object]  # what it returns is ignored


class TxModule(ctypes.Structure):
    """``pjsip_module`` (sip_module.h) with its sending callbacks typed (a field left out is NULL: not called)."""

    _fields_ = (
        ("prev", ctypes.c_void_p),
        ("next", ctypes.c_void_p),
        ("name", PjStr),
        ("id", ctypes.c_int),
        ("priority", ctypes.c_int),
        ("load", ctypes.c_void_p),
        ("start", ctypes.c_void_p),
        ("stop", ctypes.c_void_p),
        ("unload", ctypes.c_void_p),
        ("on_rx_request", ctypes.c_void_p),
        ("on_rx_response", ctypes.c_void_p),
        ("on_tx_request", TX),
        ("on_tx_response", TX),
        ("on_tsx_state", ctypes.c_void_p),
    )


def proven(tdata: int) -> str:
    """ "" if ``tdata`` is laid out as the module doc says (its name names its address), else why not."""
    name = ctypes.string_at(tdata + _OBJ_NAME, _OBJ_NAME_LEN).split(b"\0", 1)[0]
    if name != f"tdta0x{tdata:x}".encode()[: _OBJ_NAME_LEN - 1]:
        return "pjsip_tx_data.obj_name does not name the tdata (not laid out as expected)"
    return ""


def printed(tdata: int) -> str | None:
    """The printed message of ``tdata``, or None if its buffer holds none that looks like a response."""
    start, cur, end = (word(tdata + _BUF + i * _PTR) for i in range(3))
    if not start or not start < cur <= end or cur - start > _MAX_TEXT:
        return None
    text = ctypes.string_at(start, cur - start)
    return text.decode("utf-8", "surrogateescape") if text.startswith(b"SIP/2.0 ") else None


class TxHook(ModuleHook):
    """The bridge's transmit module: ``on_response(text)`` sees every response sent (module doc)."""

    def __init__(self, on_response: OnResponse) -> None:
        self._on_response = on_response
        self._proven = False
        self._callback = TX(self._tx)  # kept: pjsip holds the pointer
        self._name = b"mod-callbridge-answers"
        super().__init__(
            TxModule(name=PjStr(self._name, len(self._name)), id=-1, priority=PRIORITY, on_tx_response=self._callback)
        )

    def _tx(self, tdata: int | None) -> int:
        try:
            if tdata and not self.why:
                self._handle(tdata)
        except Exception:
            _LOG.exception("answer record: a response could not be read (sent all the same)")
        return 0  # PJ_SUCCESS: the message goes on, whatever happened here

    def _handle(self, tdata: int) -> None:
        if not self._proven:
            why = proven(tdata)
            if why:
                self.why = why
                _LOG.warning("answer record off: %s (a late INVITE retransmission may be taken for a new call)", why)
                return
            self._proven = True
        text = printed(tdata)
        if text is not None:
            self._on_response(text)
