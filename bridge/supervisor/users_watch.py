"""The users file, read again while ``serve`` runs: an account removed, or its role changed, is signed out.

Every :data:`RELOAD_S` the file's size, modification time and inode are compared with the last read's; when they
differ it is read again (:func:`~bridge.supervisor.accounts.load_users`) and replaces the accounts the console and
the API check (:class:`~bridge.supervisor.auth.Credentials`): a removed account's API tokens open nothing from then
on, and every session of an account that is gone or whose role changed ends (:func:`apply`), with the listen-ins
and take-overs it had open (they end with their session). So ``callbridge users remove`` takes effect within
:data:`RELOAD_S` plus a read. A file that cannot be read or is wrong is logged (its path and field) and the
accounts stay as they were; a file that is gone holds no accounts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Final

from bridge.errors import ConfigError
from bridge.supervisor.accounts import Users, load_users
from bridge.supervisor.auth import Credentials, Session, Sessions

log = logging.getLogger("bridge.supervisor")

RELOAD_S: Final = 10.0

Stamp = tuple[int, int, int] | None


def _stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def apply(users: Users, credentials: Credentials, sessions: Sessions) -> list[Session]:
    """``users`` from now on; the sessions of accounts that are gone or changed role, ended (returned)."""
    credentials.users = users

    def ended(session: Session) -> bool:
        if not session.account:
            return False  # a demo token's session: no account to lose
        account = users.get(session.account)
        return account is None or account.role != session.role

    return sessions.end_where(ended)


def reload(path: Path, credentials: Credentials, sessions: Sessions) -> None:
    """Read ``path`` again and apply it (logged); a file that cannot be read changes nothing."""
    try:
        users = load_users(path)
    except ConfigError as exc:
        log.error("console accounts not reloaded: %s", exc)
        return
    gone = apply(users, credentials, sessions)
    log.info("console accounts: %d account(s) from %s", len(users.accounts), path)
    for session in gone:
        log.warning("console: %s signed out: the account was removed or its role changed", session.account)


async def watch(path: Path, credentials: Credentials, sessions: Sessions, stopping: asyncio.Event) -> None:
    """Reload ``path`` whenever it changes, until ``stopping`` is set."""
    last = _stamp(path)
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), RELOAD_S)
        now = _stamp(path)
        if now != last and not stopping.is_set():
            last = now
            reload(path, credentials, sessions)
