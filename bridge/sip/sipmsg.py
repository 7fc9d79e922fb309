"""Pure helpers over SIP text (RFC 3261): the user part of a URI, the request line and headers of a request, and
the dialog of a confirmed call with the BYE that ends it from outside the process that held it (:class:`Dialog`).

pjsua2 hands the gateway name-addr strings (``"Alice" <sip:alice@host>;tag=x``) and the raw INVITE
(``SipRxData.wholeMsg``); the app wants ``alice`` and the dialled number, and the gateway's screening wants every
``Authorization`` header (:func:`header_values`) and a check of ``Content-Length`` (:func:`body_shorter_than_declared`).
Whatever a caller wrote is data: :func:`clean_text` makes it safe to store and log (never a name of anything).
"""

from __future__ import annotations

import enum
import re
from dataclasses import asdict, dataclass, field

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
    "x": "session-expires",  # RFC 4028 §4
}

_URI_IN_BRACKETS = re.compile(r"<([^>]*)>")
# RFC 3261 §7: the header block ends at the first empty line. Lines end in CRLF, and a bare LF is tolerated (§7.5,
# as pjsip's and Kamailio's parsers do), so an empty line is CRLF or LF right after a line's own CRLF or LF.
_HEAD_END = re.compile(r"\r?\n\r?\n")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

SIP_CALL_ID_CHARS = 256  # a caller's Call-ID as the bridge keeps it (pjsua itself keeps 128 characters)
SIP_NAME_CHARS = 128  # a caller's user part (From, To, request-URI) as the bridge keeps it


def clean_text(value: str, limit: int = SIP_NAME_CHARS) -> str:
    """A caller-supplied SIP value made safe to store and log: bytes that are not UTF-8 (pjsua2's strings carry
    them as lone surrogates) become U+FFFD, control characters ``\\xNN``, and the text is cut to ``limit``
    characters with a ``...`` mark. Never raises: what it returns always encodes as UTF-8."""
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogatepass")
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", raw.decode("utf-8", "replace"))
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


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
    lines, _body = split_message(message)
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


def split_message(message: str) -> tuple[list[str], str]:
    """Header lines (request or status line first) and the body, split where SIP parsers split them: at the first
    empty line, whether lines end in CRLF or a bare LF (:data:`_HEAD_END`). Lines after it are body, whatever they
    look like: the front (Kamailio) and pjsip read them so, and so must every parser of the bridge."""
    match = _HEAD_END.search(message)
    head, body = (message[: match.start()], message[match.end() :]) if match else (message, "")
    return [line.removesuffix("\r") for line in head.split("\n")], body


def message_body(message: str) -> str:
    """The body of a SIP message (its SDP), after the header block as :func:`split_message` ends it."""
    return split_message(message)[1]


def header_values(message: str, name: str) -> list[str]:
    """The value of every ``name`` header line of ``message``, in order (long or compact name, any case)."""
    wanted = name.strip().lower()
    lines, _body = split_message(message)
    values: list[str] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        key = key.strip().lower()
        if _COMPACT.get(key, key) == wanted:
            values.append(value.strip())
    return values


def response_status(data: bytes) -> int | None:
    """The status code on a SIP response's status line; None for a request or anything else (pure)."""
    parts = data.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) < 2 or parts[0] != b"SIP/2.0" or not parts[1].isdigit():
        return None
    return int(parts[1])


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
    _lines, body = split_message(message)
    return length > len(body.encode("utf-8", "surrogateescape"))


# -- ending a dialog from outside the process that held it --------------------------------------------------------


class Transport(enum.StrEnum):
    """A SIP transport (RFC 3261 §18; TLS: RFC 5630), as a Via names it (lower-cased)."""

    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"


def plain_transport(name: str) -> Transport:
    """The transport a BYE from a plain socket takes for a dialog that ran over ``name``: TCP for TCP, else UDP."""
    return Transport.TCP if name.lower() == Transport.TCP else Transport.UDP


@dataclass(frozen=True)
class Dialog:
    """What it takes to send an in-dialog BYE for a call whose pjsua2 state is gone (its worker was killed).

    Taken from the caller's ACK (``From``/``To`` with both tags, RFC 3261 §12.1.1) and INVITE (``Contact``,
    ``Record-Route``). ``local``/``remote`` are header values from our side: ``local`` becomes the BYE's From,
    ``remote`` its To. ``peer`` is "ip:port" the INVITE came from; ``transport`` UDP or TCP.
    """

    call_id: str
    local: str
    remote: str
    target: str  # the caller's Contact URI (the remote target)
    routes: tuple[str, ...] = ()  # the INVITE's Record-Route values, in order (the UAS route set)
    peer: str = ""
    transport: Transport = Transport.UDP

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "routes": list(self.routes)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Dialog:
        routes = data.get("routes") or []
        return cls(
            call_id=str(data["call_id"]),
            local=str(data["local"]),
            remote=str(data["remote"]),
            target=str(data["target"]),
            routes=tuple(str(r) for r in routes) if isinstance(routes, list) else (),
            peer=str(data.get("peer") or ""),
            transport=plain_transport(str(data.get("transport") or "")),
        )

    def destination(self) -> tuple[str, int] | None:
        """Where the BYE goes: the first route if there is a route set, else the address the INVITE came from (the
        caller's signalling is symmetric, RFC 3581), else the Contact's host and port."""
        if self.routes:
            return _host_port(_first_uri(self.routes[0]))
        if self.peer:
            host, _, port = self.peer.rpartition(":")
            if host and port.isdigit():
                return host.strip("[]"), int(port)
        return _host_port(self.target)


def _first_uri(value: str) -> str:
    match = _URI_IN_BRACKETS.search(value)
    return match.group(1) if match else value.split(",", 1)[0].strip()


def _host_port(uri: str) -> tuple[str, int] | None:
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips"):
        return None
    hostport = rest.split("@", 1)[-1].split(";", 1)[0].split("?", 1)[0]
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port = tail.lstrip(":")
    else:
        host, _, port = hostport.partition(":")
    if not host:
        return None
    return host, int(port) if port.isdigit() else (5061 if scheme.lower() == "sips" else 5060)


def dialog_from_ack(ack: str, invite: str, peer: str) -> Dialog | None:
    """The dialog of a confirmed incoming call, from the caller's ACK and INVITE texts (None if either is unusable).
    In the ACK, ``From`` is the caller (their tag) and ``To`` is us (our tag)."""
    head = parse_request_head(ack)
    if head is None or head.method != "ACK":
        return None
    call_id, theirs, ours = (header_values(ack, n) for n in ("call-id", "from", "to"))
    contact = header_values(invite, "contact")
    if not (call_id and theirs and ours and contact) or ";tag=" not in ours[0] or ";tag=" not in theirs[0]:
        return None
    vias = header_values(invite, "via")
    transport = vias[0].split()[0].rsplit("/", 1)[-1] if vias and vias[0].split() else ""
    routes = tuple(r.strip() for value in header_values(invite, "record-route") for r in value.split(","))
    return Dialog(
        call_id=call_id[0],
        local=ours[0],
        remote=theirs[0],
        target=_first_uri(contact[0]),
        routes=tuple(r for r in routes if r),
        peer=peer,
        transport=plain_transport(transport),
    )


def build_bye(dialog: Dialog, via: str, branch: str, cseq: int, user_agent: str = "") -> bytes:
    """The BYE request (RFC 3261 §12.2.1.1, §15.1.1): Request-URI the remote target, ``Route`` the route set,
    From/To/Call-ID of the dialog. ``via`` is "host:port" of the sending socket; ``cseq`` must exceed every CSeq
    we sent in the dialog (callers pass a time-based number). ``user_agent`` "" sends no User-Agent header."""
    lines = [
        f"BYE {dialog.target} SIP/2.0",
        f"Via: SIP/2.0/{dialog.transport.upper()} {via};branch={branch};rport",
        "Max-Forwards: 70",
        *(f"Route: {route}" for route in dialog.routes),
        f"From: {dialog.local}",
        f"To: {dialog.remote}",
        f"Call-ID: {dialog.call_id}",
        f"CSeq: {cseq} BYE",
        *([f"User-Agent: {user_agent}"] if user_agent else []),
        'Reason: SIP;cause=500;text="worker restarted"',
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
