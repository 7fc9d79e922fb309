"""The console's accounts: a users file of names, roles, scrypt password hashes and API-token digests.

The file (``users_file`` in the settings; written by ``callbridge users``) is YAML::

    users:
      dana:
        role: supervisor                       # viewer | supervisor | admin
        password: "scrypt$131072$8$1$<salt>$<hash>"  # base64 (URL-safe); never the password itself
        tokens: ["<sha256 hex of an API token>"]     # per-account bearer tokens for scripts

* **Roles** rank ``viewer`` < ``supervisor`` < ``admin``: viewers watch; supervisors also act on calls and listen
  in; admins also change rollouts (:data:`NEEDS`).
* **Passwords** are hashed with ``hashlib.scrypt`` at OWASP's current guidance (N=2^17, r=8, p=1: 128 MiB and
  about half a second a hash; 16-byte salt) and compared in constant time. A hash keeps its parameters, so one
  written with others (an older file's N=2^14) is verified with its own until ``callbridge users add`` writes the
  account again. At most :data:`HASHING_AT_ONCE` hashes run at once in a process (a burst of sign-ins waits for
  memory instead of taking 128 MiB each); a stored N above :data:`MAX_N` never matches.
* **API tokens** are 256-bit random strings shown once at creation; the file keeps only their SHA-256 (a token has
  no dictionary to guess from, so a slow hash adds nothing).

A wrong or malformed file is refused with its path and the field (``users.dana.role``). This module does no I/O but
:func:`load_users` and :func:`save_users`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, Literal, cast

import yaml

from bridge.errors import ConfigError

Role = Literal["viewer", "supervisor", "admin"]
ROLES: Final[tuple[Role, ...]] = ("viewer", "supervisor", "admin")
RANK: Final[dict[str, int]] = {role: i for i, role in enumerate(ROLES)}
# what each kind of request needs
NEEDS: Final[dict[str, Role]] = {
    "watch": "viewer",
    "act": "supervisor",
    "listen": "supervisor",
    "rollout": "admin",
    "unlock": "admin",
}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
MAX_N = 2**20  # a stored hash asking for more memory than 1 GiB is refused, not computed
HASHING_AT_ONCE = 2
_HASHING = threading.BoundedSemaphore(HASHING_AT_ONCE)
MIN_PASSWORD_CHARS = 10


def allows(role: str, need: str) -> bool:
    """Whether ``role`` may do what ``need`` (a key of :data:`NEEDS`) names."""
    return RANK.get(role, -1) >= RANK[NEEDS[need]]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    with _HASHING:
        maxmem = 128 * r * (n + p + 2) + 2**20  # what scrypt needs, and a margin
        return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=maxmem)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, 32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a :func:`hash_password` string; a malformed one never matches."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = _unb64(digest)
        if int(n) > MAX_N or int(r) * int(p) >= 2**30:
            return False
        got = _scrypt(password, _unb64(salt), int(n), int(r), int(p), len(want))
    except (ValueError, TypeError, MemoryError, OverflowError):
        return False
    return hmac.compare_digest(got, want)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "cbt_" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: Role
    password: str  # the scrypt string
    tokens: tuple[str, ...] = ()  # SHA-256 hex digests

    def to_yaml(self) -> dict[str, object]:
        return {"role": self.role, "password": self.password, "tokens": list(self.tokens)}


@dataclass(frozen=True, slots=True)
class Users:
    accounts: dict[str, Account] = field(default_factory=dict)
    _by_token: dict[str, Account] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_token = {digest: account for account in self.accounts.values() for digest in account.tokens}
        object.__setattr__(self, "_by_token", by_token)  # frozen: set once, here

    def get(self, name: str) -> Account | None:
        return self.accounts.get(name)

    def by_token(self, token: str) -> Account | None:
        """The account an API token belongs to (a dict lookup of its digest: the digest is not secret)."""
        return self._by_token.get(token_digest(token))

    def by_digest(self, digest: str) -> Account | None:
        """The account holding the API token of this digest."""
        return self._by_token.get(digest)

    def with_account(self, account: Account) -> Users:
        return Users({**self.accounts, account.name: account})

    def without(self, name: str) -> Users:
        return Users({k: v for k, v in self.accounts.items() if k != name})


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ConfigError("users", "name", f"{name!r}: lower-case letters, digits, '.', '_', '-' (up to 40)")
    return name


def add_user(users: Users, name: str, role: str, password: str) -> Users:
    check_name(name)
    if role not in ROLES:
        raise ConfigError("users", "role", f"{role!r}: one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD_CHARS:
        raise ConfigError("users", "password", f"at least {MIN_PASSWORD_CHARS} characters")
    old = users.get(name)
    account = Account(name, role, hash_password(password), old.tokens if old else ())
    return users.with_account(account)


def add_token(users: Users, name: str) -> tuple[Users, str]:
    """A new API token for ``name``: the new users and the token (shown once, kept only as its digest)."""
    account = users.get(name)
    if account is None:
        raise ConfigError("users", "name", f"no account {name!r}")
    token = new_token()
    return users.with_account(replace(account, tokens=(*account.tokens, token_digest(token)))), token


def parse_users(data: object, source: str) -> Users:
    if data is None:
        return Users()
    if not isinstance(data, dict) or not isinstance(data.get("users", {}), dict):
        raise ConfigError(source, "users", "must be a mapping of account name -> {role, password, tokens}")
    accounts: dict[str, Account] = {}
    for name, entry in (data.get("users") or {}).items():
        where = f"users.{name}"
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ConfigError(source, where, "not a valid account name")
        if not isinstance(entry, dict):
            raise ConfigError(source, where, "must be a mapping {role, password, tokens}")
        role, password, tokens = entry.get("role"), entry.get("password"), entry.get("tokens") or []
        if role not in ROLES:
            raise ConfigError(source, f"{where}.role", f"{role!r}: one of {', '.join(ROLES)}")
        if not isinstance(password, str) or not password.startswith("scrypt$") or password.count("$") != 5:
            raise ConfigError(source, f"{where}.password", "must be a scrypt hash written by `callbridge users add`")
        if not isinstance(tokens, list) or not all(isinstance(t, str) and len(t) == 64 for t in tokens):
            raise ConfigError(source, f"{where}.tokens", "must be a list of SHA-256 hex digests")
        accounts[name] = Account(name, cast(Role, role), password, tuple(tokens))
    return Users(accounts)


def load_users(path: Path) -> Users:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Users()
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(str(path), "(file)", f"cannot read the users file: {exc}") from None
    return parse_users(data, str(path))


def save_users(path: Path, users: Users) -> None:
    """Write the file (mode 0600: it holds hashes) through a temporary file, so a reader never sees half of it."""
    body = {"users": {name: a.to_yaml() for name, a in sorted(users.accounts.items())}}
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise ConfigError(str(path), "(file)", f"cannot write the users file: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        yaml.safe_dump(body, out, sort_keys=False)
    os.replace(tmp, path)
