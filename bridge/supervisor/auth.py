"""Who may use the supervisor API and console: accounts or demo tokens, roles, sessions in a cookie, CSRF tokens.

* **Accounts** (``users_file``, :mod:`bridge.supervisor.accounts`): a person signs in with the account's name and
  password (``POST /auth/signin`` ``{"name", "password"}``); a script sends one of the account's API tokens as
  ``Authorization: Bearer <token>``. Roles: ``viewer`` < ``supervisor`` < ``admin``. The audit names the account.
* **Demo tokens** (no ``users_file``; ``serve`` warns at start): ``CALLBRIDGE_SUPERVISOR_TOKEN`` opens the
  ``admin`` role, ``CALLBRIDGE_SUPERVISOR_READONLY_TOKEN`` the ``viewer`` role, as a bearer token or in the body of
  the sign-in (``{"token", "name"}``; the typed name is shown with the role). :meth:`Tokens.role_of` compares a
  token with both, always both, in constant time (``hmac.compare_digest`` of SHA-256 digests).
* **Failed sign-ins** are limited per client address first, then per account only for the addresses that failed
  for it (:class:`FailureLimits`): past the limit the answer is 429 with ``Retry-After`` until the window has moved
  on; each failure is logged (address, account). Failures from other addresses alone never lock an account out;
  an admin can clear an account's or an address's failures (``POST /api/signin/unlock``).
  An attempt is checked and counted as a failure under one lock, before the password's hash runs
  (:meth:`FailureLimits.attempt`), and the count withdrawn if it succeeds: so a burst of concurrent attempts gets
  at most the limit of hashes and answers, the rest 429.
* **A refused token** is answered only once :data:`REFUSED_DELAY_S` has passed since the request came in, with the
  same body every time, and counted (``callbridge_supervisor_refused_tokens_total``). A request without any credential
  is not a guess and is answered at once.
* **Sessions** (the console) live in this process's memory: a random 256-bit id in the cookie :data:`COOKIE`
  (``HttpOnly; SameSite=Strict; Path=/``, ``Max-Age`` the session's lifetime, ``Secure`` over HTTPS). The server
  forgets a session when it expires or is signed out, whatever the browser still holds, and an account's sessions
  when the account is removed from the users file or its role changes (:mod:`.users_watch`). Restarting ``serve``
  signs everyone out.
* **CSRF.** A session's changes (any method but GET/HEAD) must carry its CSRF token in the :data:`CSRF_HEADER` header,
  which a page of another origin cannot read nor set; and an ``Origin`` header, when the browser sends one, must be
  this server's. Bearer requests need neither: nothing ambient authenticates them.

No password or token is ever written to a log, a page, a URL, an event or Redis: sessions hold the role and a
display name.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bridge.runtime.failures import Failures
from bridge.supervisor.accounts import Role, Users, allows, hash_password, verify_password

OPERATOR: Role = "admin"  # the demo's operator token
READ_ONLY: Role = "viewer"  # the demo's read-only token

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
    token: str = ""  # an account's API token, as its digest (the account may lose it while a listen-in runs)

    def may(self, need: str) -> bool:
        """``need``: ``watch``, ``act`` (on a call), ``listen`` or ``rollout`` (:data:`~.accounts.NEEDS`)."""
        return allows(self.role, need)

    @property
    def can_change(self) -> bool:
        return self.may("rollout")


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    role: Role
    name: str
    csrf: str
    expires_at: float  # on the Sessions clock
    account: str = ""  # the signed-in account's name (empty: a demo token's session)

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

    def open(self, role: Role, name: str = "", *, account: bool = False) -> Session:
        """A new session; ``account``: ``name`` is a signed-in account's (shown as it is), else a demo's typed name."""
        session = Session(
            id=secrets.token_urlsafe(32),
            role=role,
            name=name if account else display_name(name, role),
            csrf=secrets.token_urlsafe(32),
            expires_at=self.clock() + self.ttl_s,
            account=name if account else "",
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

    def end_where(self, ended: Callable[[Session], bool]) -> list[Session]:
        """Forget every session ``ended`` says has ended; those sessions."""
        gone = [session for session in self._by_id.values() if ended(session)]
        for session in gone:
            del self._by_id[session.id]
        return gone

    def __len__(self) -> int:
        return len(self._by_id)


def csrf_ok(session: Session, header: str | None) -> bool:
    return bool(header) and hmac.compare_digest(_digest(header or ""), _digest(session.csrf))


class FailureLimits:
    """Failed sign-ins in a sliding window (:class:`bridge.runtime.failures.Failures`), counted per source address,
    per account, and per account and source. A source past ``limit`` failures within ``window_s`` is refused, whatever
    it tries, until its oldest failure leaves the window. An account past ``limit`` failures (from anywhere) is
    refused only to the sources that have failed for it themselves: a right password from a source that has not
    failed still gets in, so failures from others alone never lock an account. An admin clears an account's or a
    source's failures (:meth:`unlock`)."""

    MAX_KEYS = 10_000  # beyond it the oldest keys are forgotten (a spray of addresses cannot grow this)

    def __init__(self, limit: int, window_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._failures = Failures(limit, window_s, clock=clock, max_keys=self.MAX_KEYS)
        self._lock = threading.RLock()

    @staticmethod
    def keys(source: str, account: str | None = None) -> tuple[str, ...]:
        """What one attempt from ``source`` (for ``account``, if it names one) is counted under."""
        if not account:
            return (f"addr:{source}",)
        return (f"addr:{source}", f"account:{account}", f"pair:{account}|{source}")

    def attempt(self, source: str, account: str | None = None) -> tuple[float, float]:
        """Check and count one attempt at once, before it is tried: ``(wait, 0)`` if it is refused (and not
        counted), else ``(0, stamp)`` with the attempt counted as a failure until :meth:`succeeded` withdraws it."""
        with self._lock:
            wait = self.retry_after(source, account)
            if wait > 0:
                return wait, 0.0
            return 0.0, self.failed(source, account)

    def succeeded(self, stamp: float, source: str, account: str | None = None) -> None:
        """The attempt :meth:`attempt` counted at ``stamp`` succeeded: it is no failure."""
        with self._lock:
            for key in self.keys(source, account):
                self._failures.withdraw(key, stamp)

    def retry_after(self, source: str, account: str | None = None) -> float:
        """Seconds until ``source`` may try (``account``) again (0: it may now)."""
        with self._lock:
            wait = self._failures.retry_after(f"addr:{source}")
            if account and not wait and self._failures.count(f"pair:{account}|{source}"):
                wait = self._failures.retry_after(f"account:{account}")
            return wait

    def failed(self, source: str, account: str | None = None) -> float:
        """Count one failure from ``source`` (for ``account``); the time it was counted at."""
        with self._lock:
            now = self.clock()
            for key in self.keys(source, account):
                self._failures.add(key, now)
            return now

    def unlock(self, *, account: str = "", source: str = "") -> bool:
        """Forget the failures of ``account`` (every source's for it too) and/or of ``source``; whether any were
        counted."""
        with self._lock:
            keys = [key for key in self._failures.remembered() if account and key.startswith(f"pair:{account}|")]
            keys += [f"account:{account}"] if account else []
            keys += [f"addr:{source}"] if source else []
            had = any(self._failures.count(key) for key in keys)
            for key in keys:
                self._failures.clear(key)
            return had


@dataclass(slots=True)
class Credentials:
    """What opens the API and the console: the accounts (``users``; None: demo tokens only; replaced when the users
    file changes, :mod:`.users_watch`) and the limits."""

    tokens: Tokens
    users: Users | None
    limits: FailureLimits

    @property
    def configured(self) -> bool:
        return self.users is not None or self.tokens.configured

    @property
    def accounts(self) -> bool:
        return self.users is not None

    def bearer(self, given: str) -> tuple[Role, str] | None:
        """The role and the audit's name an API token opens, or None."""
        if self.users is not None:
            account = self.users.by_token(given) if given else None
            return (account.role, account.name) if account is not None else None
        role = self.tokens.role_of(given)
        return (role, f"demo token ({role})") if role is not None else None

    def still_signed_in(self, principal: Principal, sessions: Sessions) -> bool:
        """Whether ``principal`` could still make its request: its session lives, or its account still holds its
        API token with the same role (a demo token holds for the process's life)."""
        if principal.session is not None:
            return sessions.get(principal.session.id) is not None
        if self.users is None or not principal.token:
            return True
        account = self.users.by_digest(principal.token)
        return account is not None and account.role == principal.role

    def password(self, name: str, password: str) -> Role | None:
        """The account's role if ``password`` is its password (slow: run it off the event loop). An unknown name
        costs the same hash as a known one."""
        account = self.users.get(name) if self.users is not None else None
        ok = verify_password(password, account.password if account is not None else _dummy_hash())
        return account.role if ok and account is not None else None


_DUMMY: list[str] = []


def _dummy_hash() -> str:
    if not _DUMMY:
        _DUMMY.append(hash_password(secrets.token_urlsafe(16)))
    return _DUMMY[0]
