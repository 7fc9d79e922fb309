"""A SIP message larger than a worker can take: refused at once with ``513 Message Too Large`` (RFC 3261 §21.5.11),
never silence, never a cut message taken for a call. Pure Python, no pjsua2.

pjsip reads every message into one buffer of ``PJSIP_MAX_PKT_LEN`` bytes (``pjsip_rx_data.pkt_info.packet``), a
compile-time constant: :data:`MAX_PACKET`, 4,000 in the pjsua2 build. What it does with a larger message:

* **UDP**: ``recvfrom`` cuts the datagram at 4,000 bytes and pjsip parses what is left. A cut in the header block
  leaves a request without its last headers and without its body (an INVITE then looks like a delayed offer); a cut
  in the body leaves a body shorter than its ``Content-Length``; a cut inside a header leaves a parse error, and
  pjsip drops it.
* **TCP and TLS**: the message fills the buffer before its end arrives: pjsip logs ``Rx buffer overflow
  (PJSIP_ERXOVERFLOW)``, throws the buffer away and reads the rest of the message as if it started a new one. The
  sender gets no answer at all.

So a worker takes messages of up to :data:`MAX_MESSAGE` bytes (3,999: a datagram of 4,000 bytes cannot be told from
a cut one), and answers a larger request ``513`` where pjsip would lose it:

* over UDP, a request of :data:`MAX_PACKET` bytes as received (:func:`cut_or_too_large`); one pjsip could not parse is
  answered from the raw bytes (:func:`too_large_answer`);
* over TCP and TLS, :class:`StreamGuard` looks at each connection's buffer before pjsip does: a message whose
  header block and ``Content-Length`` add up to more than :data:`MAX_MESSAGE`, or whose header block alone fills the
  buffer, is answered ``513`` on its connection and skipped to its end, so that the next message on the connection is
  read from its first byte. :mod:`bridge.sip.sizeguard` hands it pjsip's buffers.

And any request that arrived cut by someone else (:func:`cut_or_too_large`): one with no end to its header block, or
a body shorter than its ``Content-Length`` (RFC 3261 §18.3), gets ``400``, never a call.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from bridge.sip.sipmsg import body_shorter_than_declared, user_part

MAX_PACKET = 4000  # PJSIP_MAX_PKT_LEN of the pjsua2 build (tests/unit/sip/test_sip_oversize.py checks the wheel)
MAX_MESSAGE = MAX_PACKET - 1  # the largest message a worker takes, over any transport
TOO_LARGE = (513, "Message Too Large")
CUT_SHORT = (400, "Bad Request (message cut short: no end of its header block)")
BODY_SHORT = (400, "Bad Request (Content-Length larger than the body)")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_ANSWERED = ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")  # what a response copies (RFC 3261 §8.2.6.2)
_KEPT = frozenset((*_ANSWERED, "content-length", "l"))
_MAX_KEPT = 16384  # bytes of a skipped message's header lines kept for its answer
_MAX_CARRY = 8192  # an incomplete line carried from one read to the next (longer: cut, it is no line kept)


def cut_or_too_large(message: str) -> tuple[int, str] | None:
    """The answer to a request pjsip parsed but that is too large or cut (module doc), or None to let it on.
    ``message``: the request's bytes as pjsip received them (surrogate escapes for bytes that are not UTF-8)."""
    size = len(message.encode("utf-8", "surrogateescape"))
    if size >= MAX_PACKET:  # over UDP, cut at the buffer's size (over TCP and TLS, StreamGuard saw it first)
        return TOO_LARGE
    if not re.search(r"\r?\n\r?\n", message):
        return CUT_SHORT
    if body_shorter_than_declared(message):
        return BODY_SHORT
    return None


@dataclass(slots=True)
class Head:
    """What an answer needs of a request that is read line by line: its first line and the header lines it copies."""

    first: str = ""
    lines: list[str] = field(default_factory=list)
    kept: int = 0
    content_length: int = 0

    def add(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "surrogateescape")
        if not self.first:
            self.first = line
            return
        if line[:1] in (" ", "\t"):  # a folded continuation (RFC 3261 §7.3.1) of the line before
            if self.lines and self.kept + len(line) <= _MAX_KEPT:
                self.lines[-1] += " " + line.strip()
                self.kept += len(line)
            return
        name, _, value = line.partition(":")
        key = name.strip().lower()
        if key in ("content-length", "l"):
            value = value.strip()
            self.content_length = int(value) if value.isascii() and value.isdigit() and len(value) < 10 else 0
        elif key in _KEPT and self.kept + len(line) <= _MAX_KEPT:
            self.lines.append(line)
            self.kept += len(line)

    def answer(self) -> bytes | None:
        """The stateless ``513`` to this request; None for a response, an ACK (never answered, RFC 3261 §17.1.1.3),
        or a request without the headers an answer copies."""
        parts = self.first.split()
        if len(parts) != 3 or not parts[2].upper().startswith("SIP/") or parts[0].upper() == "ACK":
            return None
        found = {key: [line for line in self.lines if _name(line) in key] for key in _GROUPS}
        if not all(found.values()):
            return None
        to = found[("to", "t")][0]
        if ";tag=" not in to.lower().replace(" ", ""):
            to += f";tag={secrets.token_hex(6)}"  # RFC 3261 §8.2.6.2: the UAS adds a To tag
        lines = [
            f"SIP/2.0 {TOO_LARGE[0]} {TOO_LARGE[1]}",
            *found[("via", "v")],
            found[("from", "f")][0],
            to,
            found[("call-id", "i")][0],
            found[("cseq",)][0],
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")

    @property
    def summary(self) -> str:
        """The request line's method and the Call-ID, for a log line (the caller's text, cleaned by the logger)."""
        return f"{self.first.split(' ', 1)[0]} {self.value('call-id', 'i')}".strip()

    def value(self, *names: str) -> str:
        """The value of the first kept header of one of ``names`` (lower case), else ""."""
        return next((line.partition(":")[2].strip() for line in self.lines if _name(line) in names), "")

    def refused(self, size: int) -> Refused:
        """This request refused as too large: its answer, ``size``, its method, Call-ID, caller and called."""
        parts = self.first.split()
        called = user_part(parts[1]) if len(parts) == 3 else ""
        return Refused(self.answer(), size, self.summary, user_part(self.value("from", "f")), called)


_GROUPS = (("via", "v"), ("from", "f"), ("to", "t"), ("call-id", "i"), ("cseq",))


def _name(line: str) -> str:
    return line.partition(":")[0].strip().lower()


def read_head(data: bytes) -> Head:
    """The :class:`Head` of a message's bytes (its header block, as far as it goes: a cut datagram's last line is
    taken as it is)."""
    head = Head()
    end = _HEAD_END.search(data)
    block = data[: end.start()] if end else data
    for raw in block.split(b"\n"):
        head.add(raw.removesuffix(b"\r"))
    return head


def too_large_answer(data: bytes) -> bytes | None:
    """The ``513`` to the request in ``data`` (a datagram pjsip could not parse), or None (see :meth:`Head.answer`)."""
    return read_head(data).answer()


@dataclass(slots=True)
class _Skip:
    """A message being skipped on one connection: its header block so far, then how much of its body is left."""

    started: float
    size: int  # bytes of it seen so far
    head: Head = field(default_factory=Head)
    carry: bytes = b""
    body_left: int | None = None  # None while in the header block


@dataclass(frozen=True, slots=True)
class Refused:
    """A message refused: its answer as sent from the raw bytes (None: none is, or pjsip sends it), its size as far
    as it is known (the header block and ``Content-Length``; at least what was read), its method and Call-ID
    ("METHOD CALL-ID", the caller's text), and the status and reason of the answer."""

    answer: bytes | None
    size: int
    summary: str
    caller: str = ""  # the user part of From (the caller's text)
    called: str = ""  # the user part of the request URI
    status: int = TOO_LARGE[0]
    reason: str = TOO_LARGE[1]


class StreamGuard:
    """The messages of stream connections (TCP, TLS) that a worker cannot take (module doc). Each call of
    :meth:`received` gets what pjsip holds of one connection, from where it reads next, and says how many bytes to
    take out of pjsip's sight and what was refused; :meth:`dropped` gets the line ends pjsip skips by itself between
    messages (they may belong to a message being skipped). Connections are any hashable key; one whose message is
    being skipped is forgotten after ``stale_s`` without data, and at most ``max_connections`` are tracked."""

    def __init__(
        self,
        limit: int = MAX_MESSAGE,
        *,
        stale_s: float = 32.0,
        max_connections: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.stale_s = stale_s
        self.max_connections = max_connections
        self._clock = clock
        self._skips: OrderedDict[Hashable, _Skip] = OrderedDict()

    def skipping(self, conn: Hashable) -> bool:
        return conn in self._skips

    def received(self, conn: Hashable, data: bytes) -> tuple[int, Refused | None]:
        """(bytes of ``data`` to take from pjsip, the message refused now or None)."""
        skip = self._skips.get(conn)
        now = self._clock()
        if skip is not None and now - skip.started > self.stale_s:
            del self._skips[conn]
            skip = None
        if skip is None:
            return self._fresh(conn, data, now)
        return self._go_on(conn, skip, data)

    def dropped(self, conn: Hashable, data: bytes) -> Refused | None:
        """pjsip skipped ``data`` (line ends) before what it reads next: part of a message being skipped, if any."""
        skip = self._skips.get(conn)
        if skip is None:
            return None
        return self._go_on(conn, skip, data)[1]

    def _fresh(self, conn: Hashable, data: bytes, now: float) -> tuple[int, Refused | None]:
        """``data`` starts a message: let it on if it fits, else refuse it and skip it."""
        end = _HEAD_END.search(data)
        if end is None:
            if len(data) <= self.limit:
                return 0, None  # its header block is still coming
            skip = self._track(conn, _Skip(now, 0))
            return self._go_on(conn, skip, data)
        head = read_head(data[: end.end()])
        total = end.end() + head.content_length
        if total <= self.limit:
            return 0, None
        refused = head.refused(total)
        if total <= len(data):
            return total, refused
        self._track(conn, _Skip(now, len(data), head, body_left=total - len(data)))
        return len(data), refused

    def _go_on(self, conn: Hashable, skip: _Skip, data: bytes) -> tuple[int, Refused | None]:
        """More of the message being skipped: its header lines until the empty line, then its body."""
        refused: Refused | None = None
        buffer, pos = skip.carry + data, 0
        carried = len(skip.carry)
        while skip.body_left is None:
            newline = buffer.find(b"\n", pos)
            if newline < 0:
                break
            line = buffer[pos:newline].removesuffix(b"\r")
            pos = newline + 1
            if line:
                skip.head.add(line)
                continue
            skip.body_left = skip.head.content_length  # the empty line: the header block ends
            size = skip.size + pos - carried + skip.body_left
            refused = skip.head.refused(size)
        if skip.body_left is None:
            skip.carry = buffer[pos:] if len(buffer) - pos <= _MAX_CARRY else b""
            skip.size += len(data)
            return len(data), None
        skip.carry = b""
        taken = min(len(buffer) - pos, skip.body_left)
        skip.body_left -= taken
        used = pos + taken - carried
        skip.size += used
        if skip.body_left == 0:
            self._skips.pop(conn, None)
        return used, refused

    def _track(self, conn: Hashable, skip: _Skip) -> _Skip:
        self._skips[conn] = skip
        self._skips.move_to_end(conn)
        while len(self._skips) > self.max_connections:
            self._skips.popitem(last=False)
        return skip
