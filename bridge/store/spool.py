"""The final state a stopping worker could not write to Redis, kept in a local spool file until Redis takes it.

A worker stops (SIGTERM, ``serve`` stopping) while Redis is away: its call store tries to write what it holds for
a moment (:meth:`bridge.store.calls.CallStore.close`) and then, instead of dropping it, writes it here: one JSON
file per stop (mode 0600, in a 0700 directory), holding each call's full hash and live-set membership and the
stream entries not yet written (and the recent ones already written, which Redis refuses again as duplicates if it
kept them). The next call store of this node to reach Redis (a restarted worker, or the next start of ``serve``)
writes every spool file before anything else, so a call's final state (``ended_at``, ``end_reason``) and all its
events are there before a previous run's leftovers are marked ended. A file is claimed by renaming it, so two
workers never write one twice; one that Redis did not take is put back for the next try.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from bridge.store import keys
from bridge.store.ended import index_ended
from bridge.store.pending import PendingWrites

log = logging.getLogger("bridge.store")

SUFFIX = ".spool.json"
CLAIMED = ".replaying"


def spool_pending(pending: PendingWrites, directory: Path) -> tuple[Path, int, int] | None:
    """Write what ``pending`` holds to a new spool file in ``directory``: (its path, calls, stream entries), or None
    if it holds nothing. Raises ``OSError``."""
    calls: dict[str, Any] = {}
    entries: list[dict[str, Any]] = []
    for call_id, call in pending.calls.items():
        calls[call_id] = {"state": dict(call.state), "ended": call.ended}
        entries += [{"call_id": e.call_id, "id": e.id, "fields": e.fields} for e in call.tail]
    entries += [{"call_id": e.call_id, "id": e.id, "fields": e.fields} for e in pending.queue]
    if not calls and not entries:
        return None
    data = {"worker": pending.worker, "calls": calls, "entries": entries}
    path = write_file(directory, f"{int(time.time() * 1000)}-{os.getpid()}-{_safe(pending.worker)}", SUFFIX, data)
    return path, len(calls), len(pending.queue)


def write_file(directory: Path, stem: str, suffix: str, data: Any) -> Path:
    """A new spool file ``<stem><suffix>`` of ``data`` as JSON (mode 0600, in a 0700 directory), written, synced and
    then renamed: complete or absent, a reader never sees half a file. Raises ``OSError``."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp, path = directory / f".{stem}.tmp", directory / f"{stem}{suffix}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, default=str)
        f.flush()
        os.fsync(f.fileno())
    tmp.rename(path)
    return path


def claim_files(directory: Path | None, suffix: str) -> Iterator[tuple[Path, Path]]:
    """Each spool file ``*<suffix>`` of ``directory``, oldest first, claimed by renaming it: (its name, its claimed
    name). One another process claimed first is skipped; one its claimer could not write is put back by renaming
    the claimed name to its name."""
    if directory is None or not directory.is_dir():
        return
    for path in sorted(directory.glob(f"*{suffix}")):
        claimed = path.with_name(path.name + CLAIMED)
        try:
            path.rename(claimed)
        except FileNotFoundError:
            continue  # another worker took it
        yield path, claimed


async def replay_spool(
    client: aioredis.Redis, directory: Path | None, *, stream_maxlen: int, call_ttl_s: int
) -> list[tuple[Path, int]]:
    """Write every spool file in ``directory`` to Redis and delete it: [(file, calls)]. A file Redis does not take
    is put back (and ``RedisError`` raised: an outage, for the writer's retry)."""
    done: list[tuple[Path, int]] = []
    for path, claimed in claim_files(directory, SUFFIX):
        try:
            data = json.loads(claimed.read_text(encoding="utf-8"))
            await _write(client, data, stream_maxlen, call_ttl_s)
        except (RedisError, OSError):
            with contextlib.suppress(OSError):
                claimed.rename(path)
            raise
        except ValueError:
            log.error("spool file %s is not valid JSON; kept as %s", path, claimed)
            continue
        claimed.unlink()
        done.append((path, len(data.get("calls", {}))))
        log.warning("wrote spooled call state %s to Redis: %d call(s)", path.name, len(data.get("calls", {})))
    return done


async def _write(client: aioredis.Redis, data: dict[str, Any], stream_maxlen: int, call_ttl_s: int) -> None:
    live = keys.worker_calls(str(data.get("worker", "")))
    pipe = client.pipeline(transaction=False)
    for call_id, call in data.get("calls", {}).items():
        if call.get("state"):
            pipe.hset(keys.call(call_id), mapping=call["state"])
            pipe.expire(keys.call(call_id), call_ttl_s)
        if call.get("ended"):
            pipe.srem(live, call_id)
            index_ended(pipe, call_id, _ended_at(call.get("state") or {}), call_ttl_s)
        else:
            pipe.sadd(live, call_id)  # still live when its worker stopped: its next run marks it ended
    for e in data.get("entries", []):
        pipe.xadd(keys.call_events(e["call_id"]), e["fields"], id=e["id"], maxlen=stream_maxlen, approximate=True)
    for call_id in {e["call_id"] for e in data.get("entries", [])}:
        pipe.expire(keys.call_events(call_id), call_ttl_s)
    for result in await pipe.execute(raise_on_error=False):
        if isinstance(result, ResponseError) and "equal or smaller" not in str(result):
            log.error("Redis refused a spooled write: %s", result)
        elif isinstance(result, RedisError):
            raise result


def _ended_at(state: dict[str, Any]) -> float:
    try:
        return float(state.get("ended_at") or time.time())
    except ValueError:
        return time.time()


def _safe(worker: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in worker)[:80]


def kept_key(directory: Path, name: str) -> str:
    """A random key (64 hex digits) kept in ``directory/name`` (mode 0600, in a 0700 directory): made by the first
    caller, read by every later one (a restarted process, another process of the node). Raises ``OSError``."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        text = path.read_text(encoding="ascii", errors="replace").strip()
        if len(text) != 64 or not all(c in "0123456789abcdef" for c in text):
            raise OSError(f"{path}: not a key this product wrote (64 hex digits)") from None
        return text
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key + "\n")
        f.flush()
        os.fsync(f.fileno())
    return key
