"""Every SIP request, before pjsip's transaction and dialog layers see it: a pjsip module of the bridge's own.

pjsua2 tells the application of a BYE or a re-INVITE only after pjsip has acted on it (the call is already ended,
the media already moved), and nothing in its API lets the application refuse one. pjsip itself lets any module see
each received request first, in priority order (``pjsip_endpt_register_module``, ``pjsip_module.on_rx_request``):
a module that answers a request and returns true ends its processing there. :class:`RxHook` registers such a
module through ctypes, in the wheel's own library (as :mod:`bridge.sip.cport` reaches pjmedia), just below the
transaction layer, and hands each request's text and source to a Python function whose verdict it carries out:
pass it on, drop it, or answer it statelessly (``pjsip_endpt_respond_stateless``) with a code, a reason and extra
headers (a digest challenge's ``WWW-Authenticate``: an INVITE challenged here never becomes a pjsua call).

The module needs three fields of ``pjsip_rx_data``: the message (``msg_info.msg_buf``, ``msg_info.len``), the
source (``pkt_info.src_name``, ``pkt_info.src_port``) and the transport it came over (``tp_info.transport``, whose
``obj_name`` starts with its kind). No pjproject header is used: their offsets are found on the
first request and proven there (:func:`_locate`): ``tp_info.op_key.rdata`` points back at the buffer, the message
pointer at the packet's first byte, and the source name is an IP address. A layout that does not prove out leaves
every request to pjsip and says why (:attr:`RxHook.why`).

Only the event loop thread (pjsua's only thread: ``threadCnt=0``, ``mainThreadOnly``) runs the module's callback.

One more duty: pjsua builds the Contact of its answers from the caller's Contact (``pjsua_acc_create_uas_contact``:
its ``transport`` parameter, absent meaning UDP, RFC 3261 §19.1.4), not from the transport the INVITE came over. A
caller that calls over TCP and leaves the parameter out (SIPp's ``-t t1``) would get a UDP Contact, and pjsua would
send its in-dialog requests (the BYE) over UDP. So a new INVITE that came over TCP with a Contact that names no
transport gets ``transport=tcp`` in its parsed Contact URI before pjsua sees it (:func:`_contact_over_tcp`): the
answer's Contact says ``;transport=TCP`` and the call's requests go back over TCP. The parsed URI is found by the
offsets of pjsip's structures on 64-bit builds (below) and proven on each request: its host and port must be the
ones the Contact's text names, else nothing is touched.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bridge.sip.cport import PJSUA, PjStr
from bridge.sip.pjmodule import ModuleHook, word
from bridge.sip.sipmsg import Transport, header_values

_LOG = logging.getLogger("bridge.sip")
PRIORITY = 15  # PJSIP_MOD_PRIORITY_TSX_LAYER (16) - 1: before transactions and dialogs, after the transport
_PTR = ctypes.sizeof(ctypes.c_void_p)
_OP_KEY_RDATA = 3 * _PTR + 34 * _PTR  # tp_info: pool, transport, tp_data, op_key {internal__[32], 2 pointers}, rdata
_PACKET = _OP_KEY_RDATA + _PTR + 16  # then pkt_info: timestamp (pj_time_val), packet[PJSIP_MAX_PKT_LEN]
_SCAN_LIMIT = 1 << 17  # how far past the packet the message pointer is looked for (PJSIP_MAX_PKT_LEN is 4000)
_INET6_ADDRSTRLEN = 46

# (0: pass on, -1: drop, else the status code of the answer; the reason phrase; headers the answer carries)
Verdict = tuple[int, str, Mapping[str, str]]
OnRequest = Callable[[str, str, Transport | None], Verdict]  # (the message text, "ip:port" it came from, over what)
_TRANSPORT = _PTR  # tp_info.transport: a pjsip_transport, whose first field is its name (obj_name: "udp0x...",
# "tcps0x..." / "tcpc0x...", "tlss0x..." / "tlsc0x...")

_RX = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


class _PjsipHdr(ctypes.Structure):
    """The members every ``pjsip_hdr`` starts with (``PJSIP_DECL_HDR_MEMBER``): a list head of headers uses them."""

    _fields_ = (
        ("prev", ctypes.c_void_p),
        ("next", ctypes.c_void_p),
        ("type", ctypes.c_int),
        ("name", PjStr),
        ("sname", PjStr),
        ("vptr", ctypes.c_void_p),
    )


_TCP = b"tcp"  # the transport parameter written into a TCP caller's Contact URI (lives as long as the process)
_CONTACT = b"Contact"
_CONTACT_URI = 72  # pjsip_contact_hdr: the header members (64 bytes), int star (padded to 8), pjsip_uri *uri
_NAME_ADDR_URI = 24  # pjsip_name_addr: vptr, pj_str_t display, pjsip_uri *uri
_URI_HOST, _URI_PORT, _URI_TRANSPORT = 40, 56, 96  # pjsip_sip_uri: vptr, user, passwd, host, int port (padded),
# user_param, method_param, transport_param (each pj_str_t: a pointer and a length)
_CONTACT_HOST = re.compile(r"^[^<]*<?\s*sips?:(?:[^@;>]*@)?(\[[^\]]+\]|[^:;>?\s]+)(?::(\d+))?", re.IGNORECASE)


def _pointers(*names: str) -> tuple[tuple[str, type[ctypes.c_void_p]], ...]:
    """Struct fields that are plain pointers, in order."""
    return tuple((name, ctypes.c_void_p) for name in names)


class _PjsipModule(ctypes.Structure):
    """``pjsip_module`` (sip_module.h): list links, name, id, priority, then nine callbacks."""

    _fields_ = (
        *_pointers("prev", "next"),
        ("name", PjStr),
        ("id", ctypes.c_int),
        ("priority", ctypes.c_int),
        *_pointers("load", "start", "stop", "unload"),
        ("on_rx_request", _RX),  # the one callback the bridge fills in; the others stay NULL
        *_pointers("on_rx_response", "on_tx_request", "on_tx_response", "on_tsx_state"),
    )


@dataclass(frozen=True, slots=True)
class _Layout:
    message: int  # offset of msg_info.msg_buf (msg_info.len follows it)
    src_name: int
    src_port: int


def _locate(rdata: int) -> _Layout | str:
    """The offsets of the message and its source in this build's ``pjsip_rx_data``, or why they were not found."""
    if word(rdata + _OP_KEY_RDATA) != rdata:
        return "pjsip_rx_data.tp_info is not laid out as expected"
    packet = rdata + _PACKET
    wanted = struct.pack("<Q" if _PTR == 8 else "<I", packet)
    offset = _PACKET
    while offset < _PACKET + _SCAN_LIMIT:
        chunk = ctypes.string_at(rdata + offset, 64)
        found = next((i for i in range(0, 64, _PTR) if chunk[i : i + _PTR] == wanted), None)
        if found is not None:
            return _source_fields(rdata, offset + found)
        offset += 64
    return "pjsip_rx_data.msg_info.msg_buf not found"


def _source_fields(rdata: int, message: int) -> _Layout | str:
    """pkt_info ends ``int src_addr_len; char src_name[46]; int src_port;``, padded to pointer alignment before
    msg_info: src_port is 4 or 8 bytes before the message pointer, src_name 48 bytes before src_port."""
    for port_at in (message - 4, message - 8):
        name_at = port_at - _INET6_ADDRSTRLEN - 2
        name = ctypes.string_at(rdata + name_at, _INET6_ADDRSTRLEN).split(b"\0", 1)[0]
        port = ctypes.c_int.from_address(rdata + port_at).value
        if _is_ip(name) and 0 < port < 65536:
            return _Layout(message, name_at, port_at)
    return "pjsip_rx_data.pkt_info.src_name not found"


def _is_ip(name: bytes) -> bool:
    try:
        ipaddress.ip_address(name.decode("ascii"))
    except ValueError:
        return False
    return True


def transport_name(transport: int) -> Transport | None:
    """The transport a ``pjsip_transport``'s ``obj_name`` names ("udp0x...", "tlss0x..."); None if none."""
    if not transport:
        return None
    kind = ctypes.string_at(transport, 3).decode("ascii", "replace").lower()
    return Transport(kind) if kind in tuple(Transport) else None


class RxHook(ModuleHook):
    """The bridge's pjsip module: ``on_request(text, source, transport)`` sees every request first (module doc)."""

    def __init__(self, on_request: OnRequest) -> None:
        self._on_request = on_request
        self._layout: _Layout | None = None
        self._callback = _RX(self._rx)  # kept: pjsip holds the pointer
        self._name = b"mod-callbridge-caller-guard"
        super().__init__(
            _PjsipModule(
                name=PjStr(self._name, len(self._name)), id=-1, priority=PRIORITY, on_rx_request=self._callback
            )
        )

    def _rx(self, rdata: int | None) -> int:
        try:
            return self._handle(rdata) if rdata and not self.why else 0
        except Exception:
            _LOG.exception("caller guard: a request could not be checked (passed on)")
            return 0

    def _handle(self, rdata: int) -> int:
        layout = self._layout
        if layout is None:
            found = _locate(rdata)
            if isinstance(found, str):
                self.why = found
                _LOG.warning("caller guard off: %s (in-dialog requests are not checked by source)", found)
                return 0
            layout = self._layout = found
        buffer = word(rdata + layout.message)
        length = ctypes.c_int.from_address(rdata + layout.message + _PTR).value
        if not buffer or length <= 0:
            return 0
        text = ctypes.string_at(buffer, length).decode("utf-8", "surrogateescape")
        name = (
            ctypes.string_at(rdata + layout.src_name, _INET6_ADDRSTRLEN).split(b"\0", 1)[0].decode("ascii", "replace")
        )
        port = ctypes.c_int.from_address(rdata + layout.src_port).value
        source = f"[{name}]:{port}" if ":" in name else f"{name}:{port}"
        transport = transport_name(word(rdata + _TRANSPORT))
        status, reason, headers = self._on_request(text, source, transport)
        if status == 0:
            if transport is Transport.TCP and text.startswith("INVITE "):
                _contact_over_tcp(word(rdata + layout.message + 2 * _PTR), text)
            return 0
        if status > 0 and PJSUA is not None and self._endpt is not None:
            phrase = reason.encode("utf-8", "replace")
            text_ = PjStr(phrase, len(phrase))
            head, kept = _header_list(word(rdata), headers)  # tp_info.pool, the rdata's first field
            PJSUA.pjsip_endpt_respond_stateless(
                ctypes.c_void_p(self._endpt),
                ctypes.c_void_p(rdata),
                status,
                ctypes.byref(text_),
                ctypes.byref(head) if headers else None,
                None,
            )
            del kept  # pjsip has copied the headers into the response
        return 1


def _header_list(pool: int, headers: Mapping[str, str]) -> tuple[_PjsipHdr, list[bytes]]:
    """A pjsip header list (a list head, ``pj_list``) of generic string headers made in ``pool``, and the bytes
    they point into (pjsip clones them when it builds the response)."""
    head = _PjsipHdr()
    kept: list[bytes] = []
    head.prev = head.next = ctypes.addressof(head)
    if PJSUA is None or not pool:
        return head, kept
    PJSUA.pjsip_generic_string_hdr_create.restype = ctypes.c_void_p
    for name, value in headers.items():
        raw_name, raw_value = name.encode("ascii"), value.encode("utf-8", "replace")
        kept += [raw_name, raw_value]
        hdr = PJSUA.pjsip_generic_string_hdr_create(
            ctypes.c_void_p(pool),
            ctypes.byref(PjStr(raw_name, len(raw_name))),
            ctypes.byref(PjStr(raw_value, len(raw_value))),
        )
        if hdr:
            PJSUA.pj_list_insert_before(ctypes.byref(head), ctypes.c_void_p(hdr))
    return head, kept


def _contact_over_tcp(msg: int, text: str) -> bool:
    """Write ``transport=tcp`` into the parsed Contact URI of an INVITE that came over TCP and whose Contact names no
    transport (module doc); True if it was written. ``msg``: ``rdata->msg_info.msg`` (after ``msg_buf`` and ``len``)."""
    if _PTR != 8 or not msg or PJSUA is None:
        return False
    values = header_values(text, "contact")
    found = _CONTACT_HOST.match(values[0]) if len(values) == 1 else None
    if found is None or "transport=" in values[0].lower():
        return False
    host, port = found.group(1).strip("[]"), int(found.group(2) or 0)
    PJSUA.pjsip_msg_find_hdr_by_name.restype = ctypes.c_void_p
    name = PjStr(_CONTACT, len(_CONTACT))
    header = PJSUA.pjsip_msg_find_hdr_by_name(ctypes.c_void_p(msg), ctypes.byref(name), None)
    uri = word(header + _CONTACT_URI) if header else 0
    for candidate in (word(uri + _NAME_ADDR_URI) if uri else 0, uri):  # inside <...>, or a bare URI
        if candidate and _uri_is(candidate, host, port):
            ctypes.memmove(candidate + _URI_TRANSPORT, ctypes.addressof(_TCP_PARAM), ctypes.sizeof(PjStr))
            return True
    return False


def _uri_is(uri: int, host: str, port: int) -> bool:
    """Is the ``pjsip_sip_uri`` at ``uri`` the one for ``host``:``port``, with no transport parameter yet?"""
    pointer, length = word(uri + _URI_HOST), ctypes.c_ssize_t.from_address(uri + _URI_HOST + _PTR).value
    if not pointer or not 0 < length <= 255 or ctypes.c_ssize_t.from_address(uri + _URI_TRANSPORT + _PTR).value:
        return False
    named = ctypes.string_at(pointer, length).decode("ascii", "replace").strip("[]")
    return named.lower() == host.lower() and ctypes.c_int.from_address(uri + _URI_PORT).value == port


_TCP_PARAM = PjStr(_TCP, len(_TCP))
