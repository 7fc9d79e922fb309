"""Pure helpers over SIP text (RFC 3261): the user part of a URI and the request line and headers of a request.

pjsua2 hands the gateway name-addr strings (``"Alice" <sip:alice@host>;tag=x``) and the raw INVITE
(``SipRxData.wholeMsg``); the app wants ``alice`` and the dialled number, and the gateway's screening wants every
``Authorization`` header (:func:`header_values`) and a check of ``Content-Length`` (:func:`body_shorter_than_declared`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# RFC 3261 §25.1: compact header forms the app might look up by their long name.
_COMPACT = {
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "v": "via",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
}

_URI_IN_BRACKETS = re.compile(r"<([^>]*)>")


def user_part(name_addr: str) -> str:
    """``"Bob" <sip:+15551234@example.com;user=phone>;tag=1`` -> ``+15551234``; ``""`` if there is none."""
    text = name_addr.strip()
    match = _URI_IN_BRACKETS.search(text)
    uri = match.group(1) if match else text
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips", "tel"):
        return ""
    if scheme.lower() == "tel":
        return rest.split(";", 1)[0]
    if "@" not in rest:
        return ""
    user = rest.split("@", 1)[0]
    return user.split(";", 1)[0]  # user parameters (RFC 3261 §19.1.1) are not part of the number


def host_part(name_addr: str) -> str:
    text = name_addr.strip()
    match = _URI_IN_BRACKETS.search(text)
    uri = match.group(1) if match else text.split(";", 1)[0]
    rest = uri.partition(":")[2]
    return rest.split("@", 1)[-1].split(";", 1)[0]


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    uri: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case long names; first occurrence wins


def parse_request_head(message: str) -> RequestHead | None:
    """Request line and headers of a SIP request (the body is ignored); None if it is not a request."""
    head = message.split("\r\n\r\n", 1)[0].split("\n\n", 1)[0]
    lines = head.replace("\r\n", "\n").split("\n")
    parts = lines[0].split() if lines else []
    if len(parts) != 3 or not parts[2].upper().startswith("SIP/"):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line[:1] in (" ", "\t") or ":" not in line:  # folded continuation lines (§7.3.1) are rare: skip them
            continue
        name, value = line.split(":", 1)
        key = name.strip().lower()
        key = _COMPACT.get(key, key)
        headers.setdefault(key, value.strip())
    return RequestHead(method=parts[0], uri=parts[1], headers=headers)


def _split(message: str) -> tuple[list[str], str]:
    """Header lines (request or status line first) and the body."""
    for separator in ("\r\n\r\n", "\n\n"):
        if separator in message:
            head, body = message.split(separator, 1)
            break
    else:
        head, body = message, ""
    return head.replace("\r\n", "\n").split("\n"), body


def header_values(message: str, name: str) -> list[str]:
    """The value of every ``name`` header line of ``message``, in order (long or compact name, any case)."""
    wanted = name.strip().lower()
    lines, _body = _split(message)
    values: list[str] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        key = key.strip().lower()
        if _COMPACT.get(key, key) == wanted:
            values.append(value.strip())
    return values


def body_shorter_than_declared(message: str) -> bool:
    """True if ``Content-Length`` promises more body bytes than the message holds.

    RFC 3261 §18.3: over UDP, a request whose datagram ends before the declared body is an error and SHOULD get
    ``400 Bad Request``. (A stream transport frames messages by Content-Length, so there it never happens.) The
    body is counted in bytes: SWIG hands undecodable bytes over as surrogate escapes, which encode back 1:1.
    """
    declared = header_values(message, "content-length")
    if not declared:
        return False
    try:
        length = int(declared[0])
    except ValueError:
        return False  # pjsip drops such a message before any callback; nothing to add here
    _lines, body = _split(message)
    return length > len(body.encode("utf-8", "surrogateescape"))
