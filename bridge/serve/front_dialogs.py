"""Where the front keeps its dialogs: in Redis (the dialog module's db_redis backend, :func:`dialog_store`), so that a
restarted front still routes its live calls' in-dialog requests, or in Kamailio's memory, and why."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bridge.config import Settings
from bridge.serve.front_files import FrontError

# db_redis's table schemas (one file per table: its columns, then its version; README.db_redis §1), as Debian's
# kamailio-redis-modules ships them in /usr/share/kamailio/db_redis/kamailio, for the tables the dialog module uses.
DIALOG_SCHEMAS = {
    "version": "id/int,table_name/string,table_version/int,\n1\n",
    "dialog": (
        "id/int,hash_entry/int,hash_id/int,callid/string,from_uri/string,from_tag/string,to_uri/string,"
        "to_tag/string,caller_cseq/string,callee_cseq/string,caller_route_set/string,callee_route_set/string,"
        "caller_contact/string,callee_contact/string,caller_sock/string,callee_sock/string,state/int,"
        "start_time/int,timeout/int,sflags/int,iflags/int,toroute_name/string,req_uri/string,xdata/string,\n7\n"
    ),
    "dialog_vars": "id/int,hash_entry/int,hash_id/int,dialog_key/string,dialog_value/string,\n1\n",
}
DIALOG_DB_PACKAGE = "kamailio-redis-modules"
_MODULE_DIRS = ("/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/aarch64-linux-gnu/kamailio/modules",
                "/usr/lib/kamailio/modules", "/usr/lib64/kamailio/modules", "/usr/local/lib64/kamailio/modules",
                "/usr/local/lib/kamailio/modules")  # fmt: skip


def has_db_redis() -> bool:
    """Is Kamailio's db_redis module installed (True where Kamailio's module directory is not a known one)?"""
    installed = [Path(d) for d in _MODULE_DIRS if Path(d).is_dir()]
    return not installed or any((d / "db_redis.so").is_file() for d in installed)


DEFAULT_DIALOG_DB = 15  # where the dialogs go in the Redis of redis_url, unless that is redis_url's own database


@dataclass(frozen=True, slots=True)
class DialogStore:
    """Where the front keeps its dialogs: ``url`` (the dialog module's ``db_url``) and ``db`` in Redis, or in
    Kamailio's memory (``url`` ""), and why, for the start-up line and ``/healthz``."""

    url: str = ""
    db: int | None = None
    why: str = "front_dialogs: memory"

    @property
    def where(self) -> str:
        return "redis" if self.url else "memory"

    def describe(self) -> str:
        if self.url:
            return f"dialogs in Redis ({self.why}, database {self.db})"
        return f"dialogs in memory only: {self.why} (a restarted front forgets its live calls)"

    def to_json(self) -> dict[str, Any]:
        return {"store": self.where, "why": self.why}


def dialog_store(settings: Settings) -> DialogStore:
    """Where the front's dialogs go (``front_dialogs``, ``front_dialog_url``, ``front_dialog_db``): by default the Redis
    of ``redis_url``, database 15 (14 where redis_url's own is 15), when db_redis can reach it (a plain
    ``redis://host:port``); else ``front_dialog_url``; else memory, and why. Asked for explicitly (a
    ``front_dialog_url`` or ``front_dialog_db``) without Kamailio's db_redis installed: FrontError."""
    if settings.front_dialogs == "memory":
        return DialogStore()
    asked = settings.front_dialog_url is not None or settings.front_dialog_db is not None
    if settings.front_dialog_url is not None:
        parts, why = urlsplit(settings.front_dialog_url), "front_dialog_url"
        own = parts.path.strip("/")
        db = settings.front_dialog_db if settings.front_dialog_db is not None else int(own or 0)
    elif not settings.redis_url:
        return DialogStore(why="no redis_url")
    else:
        parts, why = urlsplit(settings.redis_url), "the Redis of redis_url"
        if parts.scheme != "redis" or not parts.hostname:
            return DialogStore(
                why=f"Kamailio's db_redis reaches a plain redis://host:port only, not redis_url's {parts.scheme}://; "
                "front_dialog_url names a Redis for them"
            )
        taken = parts.path.strip("/") or "0"
        fallback = DEFAULT_DIALOG_DB if taken != str(DEFAULT_DIALOG_DB) else DEFAULT_DIALOG_DB - 1
        db = settings.front_dialog_db if settings.front_dialog_db is not None else fallback
    if not has_db_redis():
        if asked:
            raise FrontError(
                f"the front's dialogs in Redis need Kamailio's db_redis: apt-get install {DIALOG_DB_PACKAGE}"
            )
        return DialogStore(why=f"Kamailio's db_redis is not installed (apt-get install {DIALOG_DB_PACKAGE})")
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    auth = f"{parts.username or ''}:{parts.password}@" if parts.password else ""
    return DialogStore(f"redis://{auth}{host}:{parts.port or 6379}/{db}", db, why)


def dialog_db_url(settings: Settings) -> str:
    """The dialog module's ``db_url`` (:func:`dialog_store`); "" when the dialogs stay in Kamailio's memory."""
    return dialog_store(settings).url


def write_dialog_schemas(directory: Path) -> None:
    directory.mkdir(mode=0o700, exist_ok=True)
    for table, schema in DIALOG_SCHEMAS.items():
        (directory / table).write_text(schema, encoding="ascii")
