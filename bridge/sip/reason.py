"""What the far side says about the end of a call: the ``Reason`` header (RFC 3326) of the BYE, or of the CANCEL while
the call rings, read as data, and what the bridge makes of it. Pure: no pjsua2.

::

    Reason       = "Reason" HCOLON reason-value *(COMMA reason-value)
    reason-value = protocol *(SEMI reason-params)         ; protocol: "SIP" / "Q.850" / token
    reason-params = "cause" EQUAL 1*DIGIT / "text" EQUAL quoted-string / generic-param

A request may carry several values, in one header or in several, one per protocol (a gateway from the telephone
network often sends ``SIP`` and ``Q.850`` both). The header is read strictly and within bounds: at most
:data:`MAX_HEADER_CHARS` characters of each header and :data:`MAX_VALUES` values; a protocol is a token of at most
:data:`MAX_PROTOCOL_CHARS` characters (``SIP`` and ``Q.850`` in their own spelling, whatever the case); a cause is
1 to :data:`MAX_CAUSE_DIGITS` digits (anything else: no cause); the text is a quoted string (its escapes undone) or a
token, cleaned as every caller-written value is (:func:`~bridge.sip.sipmsg.clean_text`) and cut at
:data:`MAX_TEXT_CHARS`. A value that does not parse is left out, and a second value of a protocol already read.
Nothing of it is ever used as markup or as a header: what is stored is the parsed value, written again
(:meth:`bridge.events.PeerReason.header`).

What the bridge reads in it (:func:`peer_ending`):

===========================  =============================================================================
a network failure            Q.850 cause 38 (network out of order), 41 (temporary failure), 42 (switching
                             equipment congestion), 44 (requested circuit or channel not available), 47
                             (resource unavailable), 102 (recovery on timer expiry); SIP cause 408 (request
                             timeout), 480 (temporarily unavailable), 503 (service unavailable), 504 (server
                             time-out); or a text that says ``RTP timeout`` or ``media timeout``, whatever the
                             cause. The call ends as the network's (``ended_by`` ``network``, outcome
                             ``network_failure``), not as the caller's hang-up or abandon
completed elsewhere          a CANCEL with SIP cause 200 (RFC 3326 §2: "Call completed elsewhere", a parallel
                             ring answered by another phone) or Q.850 cause 26 (non-selected user clearing):
                             no abandon (outcome ``completed_elsewhere``)
anything else                the caller's hang-up, as without a Reason; the values are recorded all the same
===========================  =============================================================================
"""

from __future__ import annotations

import re
from typing import Final

from bridge.events import PeerEnding, PeerReason
from bridge.sip.sipmsg import clean_text, header_values, parse_request_head

MAX_HEADER_CHARS: Final = 512  # of each Reason header line read
MAX_VALUES: Final = 4  # values kept, in order
MAX_PROTOCOL_CHARS: Final = 16
MAX_CAUSE_DIGITS: Final = 5
MAX_TEXT_CHARS: Final = 128

SIP, Q850 = "SIP", "Q.850"
ENDING_REQUESTS: Final = frozenset({"BYE", "CANCEL"})
# Q.850 causes that say the network failed (ITU-T Q.850 Table 1, classes 010 and 110)
NETWORK_Q850: Final = frozenset({38, 41, 42, 44, 47, 102})
# SIP status codes that say the network failed (RFC 3261 §21)
NETWORK_SIP: Final = frozenset({408, 480, 503, 504})
# texts that say the media stopped, whatever the cause next to them (lower case, spaces as one)
NETWORK_TEXTS: Final = {"rtp timeout": "RTP timeout", "media timeout": "media timeout"}
# a CANCEL with these: the call was answered by another phone of a parallel ring (RFC 3326 §2; Q.850 cause 26)
ELSEWHERE: Final = frozenset({(SIP, 200), (Q850, 26)})

_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
_DIGITS = re.compile(r"[0-9]+")
_SPACES = re.compile(r"\s+")


def reasons(message: str) -> tuple[PeerReason, ...]:
    """The ``Reason`` values of a SIP message, in order (module doc: what is read, and what is left out)."""
    found: list[PeerReason] = []
    protocols: set[str] = set()
    for header in header_values(message, "reason"):
        for text in _split(header[:MAX_HEADER_CHARS], ","):
            value = _value(text)
            if value is None or value.protocol.upper() in protocols:
                continue
            protocols.add(value.protocol.upper())
            found.append(value)
            if len(found) == MAX_VALUES:
                return tuple(found)
    return tuple(found)


def peer_ending(message: str) -> PeerEnding | None:
    """What a BYE or CANCEL says about the end of its call; None for any other message."""
    head = parse_request_head(message)
    method = head.method.upper() if head is not None else ""
    if method not in ENDING_REQUESTS:
        return None
    values = reasons(message)
    elsewhere = method == "CANCEL" and any((v.protocol, v.cause) in ELSEWHERE for v in values)
    failure = "" if elsewhere else next((label for v in values if (label := network_failure(v))), "")
    return PeerEnding(method, values, failure, elsewhere)


def network_failure(value: PeerReason) -> str:
    """The label of a value that says the network failed (``Q.850 cause 41``, ``SIP 408``, ``RTP timeout``), else
    "" (the table in the module doc)."""
    said = _SPACES.sub(" ", value.text.strip().lower())
    for text, label in NETWORK_TEXTS.items():
        if text in said:
            return label
    if value.protocol == Q850 and value.cause in NETWORK_Q850:
        return f"{Q850} cause {value.cause}"
    if value.protocol == SIP and value.cause in NETWORK_SIP:
        return f"{SIP} {value.cause}"
    return ""


def _value(text: str) -> PeerReason | None:
    """One reason-value; None if its protocol is no token."""
    protocol, *params = _split(text, ";")
    protocol = protocol.strip()
    if not _TOKEN.fullmatch(protocol) or len(protocol) > MAX_PROTOCOL_CHARS:
        return None
    protocol = next((known for known in (SIP, Q850) if protocol.upper() == known), protocol)
    cause: int | None = None
    said = ""
    for param in params:
        name, _, raw = param.partition("=")
        name, raw = name.strip().lower(), raw.strip()
        if name == "cause" and cause is None and _DIGITS.fullmatch(raw) and len(raw) <= MAX_CAUSE_DIGITS:
            cause = int(raw)
        elif name == "text" and not said:
            said = clean_text(_unquoted(raw), MAX_TEXT_CHARS)
    return PeerReason(protocol, cause, said)


def _unquoted(raw: str) -> str:
    """A quoted string's content with its escapes undone, a token as it is; "" for anything else."""
    if _TOKEN.fullmatch(raw):
        return raw
    if len(raw) < 2 or raw[0] != '"' or raw[-1] != '"':
        return ""
    out: list[str] = []
    escaped = False
    for ch in raw[1:-1]:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            return ""  # a quote inside that nothing escapes: not one quoted string
        else:
            out.append(ch)
    return "" if escaped else "".join(out)


def _split(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` outside quoted strings (a text may hold commas and semicolons)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts
