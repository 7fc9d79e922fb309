"""Messages too large for pjsip's buffer, answered ``513`` where pjsip would lose them (:mod:`bridge.sip.oversize`):
pjsip's transport manager callbacks, registered through ctypes in the wheel's own library.

* ``pjsip_tpmgr_set_recv_data_cb``: pjsip hands each stream transport's (TCP, TLS) buffer to the callback before it
  looks for a message in it (``pjsip_tpmgr_receive_packet``), and skips the bytes the callback takes off its
  length (``pjsip_tp_rx_data.len``). :class:`~bridge.sip.oversize.StreamGuard` decides; its ``513`` goes back on
  the same connection (``pjsip_endpt_send_raw`` with a selector naming the transport).
* ``pjsip_tpmgr_set_drop_data_cb``: pjsip reports what it dropped: the line ends it skips between messages
  (``PJ_EIGNORED``), which belong to a message being skipped, and the datagrams it could not parse
  (``PJSIP_EINVALIDMSG``, ``PJSIP_EMISSINGHDR``). A UDP datagram of :data:`~bridge.sip.oversize.MAX_PACKET` bytes
  that did not parse was cut: its ``513`` goes to the datagram's source, read from the ``pjsip_rx_data`` the data
  lies in (the data is ``pkt_info.packet``; the layout is proven as :mod:`bridge.sip.rxhook` proves it).

The structures read (pjproject 2.15, 64-bit): ``pjsip_tp_rx_data`` {transport, data, len}; ``pjsip_tp_dropped_data``
{transport, data, len, status}; ``pjsip_transport``: ``obj_name[32]``, then 4 pointers and 3 ints before ``key``
{long type; pj_sockaddr rem_addr} at 80, ``addr_len`` at 144; ``pjsip_rx_data.pkt_info`` after the packet buffer:
``zero`` (4 bytes, padded to 8), ``len``, ``src_addr`` (28), ``src_addr_len``. Each is checked where it is read (a
transport type pjsip knows, an address family and length that agree), and a read that does not check out sends
nothing. Only the event loop thread (pjsua's only thread) runs the callbacks.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
from collections.abc import Callable

from bridge.sip import oversize
from bridge.sip.cport import PJSUA
from bridge.sip.pjmodule import PTR, word
from bridge.sip.rxhook import _OP_KEY_RDATA, _PACKET, transport_name

_LOG = logging.getLogger("bridge.sip")
PJ_EIGNORED = 70020
PJSIP_EINVALIDMSG = 171020
PJSIP_EMISSINGHDR = 171050
_KEY_TYPE, _KEY_ADDR, _ADDR_LEN = 80, 88, 144  # pjsip_transport: key.type, key.rem_addr, addr_len
_TRANSPORT_TYPES = {1, 2, 3, 129, 130, 131}  # UDP, TCP, TLS, each also + PJSIP_TRANSPORT_IPV6 (128)
_AF = {2: 16, 10: 28}  # pj_sockaddr family (Linux AF_INET, AF_INET6) -> its length
_PKT_LEN = _PACKET + oversize.MAX_PACKET + 8  # pkt_info.len: after packet[] and the 4-byte zero, 8-aligned
_SRC_ADDR = _PKT_LEN + 8
_SRC_ADDR_LEN = _SRC_ADDR + 28


class _RxData(ctypes.Structure):
    _fields_ = (("tp", ctypes.c_void_p), ("data", ctypes.c_void_p), ("len", ctypes.c_size_t))


class _Dropped(ctypes.Structure):
    _fields_ = (
        ("tp", ctypes.c_void_p),
        ("data", ctypes.c_void_p),
        ("len", ctypes.c_size_t),
        ("status", ctypes.c_int),
    )


class _Selector(ctypes.Structure):
    """``pjsip_tpselector``: PJSIP_TPSELECTOR_TRANSPORT (1) with the transport."""

    _fields_ = (("type", ctypes.c_int), ("no_reuse", ctypes.c_int), ("transport", ctypes.c_void_p))


_ON_RX = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_RxData))
_ON_DROP = ctypes.CFUNCTYPE(None, ctypes.POINTER(_Dropped))
OnRefused = Callable[[oversize.Refused, str, str], None]  # (what was refused, "ip:port" it came from, "tcp"...)


class SizeGuard:
    """Registers the two callbacks with the started endpoint's transport manager (module doc); ``on_refused`` hears
    of each message refused (``why`` says why the guard is off, if it is)."""

    def __init__(self, on_refused: OnRefused | None = None) -> None:
        self.guard = oversize.StreamGuard()
        self.on_refused = on_refused
        self.why = ""
        self._endpt = 0
        self._tpmgr = 0
        self._rx = _ON_RX(self._on_rx)  # kept: pjsip holds the pointers
        self._drop = _ON_DROP(self._on_drop)

    def register(self) -> bool:
        if PJSUA is None or PTR != 8:
            self.why = "the pjsua2 library cannot be loaded with ctypes, or is no 64-bit build"
            return False
        PJSUA.pjsua_get_pjsip_endpt.restype = ctypes.c_void_p
        PJSUA.pjsip_endpt_get_tpmgr.restype = ctypes.c_void_p
        endpt = PJSUA.pjsua_get_pjsip_endpt()
        tpmgr = PJSUA.pjsip_endpt_get_tpmgr(ctypes.c_void_p(endpt)) if endpt else None
        if not tpmgr:
            self.why = "no pjsip transport manager"
            return False
        PJSUA.pjsip_tpmgr_set_recv_data_cb(ctypes.c_void_p(tpmgr), self._rx)
        PJSUA.pjsip_tpmgr_set_drop_data_cb(ctypes.c_void_p(tpmgr), self._drop)
        self._endpt, self._tpmgr = endpt, tpmgr
        return True

    def unregister(self) -> None:
        tpmgr, self._tpmgr = self._tpmgr, 0
        if tpmgr and PJSUA is not None:
            PJSUA.pjsip_tpmgr_set_recv_data_cb(ctypes.c_void_p(tpmgr), None)
            PJSUA.pjsip_tpmgr_set_drop_data_cb(ctypes.c_void_p(tpmgr), None)

    def _on_rx(self, rd: ctypes._Pointer[_RxData]) -> int:
        try:
            data = rd.contents
            if not data.tp or not data.data or not data.len:
                return 0
            taken, refused = self.guard.received(_connection(data.tp), ctypes.string_at(data.data, data.len))
            if taken:
                data.len -= min(taken, data.len)
            if refused is not None:
                self._refused(data.tp, refused)
        except Exception:
            _LOG.exception("size guard: a received buffer could not be checked (left to pjsip)")
        return 0

    def _on_drop(self, dd: ctypes._Pointer[_Dropped]) -> None:
        try:
            dropped = dd.contents
            if not dropped.tp or not dropped.data or not dropped.len:
                return
            if dropped.status == PJ_EIGNORED:
                refused = self.guard.dropped(_connection(dropped.tp), ctypes.string_at(dropped.data, dropped.len))
                if refused is not None:
                    self._refused(dropped.tp, refused)
            elif dropped.status in (PJSIP_EINVALIDMSG, PJSIP_EMISSINGHDR) and dropped.len >= oversize.MAX_PACKET:
                self._cut_datagram(dropped.tp, dropped.data, dropped.len)
        except Exception:
            _LOG.exception("size guard: dropped data could not be checked")

    def _refused(self, transport: int, refused: oversize.Refused) -> None:
        """A stream message refused: its 513 back on its connection, and the owner told."""
        source = _sockaddr_text(transport + _KEY_ADDR)
        kind = transport_name(transport)
        if refused.answer is not None:
            self._send(transport, refused.answer, transport + _KEY_ADDR)
        if self.on_refused is not None:
            self.on_refused(refused, source, kind.value if kind else "")

    def _cut_datagram(self, transport: int, data: int, length: int) -> None:
        """A UDP datagram cut at pjsip's buffer that did not parse: 513 to its source, if its rdata proves out."""
        rdata = data - _PACKET
        if transport_name(transport) is None or word(rdata + _OP_KEY_RDATA) != rdata:
            return
        if ctypes.c_ssize_t.from_address(rdata + _PKT_LEN).value != length:
            return
        addr = rdata + _SRC_ADDR
        if _AF.get(ctypes.c_uint16.from_address(addr).value) != ctypes.c_int.from_address(rdata + _SRC_ADDR_LEN).value:
            return
        head = oversize.read_head(ctypes.string_at(data, length))
        refused = head.refused(length)
        if refused.answer is not None:
            self._send(transport, refused.answer, addr)
        if self.on_refused is not None:
            self.on_refused(refused, _sockaddr_text(addr), "udp")

    def _send(self, transport: int, answer: bytes, addr: int) -> None:
        kind = ctypes.c_long.from_address(transport + _KEY_TYPE).value
        length = _AF.get(ctypes.c_uint16.from_address(addr).value)
        if PJSUA is None or not self._endpt or kind not in _TRANSPORT_TYPES or length is None:
            _LOG.warning("size guard: the 513 could not be sent (the transport's layout is not as expected)")
            return
        selector = _Selector(1, 0, transport)
        status = PJSUA.pjsip_endpt_send_raw(
            ctypes.c_void_p(self._endpt),
            kind,
            ctypes.byref(selector),
            answer,
            ctypes.c_size_t(len(answer)),
            ctypes.c_void_p(addr),
            length,
            None,
            None,
        )
        if status not in (0, 70002):  # PJ_SUCCESS, PJ_EPENDING
            _LOG.warning("size guard: the 513 could not be sent (pjsip status %d)", status)


def _connection(transport: int) -> tuple[int, bytes]:
    """A stream connection's key: its transport's address and its far end (``key.rem_addr``), so that a new
    connection that pjsip allocates where a closed one was is not taken for it."""
    return transport, ctypes.string_at(transport + _KEY_ADDR, 28)


def _sockaddr_text(addr: int) -> str:
    """ "ip:port" (or "[ip]:port") of the ``pj_sockaddr`` at ``addr``; "" if it is no IPv4 or IPv6 address."""
    family = ctypes.c_uint16.from_address(addr).value
    port = int.from_bytes(ctypes.string_at(addr + 2, 2), "big")
    if family == 2:
        return f"{ipaddress.IPv4Address(ctypes.string_at(addr + 4, 4))}:{port}"
    if family == 10:
        return f"[{ipaddress.IPv6Address(ctypes.string_at(addr + 8, 16))}]:{port}"
    return ""
