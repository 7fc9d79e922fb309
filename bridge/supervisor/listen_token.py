"""Listen-in requests signed by the ``serve`` process that authorised them, and checked by the workers.

A worker streams a call's audio only for a control message signed with the node's listen key (``listen_key``: only
``serve`` and its workers hold it; the workers get it through their settings pipe, never from Redis): HMAC-SHA256
over the call id, who listens, a random nonce and an expiry :data:`TTL_S` ahead. A worker refuses (and logs) a
message that is unsigned, wrongly signed, expired, or a nonce it has seen (a signed message captured on Redis and
published again). ``serve`` signs each renewal afresh (``bridge.supervisor.listen``), after the audit entry is
written. A take-over grant is signed the same way with its purpose in the MAC (:data:`TAKEOVER`), so neither kind
of message passes for the other.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from typing import Any, Final

TTL_S: Final = 15.0  # a signed request is good this long (the console renews it every keys.LISTEN_RENEW_S)
SKEW_S: Final = 5.0  # an expiry further ahead than TTL_S + this is refused (clocks of two nodes differ a little)


LISTEN: Final = "listen"
TAKEOVER: Final = "takeover"  # a take-over grant (``bridge.supervisor.actions``): never good as a listen request


def _mac(key: bytes, call_id: str, who: str, nonce: str, expires: float, purpose: str = LISTEN) -> str:
    head = "" if purpose == LISTEN else f"{purpose}\n"
    text = f"{head}{call_id}\n{who}\n{nonce}\n{expires:.3f}".encode()
    return hmac.new(key, text, hashlib.sha256).hexdigest()


def sign(key: bytes, call_id: str, who: str, *, now: float | None = None, purpose: str = LISTEN) -> str:
    """The control message asking the workers to stream ``call_id`` to ``who``'s listener (JSON); with
    ``purpose`` :data:`TAKEOVER`, the grant that lets ``who`` take the call over."""
    expires = round((time.time() if now is None else now) + TTL_S, 3)
    nonce = secrets.token_hex(16)
    sig = _mac(key, call_id, who, nonce, expires, purpose)
    return json.dumps({"call_id": call_id, "who": who, "nonce": nonce, "exp": expires, "sig": sig})


class Verifier:
    """A worker's check of control messages: :meth:`check` returns ``(call_id, who)`` or raises ``ValueError``
    with the reason (the message is then ignored and the refusal logged)."""

    def __init__(self, key: bytes | None, clock: Callable[[], float] = time.time, purpose: str = LISTEN) -> None:
        self._key = key
        self._purpose = purpose
        self._clock = clock
        self._seen: dict[str, float] = {}  # nonce -> its expiry

    def check(self, data: Any) -> tuple[str, str]:
        try:
            body = json.loads(data)
            call_id, who = str(body["call_id"]), str(body.get("who", ""))
        except (TypeError, ValueError, KeyError):
            raise ValueError('not {"call_id", "who", ...} JSON') from None
        sig, nonce, expires = body.get("sig"), body.get("nonce"), body.get("exp")
        if not isinstance(sig, str) or not isinstance(nonce, str) or not isinstance(expires, int | float):
            raise ValueError(f"unsigned request for call {call_id[:64]}")
        if self._key is None:
            raise ValueError("this worker has no listen key")
        if not hmac.compare_digest(sig, _mac(self._key, call_id, who, nonce, float(expires), self._purpose)):
            raise ValueError(f"bad signature on a request for call {call_id[:64]}")
        now = self._clock()
        if expires < now:
            raise ValueError(f"expired request for call {call_id[:64]}")
        if expires > now + TTL_S + SKEW_S:
            raise ValueError(f"request for call {call_id[:64]} good for too long")
        self._seen = {n: t for n, t in self._seen.items() if t >= now}
        if nonce in self._seen:
            raise ValueError(f"replayed request for call {call_id[:64]}")
        self._seen[nonce] = float(expires)
        return call_id, who
