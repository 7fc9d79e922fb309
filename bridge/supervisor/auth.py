"""Who may use the supervisor API and console: two tokens, two roles, sessions in a cookie, a CSRF token per session.

* **Tokens and roles.** ``CALLBRIDGE_SUPERVISOR_TOKEN`` is the operator's (reads, and changes a rollout);
  ``CALLBRIDGE_SUPERVISOR_READONLY_TOKEN`` is a supervisor's who only watches. A token arrives either as
  ``Authorization: Bearer <token>`` (scripts, the CLI) or once, in the body of ``POST /auth/signin`` (the console).
  :meth:`Tokens.role_of` compares it with both tokens, always both, in constant time (``hmac.compare_digest`` of
  SHA-256 digests, so the lengths do not show either).
* **A refused token** is answered only once :data:`REFUSED_DELAY_S` has passed since the request came in, with the
  same body every time, and counted (``callbridge_supervisor_refused_tokens_total``). A request without any credential
  is not a guess and is answered at once.
* **Sessions** (the console) live in this process's memory: a random 256-bit id in the cookie :data:`COOKIE`
  (``HttpOnly; SameSite=Strict; Path=/``, ``Max-Age`` the session's lifetime, ``Secure`` over HTTPS). The server
  forgets a session when it expires or is signed out, whatever the browser still holds. Restarting ``serve`` signs
  everyone out.
* **CSRF.** A session's changes (any method but GET/HEAD) must carry its CSRF token in the :data:`CSRF_HEADER` header,
  which a page of another origin cannot read nor set; and an ``Origin`` header, when the browser sends one, must be
  this server's. Bearer requests need neither: nothing ambient authenticates them.

The token is never written to a log, a page, a URL, an event or Redis: sessions hold the role and a display name.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Role = Literal["operator", "read-only"]
OPERATOR: Role = "operator"
READ_ONLY: Role = "read-only"

COOKIE = "cb_console"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL_S = 8 * 3600  # one working shift
REFUSED_DELAY_S = 1.0
MAX_SESSIONS = 1000  # beyond it the oldest session is signed out
NAME_MAX_CHARS = 60


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


@dataclass(frozen=True, slots=True)
class Tokens:
    operator: str | None = None
    read_only: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.operator or self.read_only)

    def role_of(self, given: str) -> Role | None:
        """The role ``given`` opens, or None. Both comparisons always run, in constant time."""
        probe = _digest(given)
        is_operator = hmac.compare_digest(probe, _digest(self.operator or "")) and bool(self.operator and given)
        is_read_only = hmac.compare_digest(probe, _digest(self.read_only or "")) and bool(self.read_only and given)
        if is_operator:
            return OPERATOR
        return READ_ONLY if is_read_only else None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a request: the role, the name written to the audit, and how they proved it."""

    role: Role
    who: str
    via: Literal["bearer", "session"]
    session: Session | None = None

    @property
    def can_change(self) -> bool:
        return self.role == OPERATOR


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    role: Role
    name: str
    csrf: str
    expires_at: float  # on the Sessions clock

    def to_json(self, now: float) -> dict[str, object]:
        """What the page may know: never the session id (it stays in the HttpOnly cookie)."""
        return {"role": self.role, "name": self.name, "csrf": self.csrf, "expires_in_s": round(self.expires_at - now)}


def display_name(name: str, role: Role) -> str:
    """The name the audit shows: what the supervisor typed (printable, cut), with the role."""
    clean = "".join(c for c in name if c.isprintable()).strip()[:NAME_MAX_CHARS]
    return f"{clean} ({role}, console)" if clean else f"{role} (console)"


class Sessions:
    """Console sessions of this process: opened at sign-in, forgotten at sign-out or expiry."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def open(self, role: Role, name: str = "") -> Session:
        session = Session(
            id=secrets.token_urlsafe(32),
            role=role,
            name=display_name(name, role),
            csrf=secrets.token_urlsafe(32),
            expires_at=self.clock() + self.ttl_s,
        )
        self._by_id[session.id] = session
        while len(self._by_id) > MAX_SESSIONS:
            self._by_id.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id; an expired one is forgotten and gives None."""
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if self.clock() >= session.expires_at:
            del self._by_id[session_id]
            return None
        return session

    def close(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._by_id)


def csrf_ok(session: Session, header: str | None) -> bool:
    return bool(header) and hmac.compare_digest(_digest(header or ""), _digest(session.csrf))
