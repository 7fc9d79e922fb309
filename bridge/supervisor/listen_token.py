"""Commands on Redis signed by the ``serve`` process that accepted them from the console, and checked by the workers.

Redis carries the console's commands to the workers: listen-in requests, supervisor actions (hang up, whisper,
transfer, take over, hand back) and a taken-over call's audio. Anyone who can write to Redis can publish there, so
a worker obeys only what is signed with the node's listen key (``listen_key``: only ``serve`` and its workers hold
it; ``serve`` makes a random one at start unless the settings name one, and its workers get it through their
settings pipe, never through Redis or a log line).

A command is JSON: HMAC-SHA256 over its purpose, the call id, who asked, a random nonce, an expiry :data:`TTL_S`
ahead and the command's own fields (an action's kind, text, target and request id). A worker refuses (and logs) a
message that is unsigned, wrongly signed, expired, good for too long, or a nonce it has seen (a signed message
captured on Redis and published again). The purpose is in the MAC (:data:`LISTEN`, :data:`ACTION`), so no kind of
message passes for another.

Take-over audio (:func:`seal`, :class:`AudioOpener`) is binary: ``[8-byte big-endian time in ns][32-byte
HMAC-SHA256][PCM]``, the MAC over the call, the supervisor who took it over, the time and the PCM. A worker plays a
message only for the call and supervisor of the take-over it accepted, only if its time is within :data:`TTL_S`
and later than the last one played (no replay, no reordering).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

TTL_S: Final = 15.0  # a signed request is good this long (the console renews a listen-in every keys.LISTEN_RENEW_S)
SKEW_S: Final = 5.0  # an expiry further ahead than TTL_S + this is refused (clocks of two nodes differ a little)


LISTEN: Final = "listen"
ACTION: Final = "action"  # a supervisor action (``bridge.serve.actions``): never good as a listen request
_AUDIO: Final = b"takeover-audio\n"
_STAMP: Final = struct.Struct(">Q")
_AUDIO_HEAD: Final = _STAMP.size + hashlib.sha256().digest_size


def _mac(key: bytes, call_id: str, who: str, nonce: str, expires: float, purpose: str, fields: str) -> str:
    head = "" if purpose == LISTEN else f"{purpose}\n"
    tail = f"\n{fields}" if fields else ""
    text = f"{head}{call_id}\n{who}\n{nonce}\n{expires:.3f}{tail}".encode()
    return hmac.new(key, text, hashlib.sha256).hexdigest()


def _canonical(fields: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(fields.items())), separators=(",", ":")) if fields else ""


def sign(
    key: bytes,
    call_id: str,
    who: str,
    *,
    now: float | None = None,
    purpose: str = LISTEN,
    fields: Mapping[str, str] | None = None,
) -> str:
    """The signed command (JSON) for ``call_id`` on behalf of ``who``: by default a listen-in request; with
    ``purpose`` :data:`ACTION`, an action whose ``fields`` (strings) the MAC covers too."""
    expires = round((time.time() if now is None else now) + TTL_S, 3)
    nonce = secrets.token_hex(16)
    extra = {str(k): str(v) for k, v in (fields or {}).items()}
    sig = _mac(key, call_id, who, nonce, expires, purpose, _canonical(extra))
    body: dict[str, Any] = {"call_id": call_id, "who": who, "nonce": nonce, "exp": expires, "sig": sig}
    if extra:
        body["fields"] = extra
    return json.dumps(body)


@dataclass(frozen=True, slots=True)
class Signed:
    """A command that passed :meth:`Verifier.verify`."""

    call_id: str
    who: str
    expires: float  # wall-clock seconds
    fields: dict[str, str] = field(default_factory=dict)


def _parse(data: Any) -> tuple[dict[str, Any], str, str]:
    try:
        body = json.loads(data)
        call_id, who = body["call_id"], body.get("who", "")
    except (TypeError, ValueError, KeyError, AttributeError):
        raise ValueError('not {"call_id", "who", ...} JSON') from None
    if not isinstance(call_id, str) or not isinstance(who, str) or not call_id:
        raise ValueError('not {"call_id", "who", ...} JSON with strings')
    return body, call_id, who


class Verifier:
    """A worker's check of signed commands of one purpose: :meth:`verify` returns the :class:`Signed` command or
    raises ``ValueError`` with the reason (the message is then ignored and the refusal logged)."""

    def __init__(self, key: bytes | None, clock: Callable[[], float] = time.time, purpose: str = LISTEN) -> None:
        self._key = key
        self._purpose = purpose
        self._clock = clock
        self._seen: dict[str, float] = {}  # nonce -> its expiry

    def check(self, data: Any) -> tuple[str, str]:
        """``(call_id, who)`` of a valid command (see :meth:`verify`)."""
        signed = self.verify(data)
        return signed.call_id, signed.who

    def verify(self, data: Any) -> Signed:
        body, call_id, who = _parse(data)
        sig, nonce, expires, fields = body.get("sig"), body.get("nonce"), body.get("exp"), body.get("fields", {})
        if not isinstance(sig, str) or not isinstance(nonce, str) or not isinstance(expires, int | float):
            raise ValueError(f"unsigned request for call {call_id[:64]}")
        if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
            raise ValueError(f"malformed fields in a request for call {call_id[:64]}")
        try:
            exp = float(expires)
        except OverflowError:
            exp = math.inf
        if not math.isfinite(exp):
            raise ValueError(f"request for call {call_id[:64]} good for too long")
        if self._key is None:
            raise ValueError("this worker has no listen key")
        mac = _mac(self._key, call_id, who, nonce, exp, self._purpose, _canonical(fields))
        if not sig.isascii() or not hmac.compare_digest(sig, mac):  # compare_digest raises on other text
            raise ValueError(f"bad signature on a request for call {call_id[:64]}")
        now = self._clock()
        if exp < now:
            raise ValueError(f"expired request for call {call_id[:64]}")
        if exp > now + TTL_S + SKEW_S:
            raise ValueError(f"request for call {call_id[:64]} good for too long")
        self._seen = {n: t for n, t in self._seen.items() if t >= now}
        if nonce in self._seen:
            raise ValueError(f"replayed request for call {call_id[:64]}")
        self._seen[nonce] = exp
        return Signed(call_id, who, exp, dict(fields))


def _audio_mac(key: bytes, call_id: str, who: str, stamp: bytes, pcm: bytes) -> bytes:
    head = _AUDIO + f"{call_id}\n{who}\n".encode()
    return hmac.new(key, head + stamp + pcm, hashlib.sha256).digest()


def seal(key: bytes, call_id: str, who: str, pcm: bytes, *, now_ns: int | None = None) -> bytes:
    """One message of ``who``'s take-over audio for ``call_id``: the time, its MAC, then ``pcm``."""
    stamp = _STAMP.pack(time.time_ns() if now_ns is None else now_ns)
    return stamp + _audio_mac(key, call_id, who, stamp, pcm) + pcm


class AudioOpener:
    """A worker's check of one take-over's audio: :meth:`open` returns the PCM of a message sealed for this call
    and this supervisor, newer than the last one, or raises ``ValueError``."""

    def __init__(self, key: bytes | None, call_id: str, who: str, clock: Callable[[], int] = time.time_ns) -> None:
        self._key, self._call_id, self._who, self._clock = key, call_id, who, clock
        self._last = 0

    def open(self, data: bytes) -> bytes:
        if self._key is None:
            raise ValueError("this worker has no listen key")
        if len(data) < _AUDIO_HEAD:
            raise ValueError("not sealed take-over audio")
        stamp, mac, pcm = data[: _STAMP.size], data[_STAMP.size : _AUDIO_HEAD], data[_AUDIO_HEAD:]
        if not hmac.compare_digest(mac, _audio_mac(self._key, self._call_id, self._who, stamp, pcm)):
            raise ValueError("bad signature on take-over audio")
        (at,) = _STAMP.unpack(stamp)
        now = self._clock()
        if at <= self._last or at < now - int(TTL_S * 1e9) or at > now + int(SKEW_S * 1e9):
            raise ValueError("take-over audio replayed, out of order or out of time")
        self._last = at
        return pcm
