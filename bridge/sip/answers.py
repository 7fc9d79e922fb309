"""One answer per INVITE transaction, whatever arrives again (RFC 3261 §17.2.1, §13.3.1.4, §8.2.2.2; RFC 6026).

pjsip ends an INVITE server transaction as soon as it sends a 2xx (and a stateless answer, pjsua's own ``486`` of a
full process or the gateway's early refusals, has none at all). A retransmission of that INVITE arriving later (the
2xx or the refusal was lost or slow, a trunk retransmits late) carries no To tag and matches no transaction: pjsua
takes it for a new call. It answered a retransmission after the ACK with a second 200 (a second call streaming the
agent to the caller's port), and a refused INVITE's retransmission with 200 once a slot had freed.

So every final answer to an initial INVITE (no To tag) is kept here for 64*T1 (32 s: RFC 3261 §17.1.1.2, Timer B,
how long the caller may retransmit) under its transaction's key: Call-ID, From tag, CSeq number and the top Via's
branch (§17.2.3). :meth:`AnswerBook.look` then decides what a new INVITE's arrival is before anything else sees it:

* a retransmission of an INVITE answered 2xx: absorbed, no answer (RFC 6026's "Accepted" state; before the ACK pjsua
  retransmits the 200 itself, §13.3.1.4). It makes no call;
* a retransmission of a refused INVITE: the same status, reason and the headers that say why (a challenge, a
  ``Retry-After``), never another answer;
* a retransmission of an INVITE still unanswered: on to pjsip, whose transaction absorbs it (and nothing screens it
  twice: a second look at its credentials would call its nonce replayed);
* the same Call-ID, From tag and CSeq on another branch (a merged request, §8.2.2.2): ``482 Loop Detected``;
* anything else: new (the caller's retry after a challenge has a new CSeq).

A transaction is the source address's that sent it first: the same key from another address is new to it (so that
nobody can answer a caller's INVITE in advance by guessing its Call-ID, tag and branch), and pjsua's own check of
merged requests still applies while its transaction lives.

:meth:`AnswerBook.pending` marks each new INVITE as it arrives, :meth:`AnswerBook.refused` notes the gateway's own
early refusals, and :meth:`AnswerBook.answered` records every final response pjsip sends, stateless ones included
(:mod:`bridge.sip.txhook`). Pure: no pjsua2 here.
"""

from __future__ import annotations

import enum
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bridge.sip.access import source_ip
from bridge.sip.sipmsg import split_message

T1_S = 0.5  # RFC 3261 §17.1.1.1
KEEP_S = 64 * T1_S  # Timer B: how long a caller retransmits an INVITE
MAX_KEPT = 16_384  # transactions remembered at once; the oldest go first (a flood cannot grow the table)
LOOP_DETECTED = "Loop Detected"  # RFC 3261 §8.2.2.2: a merged request's 482
# an answer's headers that a repeated refusal carries again: why it was refused and what to do next
REPEATED_HEADERS = (
    "www-authenticate",
    "proxy-authenticate",
    "retry-after",
    "warning",
    "accept",
    "unsupported",
    "min-se",
)
_COMPACT = {"f": "from", "t": "to", "i": "call-id", "v": "via"}
_PARAM = re.compile(r";\s*([a-z0-9_.!%*+`'~-]+)\s*(?:=\s*(\"[^\"]*\"|[^;,\s]*))?", re.IGNORECASE)

# (status, reason, headers) as bridge.sip.rxhook carries it out: 0 pass on, -1 drop, else the answer's code
Verdict = tuple[int, str, Mapping[str, str]]
PASS_ON: Verdict = (0, "", {})
ABSORB: Verdict = (-1, "", {})


class Stage(enum.Enum):
    """Where an INVITE transaction stands, as far as its answers go."""

    PENDING = "pending"  # passed on to pjsip, no final answer sent yet
    ACCEPTED = "accepted"  # answered 2xx
    REFUSED = "refused"  # answered 3xx-6xx


@dataclass(frozen=True, slots=True)
class InviteKey:
    """An INVITE transaction's key without its branch (RFC 3261 §8.2.2.2: what a merged request shares)."""

    call_id: str
    from_tag: str
    cseq: int


@dataclass(frozen=True, slots=True)
class Heard:
    """What the SIP text of an initial INVITE or of a response to an INVITE says of its transaction."""

    key: InviteKey
    branch: str
    status: int = 0  # a response's status code (0: a request)
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # a response's REPEATED_HEADERS present, first copies


@dataclass(slots=True)
class _Entry:
    branch: str
    stage: Stage
    source: str  # the IP the INVITE came from ("" if only its answer was seen)
    until: float = 0.0
    answer: Verdict = PASS_ON


@dataclass(frozen=True, slots=True)
class Look:
    """:meth:`AnswerBook.look`'s finding: ``key`` of an initial INVITE (None for any other request), and
    ``verdict``, what to do with it now, or None if it is new (screen it as usual)."""

    key: InviteKey | None = None
    branch: str = ""
    verdict: Verdict | None = None


def header_param(value: str, name: str) -> str:
    """A header parameter (``tag``, ``branch``) of one header value, outside any ``<...>`` URI; "" if absent."""
    text = value.split(",", 1)[0] if "<" not in value else value[value.rfind(">") + 1 :]
    for match in _PARAM.finditer(text):
        if match.group(1).lower() == name:
            return (match.group(2) or "").strip('"')
    return ""


def _heads(message: str) -> tuple[str, dict[str, str]]:
    """The first line and the first copy of each header (lower-case long names) of a SIP message."""
    lines, _body = split_message(message)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line[:1] in (" ", "\t") or ":" not in line:
            continue
        name, value = line.split(":", 1)
        key = name.strip().lower()
        headers.setdefault(_COMPACT.get(key, key), value.strip())
    return (lines[0] if lines else ""), headers


def _key(headers: Mapping[str, str]) -> tuple[InviteKey, str] | None:
    """The INVITE transaction of these headers (its CSeq method INVITE), and its top Via's branch."""
    number, _, method = headers.get("cseq", "").partition(" ")
    call_id = headers.get("call-id", "")
    if method.strip().upper() != "INVITE" or not number.isdigit() or not call_id:
        return None
    key = InviteKey(call_id, header_param(headers.get("from", ""), "tag"), int(number))
    return key, header_param(headers.get("via", ""), "branch")


def heard_invite(message: str) -> Heard | None:
    """The transaction of an initial INVITE (no To tag); None for any other request."""
    first, headers = _heads(message)
    if not first.startswith("INVITE ") or header_param(headers.get("to", ""), "tag"):
        return None
    found = _key(headers)
    return Heard(found[0], found[1]) if found is not None else None


def heard_answer(message: str) -> Heard | None:
    """The transaction a final response to an INVITE answers, its status, reason and repeatable headers; None for
    a provisional response, a response to another method, or anything else."""
    first, headers = _heads(message)
    parts = first.split(" ", 2)
    if len(parts) < 2 or not parts[0].upper().startswith("SIP/") or not parts[1].isdigit():
        return None
    status = int(parts[1])
    found = _key(headers) if 200 <= status <= 699 else None
    if found is None:
        return None
    kept = {name: headers[name] for name in REPEATED_HEADERS if name in headers}
    return Heard(found[0], found[1], status, parts[2] if len(parts) > 2 else "", kept)


class AnswerBook:
    """The final answers of initial INVITEs for :data:`KEEP_S` (module doc). Not thread-safe: pjsip's one thread
    (the event loop's) records and asks. ``clock``: monotonic seconds (replaceable in tests)."""

    def __init__(
        self, keep_s: float = KEEP_S, max_kept: int = MAX_KEPT, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.keep_s = keep_s
        self.max_kept = max_kept
        self._clock = clock
        self._entries: OrderedDict[InviteKey, _Entry] = OrderedDict()
        self.absorbed = 0  # retransmissions of 2xx-answered INVITEs dropped (for logs and tests)
        self.repeated = 0  # refusals sent again
        self.merged = 0  # merged requests answered 482

    def __len__(self) -> int:
        return len(self._entries)

    def look(self, message: str, source: str) -> Look:
        """What a request arriving from ``source`` ("ip:port") is to its INVITE transaction (module doc)."""
        heard = heard_invite(message)
        if heard is None:
            return Look()
        entry = self._live(heard.key)
        if entry is None or (entry.source and entry.source != source_ip(source)):
            return Look(heard.key, heard.branch)
        if entry.branch != heard.branch:
            self.merged += 1
            return Look(heard.key, heard.branch, (482, LOOP_DETECTED, {}))
        if entry.stage is Stage.PENDING:
            self._keep(heard.key, entry)  # the caller still retransmits: keep it as long
            return Look(heard.key, heard.branch, PASS_ON)
        if entry.stage is Stage.ACCEPTED:
            self.absorbed += 1
            return Look(heard.key, heard.branch, ABSORB)
        self.repeated += 1
        return Look(heard.key, heard.branch, entry.answer)

    def pending(self, key: InviteKey, branch: str, source: str) -> None:
        """A new initial INVITE from ``source`` ("ip:port"), not answered yet."""
        if self._live(key) is None:
            self._keep(key, _Entry(branch, Stage.PENDING, source_ip(source)))

    def refused(self, key: InviteKey, branch: str, answer: Verdict) -> None:
        """The gateway's own refusal of a new INVITE (the same is recorded again when pjsip sends it)."""
        entry = self._live(key)
        if entry is not None and entry.branch == branch and entry.stage is Stage.PENDING:
            entry.stage, entry.answer = Stage.REFUSED, answer
            self._keep(key, entry)

    def answered(self, response: str) -> Heard | None:
        """Record a final response pjsip sends (any response text may come: others are ignored); what it answered."""
        heard = heard_answer(response)
        if heard is None:
            return None
        entry = self._live(heard.key)
        if entry is not None and entry.branch != heard.branch:
            return None  # the 482 of a merged request: the first transaction's answer stands
        source = entry.source if entry is not None else ""
        if heard.status < 300:
            self._keep(heard.key, _Entry(heard.branch, Stage.ACCEPTED, source))
        elif entry is None or entry.stage is not Stage.ACCEPTED:  # a 2xx stays the answer
            answer = (heard.status, heard.reason, heard.headers)
            self._keep(heard.key, _Entry(heard.branch, Stage.REFUSED, source, answer=answer))
        return heard

    def _live(self, key: InviteKey) -> _Entry | None:
        now = self._clock()
        while self._entries:  # entries are kept in order of their deadlines: drop the expired from the front
            first = next(iter(self._entries.values()))
            if first.until > now:
                break
            self._entries.popitem(last=False)
        return self._entries.get(key)

    def _keep(self, key: InviteKey, entry: _Entry) -> None:
        entry.until = self._clock() + self.keep_s
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_kept:
            self._entries.popitem(last=False)
