"""The rollout flag's seal: which stored flag a call obeys (pure: no I/O but the process's own user).

A raw write to Redis (``HSET`` of a flag's hash) must not move calls. So every flag the product writes
(:meth:`bridge.rollout.store.RolloutStore.update_flag`, a restore) goes with its audit entry in one ``MULTI``, and
the two are bound:

* the audit entry holds the whole new flag (``flag``: its hash fields as sorted JSON, :func:`flag_text`) beside who,
  when, why and the OS user of the process (:func:`os_user`: whoever a ``--who`` claims to be);
* the entry's id is chosen by the writer (:func:`next_id`, under ``WATCH`` of the stream) so that the flag's hash
  can name it (``audit``) in the same transaction;
* with keys (the ``rollout_key`` setting, :data:`Keys`) the entry is signed: ``sig`` is an HMAC-SHA256 of its id
  and all its other fields (:func:`entry_sig`) with the first key, so neither an entry nor a flag can be made,
  changed or replayed without a key. A signature by any of the keys vouches: a key is rotated by listing the new
  one first and the old one after it on every node, then dropping the old one.

A stored flag is obeyed only if :func:`refusal` finds nothing wrong: its hash names an audit entry of its dialplan
that holds exactly its fields (and is signed with one of the keys, when there are keys), and no later valid entry
of the dialplan changed it since. A refused flag never moves calls away from the safe variant: when it or its
audit entry asks for the kill switch, or cannot be read well enough to tell (:func:`says_kill`), or no valid entry
of the dialplan is left to follow, calls go to the safe variant; otherwise they follow the last valid entry's flag
(:func:`last_valid`). Without keys the check is the audit alone: a writer who can also add a matching audit entry
is obeyed, and leaves that entry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pwd
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

AUDIT_FIELD = "audit"  # in a flag's hash: the id of the audit entry written with it
SIG_FIELD = "sig"  # in an audit entry: its HMAC
FLAG_FIELD = "flag"  # in an audit entry: the whole flag written
OS_USER_FIELD = "os_user"  # in an audit entry: the OS user of the process that wrote it
META_FIELDS = frozenset({AUDIT_FIELD})  # a flag hash's fields that are not settings

Entry = tuple[str, Mapping[str, str]]  # an audit stream entry: (id, fields)
Keys = tuple[bytes, ...]  # the rollout_key setting's keys: the first signs, any vouches; (): none, nothing is signed
_TRUE, _FALSE = frozenset({"1", "true", "t", "yes", "y", "on"}), frozenset({"0", "false", "f", "no", "n", "off"})


def flag_text(fields: Mapping[str, str]) -> str:
    """A flag's hash fields (its settings, not :data:`META_FIELDS`) as the audit entry holds them."""
    return json.dumps({k: fields[k] for k in sorted(fields) if k not in META_FIELDS}, separators=(",", ":"))


def entry_sig(key: bytes, entry_id: str, fields: Mapping[str, str]) -> str:
    """The HMAC-SHA256 (hex) of an audit entry: its id and every field but ``sig``."""
    body = json.dumps([entry_id, {k: fields[k] for k in sorted(fields) if k != SIG_FIELD}], separators=(",", ":"))
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def signed(keys: Keys, entry_id: str, fields: Mapping[str, str]) -> dict[str, str]:
    """``fields`` with their ``sig`` by the first of ``keys`` (none without keys)."""
    out = {k: v for k, v in fields.items() if k != SIG_FIELD}
    if keys:
        out[SIG_FIELD] = entry_sig(keys[0], entry_id, out)
    return out


def same_mac(given: object, mac: str) -> bool:
    """Whether ``given`` (a signature as read from Redis: anything) is the hex MAC ``mac``, compared in constant time.
    A value that is no ASCII text is no MAC of ours: it does not match (``hmac.compare_digest`` would raise)."""
    return isinstance(given, str) and given.isascii() and hmac.compare_digest(given, mac)


def _vouched(keys: Keys, entry: Entry) -> bool:
    """Whether ``entry``'s ``sig`` is its HMAC by one of ``keys`` (or there are no keys)."""
    entry_id, fields = entry
    sig = fields.get(SIG_FIELD, "")
    return not keys or any(same_mac(sig, entry_sig(key, entry_id, fields)) for key in keys)


def signed_with(key: bytes, entry: Entry) -> bool:
    """Whether ``entry``'s ``sig`` is its HMAC by ``key`` (a rotation's first key: no entry left to sign again)."""
    entry_id, fields = entry
    return same_mac(fields.get(SIG_FIELD, ""), entry_sig(key, entry_id, fields))


def valid_entry(keys: Keys, entry: Entry, dialplan: str) -> bool:
    """Whether ``entry`` is a flag change of ``dialplan`` this store trusts (signed by one of ``keys``, when there
    are keys)."""
    fields = entry[1]
    if fields.get("dialplan") != dialplan or FLAG_FIELD not in fields:
        return False
    return _vouched(keys, entry)


def refusal(keys: Keys, dialplan: str, raw: Mapping[str, str], since: Sequence[Entry]) -> str | None:
    """None if the stored flag ``raw`` is obeyed, else why not. ``since``: the audit entries from the one ``raw``
    names on (oldest first; none if it names none, or none that is there)."""
    entry_id = raw.get(AUDIT_FIELD)
    if not entry_id:
        return "it names no audit entry (a write outside callbridge)"
    if not since or since[0][0] != entry_id:
        return f"its audit entry {entry_id} is not in the audit stream"
    fields = since[0][1]
    if fields.get("dialplan") != dialplan or FLAG_FIELD not in fields:
        return f"its audit entry {entry_id} is not a flag change of {dialplan}"
    if not _vouched(keys, since[0]):
        if not fields.get(SIG_FIELD):
            return f"its audit entry {entry_id} is not signed"
        return (
            f"its audit entry {entry_id} is not signed with a key of rollout_key here (another key, or changed since)"
        )
    if fields[FLAG_FIELD] != flag_text(raw):
        return f"it differs from its audit entry {entry_id}"
    later = next((e for e in since[1:] if valid_entry(keys, e, dialplan)), None)
    if later is not None:
        return f"a later audit entry ({later[0]}) changed it since"
    return None


def says_kill(raw: Mapping[str, str], since: Sequence[Entry]) -> bool:
    """Whether a refused stored flag ``raw``, or the audit entry it names (the first of ``since``, if it is that
    one), asks for the kill switch, or says something of it that cannot be read (as good as asking: a flag nothing
    vouches for may send calls to the safe variant, never away from it)."""
    flags: list[Mapping[str, object]] = [raw]
    entry_id = raw.get(AUDIT_FIELD)
    if entry_id and since and since[0][0] == entry_id and FLAG_FIELD in since[0][1]:
        try:
            held = json.loads(since[0][1][FLAG_FIELD])
        except ValueError:
            return True
        if not isinstance(held, dict):
            return True
        flags.append(held)
    for flag in flags:
        kill = flag.get("kill")
        if kill is None:
            continue
        word = str(kill).strip().lower()
        if word not in _FALSE:
            return True  # "1", or what is neither on nor off
    return False


def last_valid(keys: Keys, dialplan: str, newest_first: Sequence[Entry]) -> tuple[str, dict[str, str]] | None:
    """The last valid flag change of ``dialplan`` among ``newest_first``: (its entry id, the flag's hash fields)."""
    for entry in newest_first:
        if valid_entry(keys, entry, dialplan):
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


def json_sig(key: bytes, purpose: bytes, fields: Mapping[str, object], unsigned: Collection[str]) -> str:
    """The HMAC-SHA256 (hex) of a JSON document kept in Redis, under ``key`` for one ``purpose`` (a record's MAC is
    no attestation's): its fields but ``unsigned``, as canonical JSON."""
    body = json.dumps({k: v for k, v in fields.items() if k not in unsigned}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key + b"\x00" + purpose, body.encode(), hashlib.sha256).hexdigest()


def with_sig(
    keys: Keys, fields: Mapping[str, object], sig: Callable[[bytes, Mapping[str, object]], str]
) -> dict[str, Any]:
    """``fields`` with their ``sig`` by the first of ``keys`` (none without keys)."""
    out = {k: v for k, v in fields.items() if k != SIG_FIELD}
    if keys:
        out[SIG_FIELD] = sig(keys[0], out)
    return out


def record_sig(key: bytes, record: Mapping[str, object]) -> str:
    """The HMAC-SHA256 (hex) of an outcome record (or a re-arm entry): every field but those added on read."""
    return json_sig(key, b"outcome", record, RECORD_UNSIGNED)


def sign_record(keys: Keys, record: Mapping[str, object]) -> dict[str, object]:
    """``record`` with its ``sig`` by the first of ``keys`` (none without keys)."""
    return with_sig(keys, record, record_sig)


def record_refusal(keys: Keys, record: Mapping[str, object]) -> str | None:
    """None if ``record`` is evidence (signed with one of ``keys``; anything without keys), else why not:
    ``unsigned`` or ``bad signature`` (another key's, or changed since)."""
    if not keys:
        return None
    sig = record.get(SIG_FIELD)
    if not isinstance(sig, str) or not sig:
        return "unsigned"
    return None if any(same_mac(sig, record_sig(key, record)) for key in keys) else "bad signature"


def snapshot_sig(key: bytes, dialplan: str, spec: str, last_id: str, state: bytes) -> str:
    """The HMAC-SHA256 (hex) of a rollout engine's kept state: its plan, its spec's hash, its last entry and its bytes
    (``bridge.rollout.records``: a state is taken up only with a valid one)."""
    mac = hmac.new(key + b"\x00snapshot", json.dumps([dialplan, spec, last_id]).encode() + b"\x00", hashlib.sha256)
    mac.update(state)
    return mac.hexdigest()


def snapshot_valid(keys: Keys, dialplan: str, spec: str, last_id: str, state: bytes, sig: str) -> bool:
    """Is ``sig`` a kept state's signature by one of ``keys``?"""
    return any(same_mac(sig, snapshot_sig(k, dialplan, spec, last_id, state)) for k in keys)


def os_user() -> str:
    """The OS user this process runs as (by its uid: no environment variable can claim another)."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
