"""Who called, and whom they dialled: the caller's number and the original called number of an INVITE, read from
its headers. Pure (text in, values out, no pjsua2); never raises, whatever the text.

**The caller** (:func:`call_identity`). ``From`` is the caller's own word, and a trunk that carries the real caller
in an identity header often fills it with its own pilot number. From a *trusted* trunk (the gateway says which: a
source in ``SipConfig.allowed_sources``, or one a trusted front reports) the caller is taken from, in order:

* ``P-Asserted-Identity`` (RFC 3325): the first entry whose URI holds a number: a ``sip:``/``sips:`` URI's user
  part or a ``tel:`` URI's number (its visual separators ``-.()`` dropped, RFC 3966 §5.1.1). Several entries may
  stand in one header, comma-separated, or in several headers;
* ``Remote-Party-ID`` (draft-ietf-sip-privacy-04, as carriers still send it): the first ``party=calling`` entry
  (an entry without ``party`` is the calling party) whose URI holds a number;
* else ``From``, as from anyone else.

A request for privacy is honoured whoever makes it (it can only hide): ``Privacy: id`` (RFC 3325 §9.3), or a
calling-party ``Remote-Party-ID`` with ``privacy=full`` or ``privacy=uri``, makes the caller :data:`ANONYMOUS`
everywhere it is shown or stored, as a ``From`` of ``sip:anonymous@anonymous.invalid`` does.

**The original called number** (:func:`original_called`): the number the call was first placed to, before a
forward brought it here. It is data the request carries, as the dialled number is, and is read from any source:

* ``Diversion`` (RFC 5806): each redirection adds an entry on top, so the bottom-most (the last entry of the last
  header) is the original; the oldest entry whose URI has a user part is taken. Of a longer history only the
  64 oldest entries are read (the newest are dropped). An entry with ``privacy=full`` or
  ``privacy=uri`` hides it: none;
* else ``History-Info`` (RFC 7044): the entry with the lowest ``index`` (``1`` before ``1.1`` before ``1.1.1`` and
  ``1.2``) when there are at least two (the request was retargeted from it). ``Privacy: history``, or a
  ``Privacy=history`` header in that entry's URI, hides it: none.
* neither: none ("").

Every value is passed through :func:`~bridge.sip.sipmsg.clean_text`: it is data, never a name of anything.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote

from bridge.sip.sipmsg import clean_text, header_values

ANONYMOUS = "anonymous"  # the caller of a call that withholds its identity (the user part RFC 3323 §4.1.1.3 names)

_VISUAL = re.compile(r"[-.()]")  # RFC 3966 visual separators
_NUMBER = re.compile(r"\+?[0-9*#]*[0-9][0-9*#]*")  # a phone number once its visual separators are gone
_USER = re.compile(r"[^\s\"<>@]+")  # a user part as the dialled number is taken: no blanks, quotes or brackets
_INDEX = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9}){0,31}")  # an hi-index (RFC 7044 §10.3), bounded
_MAX_ENTRIES = 64  # entries read of one header name: a request with more is a flood, not a history
_HIDING = frozenset({"full", "uri"})  # RPID / Diversion privacy values that hide the number


class CallerFrom(enum.StrEnum):
    """Where :attr:`Identity.caller` comes from."""

    FROM = "from"
    ASSERTED = "p-asserted-identity"
    REMOTE_PARTY = "remote-party-id"
    WITHHELD = "withheld"  # Privacy: id, or a Remote-Party-ID's privacy=full|uri


@dataclass(frozen=True, slots=True)
class Identity:
    """Who called (``caller``, cleaned; :data:`ANONYMOUS` when withheld), from where (``source``), and the original
    called number (``original_called``, cleaned; "" for none)."""

    caller: str
    source: CallerFrom
    original_called: str = ""


@dataclass(frozen=True, slots=True)
class _Entry:
    uri: str
    params: dict[str, str]


def call_identity(invite: str, from_user: str, *, trusted: bool) -> Identity:
    """The caller and the original called number of ``invite`` (its raw text); ``from_user``: the user part of its
    From (as pjsua parsed it); ``trusted``: the INVITE came from a trusted trunk (see the module doc)."""
    original = original_called(invite)
    if withheld(invite):
        return Identity(ANONYMOUS, CallerFrom.WITHHELD, original)
    if trusted:
        for source, number in (
            (CallerFrom.ASSERTED, asserted_number(invite)),
            (CallerFrom.REMOTE_PARTY, remote_party_number(invite)),
        ):
            if number:
                return Identity(number, source, original)
    return Identity(clean_text(from_user), CallerFrom.FROM, original)


def withheld(invite: str) -> bool:
    """Does the request ask that the caller's identity be withheld: ``Privacy: id`` (any case, among other values),
    or a calling-party ``Remote-Party-ID`` with ``privacy=full`` or ``privacy=uri``?"""
    if "id" in _privacy_values(invite):
        return True
    return any(_privacy(e) in _HIDING for e in _calling_parties(invite))


def asserted_number(invite: str) -> str:
    """The first number of the request's ``P-Asserted-Identity`` entries (cleaned), "" for none."""
    for entry in _entries(invite, "p-asserted-identity"):
        if number := _number(entry.uri):
            return number
    return ""


def remote_party_number(invite: str) -> str:
    """The first number of the request's calling-party ``Remote-Party-ID`` entries (cleaned), "" for none."""
    for entry in _calling_parties(invite):
        if number := _number(entry.uri):
            return number
    return ""


def original_called(invite: str) -> str:
    """The number the call was first placed to (cleaned; "" for none): ``Diversion``'s oldest entry, else
    ``History-Info``'s first entry of a retargeted request (the module doc)."""
    for entry in _oldest_first(invite, "diversion"):  # the bottom-most is the original (RFC 5806 §3)
        if user := _user(entry.uri):
            return "" if _privacy(entry) in _HIDING else user
    return _history_original(invite)


def _history_original(invite: str) -> str:
    if "history" in _privacy_values(invite):
        return ""
    indexed = [(key, e) for e in _entries(invite, "history-info") if (key := _index(e)) is not None]
    if len(indexed) < 2:  # one entry: the request went where it was first sent (no retargeting)
        return ""
    _key, first = min(indexed, key=lambda pair: pair[0])
    if "privacy=history" in unquote(first.uri.partition("?")[2]).lower().replace(" ", ""):
        return ""
    return _user(first.uri)


def _index(entry: _Entry) -> tuple[int, ...] | None:
    text = entry.params.get("index", "")
    return tuple(int(part) for part in text.split(".")) if _INDEX.fullmatch(text) else None


def _privacy_values(invite: str) -> set[str]:
    """The request's ``Privacy`` values (RFC 3323 §4.2: ``id;critical``), lower-cased."""
    return {v.strip().lower() for value in header_values(invite, "privacy") for v in re.split(r"[;,\s]+", value)}


def _privacy(entry: _Entry) -> str:
    return entry.params.get("privacy", "").lower()


def _calling_parties(invite: str) -> Iterator[_Entry]:
    for entry in _entries(invite, "remote-party-id"):
        if entry.params.get("party", "calling").lower() == "calling":
            yield entry


def _entries(invite: str, name: str) -> Iterator[_Entry]:
    """Every entry of every ``name`` header of ``invite``, in order (at most :data:`_MAX_ENTRIES`)."""
    count = 0
    for value in header_values(invite, name):
        for text in split_entries(value):
            if count >= _MAX_ENTRIES:
                return
            count += 1
            yield _entry(text)


def _oldest_first(invite: str, name: str) -> Iterator[_Entry]:
    """The last :data:`_MAX_ENTRIES` entries of every ``name`` header of ``invite``, the last first: a history that
    adds each entry on top keeps its oldest at the bottom, so a cap keeps the bottom and drops the newest."""
    texts = [text for value in header_values(invite, name) for text in split_entries(value)]
    for text in reversed(texts[-_MAX_ENTRIES:]):
        yield _entry(text)


def split_entries(value: str) -> list[str]:
    """A header value's comma-separated entries (RFC 3261 §7.3.1), commas inside a quoted display name or a URI in
    angle brackets kept: ``"Doe, J" <sip:1@h>;x=1, <tel:2>`` -> ``['"Doe, J" <sip:1@h>;x=1', '<tel:2>']``."""
    parts: list[str] = []
    start, quoted, escaped, bracketed = 0, False, False, False
    for i, char in enumerate(value):
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"' and not bracketed:
            quoted = True
        elif char == "<":
            bracketed = True
        elif char == ">":
            bracketed = False
        elif char == "," and not bracketed:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return [p.strip() for p in parts if p.strip()]


def _entry(text: str) -> _Entry:
    """One name-addr or addr-spec with its header parameters: ``"Name" <uri>;a=b`` or ``uri;a=b``."""
    rest = text
    if rest.startswith('"'):  # skip the quoted display name (it may hold "<", ";" or ",")
        end, escaped = 1, False
        while end < len(rest) and (escaped or rest[end] != '"'):
            escaped = not escaped and rest[end] == "\\"
            end += 1
        rest = rest[end + 1 :]
    opening = rest.find("<")
    if opening >= 0:
        closing = rest.find(">", opening)
        uri = rest[opening + 1 : closing] if closing >= 0 else rest[opening + 1 :]
        params = rest[closing + 1 :] if closing >= 0 else ""
    else:  # an addr-spec: parameters after it are the header's (RFC 3261 §20)
        uri, _, params = rest.strip().partition(";")
        params = ";" + params
    return _Entry(uri.strip(), _params(params))


def _params(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(";"):
        name, _, value = part.partition("=")
        if name.strip():
            out.setdefault(name.strip().lower(), value.strip().strip('"'))
    return out


def _user(uri: str) -> str:
    """A ``sip:``/``sips:`` URI's user part or a ``tel:`` URI's number, cleaned; "" when there is none."""
    scheme, colon, rest = uri.partition(":")
    scheme = scheme.strip().lower()
    if not colon or scheme not in ("sip", "sips", "tel"):
        return ""
    if scheme == "tel":
        number = _VISUAL.sub("", rest.split(";", 1)[0].split("?", 1)[0]).strip()
        return clean_text(number) if _NUMBER.fullmatch(number) else ""
    user, at, _host = rest.partition("@")
    user = user.split(";", 1)[0].split(":", 1)[0].strip()  # no user parameters (RFC 3261 §19.1.1), no password
    return clean_text(user) if at and _USER.fullmatch(user) else ""


def _number(uri: str) -> str:
    """:func:`_user` when it is a phone number (visual separators allowed), else ""."""
    user = _user(uri)
    return user if _NUMBER.fullmatch(_VISUAL.sub("", user)) else ""
