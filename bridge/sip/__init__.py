"""The telephone side: the only package that imports pjsua2.

::

    sipconfig.py  SipConfig and its closed sets (Transport, SrtpMode, MediaPortKind), checked when built
    endpoint.py   SipEndpoint: one pjsua2 Endpoint per process; event pump; port pool; clean shutdown
    service.py    SipGateway: answers incoming calls (the screening and refusals before the app, one task per call,
                  the media watch, close)
    gateway.py    IncomingCall: one incoming call as the app sees it (SIP actions, media, bridge.events)
    legs.py       LegCall: the one pjsua2 Call of every call (callbacks forwarded to its leg, REFER declined);
                  call_op, first_audio
    outbound.py   HumanCall: a warm transfer's leg to the human, placed from the caller's endpoint
    conference.py Conference: one caller's hold, routing and joining with its transfer legs; their media sockets
    cport.py      serves the native media port (``bridge/native/cport.c``) from the loop, its layout proven
                  against the wheel
    media.py      BridgePort: the Python fallback port, a pjsua2 AudioMediaPort on the ctypes fast path
    crossing.py   the one place frames cross between pjmedia's clock thread and the event loop
    phone.py      Softphone: a pjsua2 user agent that places and takes test calls (its command line:
                  ``bridge.devkit.softphone``)
    loadcall.py   LoadCaller, LoopbackCallee: load in C media only for ``callbridge bench calls`` (its callers,
                  the ceiling's callee)
    sipmsg.py     pure SIP text helpers (user part of a URI, request line and headers, Content-Length check,
                  a confirmed call's Dialog and the BYE that ends it)
    identity.py   pure: who called (From, or a trusted trunk's P-Asserted-Identity / Remote-Party-ID; Privacy: id)
                  and the original called number (Diversion, History-Info), from the INVITE's text
    orphans.py    BYE for the calls of a dead worker, from the dialogs kept in Redis (a plain socket, no pjsua2)
    access.py     pure access checks: source allowlists (CIDR) and digest authentication (RFC 2617/7616)
    admission.py  Admission: the screening of a new INVITE (who may call, its session interval, which call slot it
                  may take: per source, and the unlisted sources' share, so that listed trunks find room), before
                  pjsua makes it a call
    reason.py     pure: the Reason header (RFC 3326) of the caller's BYE or CANCEL, and what it says of the end (a
                  network failure, a ring completed elsewhere)
    answers.py    AnswerBook: one final answer per INVITE transaction, however often it arrives (RFC 3261 §17.2)
    rxhook.py     RxHook: a pjsip module that sees every received request first (and may answer it statelessly)
    txhook.py     TxHook: a pjsip module that sees every response sent, printed
    oversize.py   pure: a message over pjsip's 4,000-byte buffer refused 513, a cut one 400, and a stream's skip
    sizeguard.py  SizeGuard: pjsip's transport callbacks that let oversize answer where pjsip would lose a message
    pjmodule.py   ModuleHook: a pjsip module of the bridge's own added to (and taken out of) the endpoint
    transports.py what pjsua2 is told about transports and accounts (UDP, TCP, TLS, media ports, NAT, timers, SRTP)
    tlsfiles.py   the start-up check of a node's TLS files (certificate, key, CA), before pjsip reads them
    exposure.py   the start-up check of whom a node's workers answer: closed by default
    bounds.py     pure: what ends a call when the caller has gone quiet or away (no RTP, no BYE)
    rtpguard.py   media from the caller only: a kernel source filter on each call's RTP and RTCP sockets
    callermedia.py one call's media guard over its life, and the check that the caller is heard at all
    dialogguard.py pure: only the caller steers its call (requests inside a dialog from anyone else are refused)
    sdpptime.py   a pjsip module that names the 20 ms we send (a=ptime:20) in every SDP the endpoint sends
    infodtmf.py   SIP INFO with ``application/dtmf`` (the body is the digit), as some PBXs and SBCs send it

Names are exported lazily so that ``bridge.sip.sipmsg`` or ``bridge.sip.access`` can be used without loading
pjsua2.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.sip.endpoint import CallGone, RejectedCall, SipEndpoint, SipError
    from bridge.sip.gateway import IncomingCall
    from bridge.sip.service import SipGateway
    from bridge.sip.sipconfig import SipConfig

_EXPORTS = {
    "CallGone": "bridge.sip.endpoint",
    "RejectedCall": "bridge.sip.endpoint",
    "SipConfig": "bridge.sip.sipconfig",
    "SipEndpoint": "bridge.sip.endpoint",
    "SipError": "bridge.sip.endpoint",
    "IncomingCall": "bridge.sip.gateway",
    "SipGateway": "bridge.sip.service",
}

__all__ = ["CallGone", "IncomingCall", "RejectedCall", "SipConfig", "SipEndpoint", "SipError", "SipGateway"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bridge.sip' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
