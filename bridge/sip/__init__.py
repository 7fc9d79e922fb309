"""The telephone side: the only package that imports pjsua2.

::

    endpoint.py   SipConfig, SipEndpoint: one pjsua2 Endpoint per process; event pump; port pool; clean shutdown
    gateway.py    SipGateway, IncomingCall: incoming calls as plain objects and bridge.events
    cport.c       the native media port: a pjmedia_port in C (rings, eventfd); the clock thread never takes the GIL
    cport.py      builds cport.c on first use, proves its layout against the wheel, and serves it from the loop
    media.py      BridgePort: the Python fallback port, a pjsua2 AudioMediaPort on the ctypes fast path
    crossing.py   the one place frames cross between pjmedia's clock thread and the event loop
    softphone.py  a pjsua2 caller / answerer for tests, QA and the demo (``callbridge call``, ``phone listen``)
    wav.py        8 kHz mono PCM16 / G.711 WAV read and write
    analysis.py   tone generator and audio stats (level in dBFS, dominant frequency)
    sipmsg.py     pure SIP text helpers (user part of a URI, request line and headers, Content-Length check,
                  a confirmed call's Dialog and the BYE that ends it)
    orphans.py    BYE for the calls of a dead worker, from the dialogs kept in Redis (a plain socket, no pjsua2)
    access.py     pure access checks: source allowlists (CIDR) and digest authentication (RFC 2617/7616)

Names are exported lazily so that ``bridge.audio.wav``, ``bridge.sip.sipmsg`` or ``bridge.sip.access`` can be used
without loading pjsua2.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.sip.endpoint import CallGone, RejectedCall, SipConfig, SipEndpoint, SipError
    from bridge.sip.gateway import IncomingCall, SipGateway

_EXPORTS = {
    "CallGone": "bridge.sip.endpoint",
    "RejectedCall": "bridge.sip.endpoint",
    "SipConfig": "bridge.sip.endpoint",
    "SipEndpoint": "bridge.sip.endpoint",
    "SipError": "bridge.sip.endpoint",
    "IncomingCall": "bridge.sip.gateway",
    "SipGateway": "bridge.sip.gateway",
}

__all__ = ["CallGone", "IncomingCall", "RejectedCall", "SipConfig", "SipEndpoint", "SipError", "SipGateway"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bridge.sip' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
