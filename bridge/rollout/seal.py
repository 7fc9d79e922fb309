"""The rollout flag's seal: which stored flag a call obeys (pure: no I/O but the process's own user).

A raw write to Redis (``HSET`` of a flag's hash) must not move calls. So every flag the product writes
(:meth:`bridge.rollout.store.RolloutStore.update_flag`, a restore) goes with its audit entry in one ``MULTI``, and
the two are bound:

* the audit entry holds the whole new flag (``flag``: its hash fields as sorted JSON, :func:`flag_text`) beside who,
  when, why and the OS user of the process (:func:`os_user`: whoever a ``--who`` claims to be);
* the entry's id is chosen by the writer (:func:`next_id`, under ``WATCH`` of the stream) so that the flag's hash
  can name it (``audit``) in the same transaction;
* with a key (the ``rollout_key`` setting) the entry is signed: ``sig`` is an HMAC-SHA256 of its id and all its
  other fields (:func:`entry_sig`), so neither an entry nor a flag can be made, changed or replayed without the key.

A stored flag is obeyed only if :func:`refusal` finds nothing wrong: its hash names an audit entry of its dialplan
that holds exactly its fields (and is signed, with a key), and no later valid entry of the dialplan changed it since.
Otherwise the flag in force is the last valid entry's (:func:`last_valid`), or the plan's defaults. Without a key
the check is the audit alone: a writer who can also add a matching audit entry is obeyed, and leaves that entry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pwd
from collections.abc import Mapping, Sequence

AUDIT_FIELD = "audit"  # in a flag's hash: the id of the audit entry written with it
SIG_FIELD = "sig"  # in an audit entry: its HMAC
FLAG_FIELD = "flag"  # in an audit entry: the whole flag written
OS_USER_FIELD = "os_user"  # in an audit entry: the OS user of the process that wrote it
META_FIELDS = frozenset({AUDIT_FIELD})  # a flag hash's fields that are not settings

Entry = tuple[str, Mapping[str, str]]  # an audit stream entry: (id, fields)


def flag_text(fields: Mapping[str, str]) -> str:
    """A flag's hash fields (its settings, not :data:`META_FIELDS`) as the audit entry holds them."""
    return json.dumps({k: fields[k] for k in sorted(fields) if k not in META_FIELDS}, separators=(",", ":"))


def entry_sig(key: bytes, entry_id: str, fields: Mapping[str, str]) -> str:
    """The HMAC-SHA256 (hex) of an audit entry: its id and every field but ``sig``."""
    body = json.dumps([entry_id, {k: fields[k] for k in sorted(fields) if k != SIG_FIELD}], separators=(",", ":"))
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def signed(key: bytes | None, entry_id: str, fields: Mapping[str, str]) -> dict[str, str]:
    """``fields`` with their ``sig`` (none without a key)."""
    out = {k: v for k, v in fields.items() if k != SIG_FIELD}
    if key is not None:
        out[SIG_FIELD] = entry_sig(key, entry_id, out)
    return out


def valid_entry(key: bytes | None, entry: Entry, dialplan: str) -> bool:
    """Whether ``entry`` is a flag change of ``dialplan`` this store trusts (signed by ``key``, when there is one)."""
    entry_id, fields = entry
    if fields.get("dialplan") != dialplan or FLAG_FIELD not in fields:
        return False
    return key is None or hmac.compare_digest(fields.get(SIG_FIELD, ""), entry_sig(key, entry_id, fields))


def refusal(key: bytes | None, dialplan: str, raw: Mapping[str, str], since: Sequence[Entry]) -> str | None:
    """None if the stored flag ``raw`` is obeyed, else why not. ``since``: the audit entries from the one ``raw``
    names on (oldest first; none if it names none, or none that is there)."""
    entry_id = raw.get(AUDIT_FIELD)
    if not entry_id:
        return "it names no audit entry (a write outside callbridge)"
    if not since or since[0][0] != entry_id:
        return f"its audit entry {entry_id} is not in the audit stream"
    if not valid_entry(key, since[0], dialplan):
        return f"its audit entry {entry_id} is not a signed change of {dialplan}"
    if since[0][1][FLAG_FIELD] != flag_text(raw):
        return f"it differs from its audit entry {entry_id}"
    later = next((e for e in since[1:] if valid_entry(key, e, dialplan)), None)
    if later is not None:
        return f"a later audit entry ({later[0]}) changed it since"
    return None


def last_valid(key: bytes | None, dialplan: str, newest_first: Sequence[Entry]) -> tuple[str, dict[str, str]] | None:
    """The last valid flag change of ``dialplan`` among ``newest_first``: (its entry id, the flag's hash fields)."""
    for entry in newest_first:
        if valid_entry(key, entry, dialplan):
            try:
                fields = json.loads(entry[1][FLAG_FIELD])
            except ValueError:
                continue
            if isinstance(fields, dict):
                return entry[0], {str(k): str(v) for k, v in fields.items()}
    return None


def next_id(last: str, now_ms: int) -> str:
    """The id of the next entry of a stream whose last generated id is ``last`` (``0-0``: none), at ``now_ms``."""
    ms, _, seq = last.partition("-")
    last_ms, last_seq = int(ms or 0), int(seq or 0)
    return f"{now_ms}-0" if now_ms > last_ms else f"{last_ms}-{last_seq + 1}"


RECORD_UNSIGNED = ("id", "repeat", SIG_FIELD)  # a record's fields its signature leaves out (added on read)


def record_sig(key: bytes, record: Mapping[str, object]) -> str:
    """The HMAC-SHA256 (hex) of an outcome record (or a re-arm entry): every field but those added on read."""
    body = json.dumps(
        {k: v for k, v in record.items() if k not in RECORD_UNSIGNED}, sort_keys=True, separators=(",", ":")
    )
    return hmac.new(key + b"\x00outcome", body.encode(), hashlib.sha256).hexdigest()


def sign_record(key: bytes | None, record: Mapping[str, object]) -> dict[str, object]:
    """``record`` with its ``sig`` (none without a key)."""
    out = {k: v for k, v in record.items() if k != SIG_FIELD}
    if key is not None:
        out[SIG_FIELD] = record_sig(key, out)
    return out


def record_refusal(key: bytes | None, record: Mapping[str, object]) -> str | None:
    """None if ``record`` is evidence (signed with ``key``; anything without a key), else why not: ``unsigned`` or
    ``bad signature``."""
    if key is None:
        return None
    sig = record.get(SIG_FIELD)
    if not isinstance(sig, str) or not sig:
        return "unsigned"
    return None if hmac.compare_digest(sig, record_sig(key, record)) else "bad signature"


def os_user() -> str:
    """The OS user this process runs as (by its uid: no environment variable can claim another)."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
