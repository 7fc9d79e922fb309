"""Standard Webhooks signatures (standardwebhooks.com, "Signature scheme"). Pure.

The secret is ``whsec_`` followed by the base64 of its bytes. The signature of one attempt is
``v1,`` + base64(HMAC-SHA256(secret bytes, ``{webhook-id}.{webhook-timestamp}.{body}``)); the timestamp is the
attempt's, in Unix seconds, so a receiver that rejects old timestamps (about 5 minutes) still takes a retry hours
later. The ``webhook-id`` stays the same over every attempt of one event: receivers de-duplicate by it.

A delivery waits in Redis sealed (:func:`queue_seal`): an HMAC-SHA256 of what is sent (its id, endpoint, type, body,
call and place) under a key derived from the node's ``listen_key`` (:func:`queue_key`), which ``serve`` and its
workers alone hold; the deliverer sends only what the seal holds for, so a writer of Redis cannot queue its own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from typing import Final

SECRET_PREFIX: Final = "whsec_"
VERSION: Final = "v1"
ID_PREFIX: Final = "msg_"
ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER = "webhook-id", "webhook-timestamp", "webhook-signature"


def secret_bytes(secret: str) -> bytes:
    """The key of a ``whsec_<base64>`` secret. Raises ValueError (never quoting the secret)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX} (then the base64 of 24 to 64 bytes)")
    try:
        text = secret[len(SECRET_PREFIX) :]
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)  # unpadded base64 is taken too
    except (binascii.Error, ValueError):
        raise ValueError(f"a webhook secret is {SECRET_PREFIX} then base64: this one is not base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"a webhook secret's key must be 24 to 64 bytes (this one has {len(key)})")
    return key


def new_secret() -> str:
    """A fresh ``whsec_`` secret of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def new_id() -> str:
    """A new event id (``msg_`` + 26 random base32 characters)."""
    return ID_PREFIX + base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of id.timestamp.body>``."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return f"{VERSION},{base64.b64encode(mac).decode()}"


def headers(key: bytes, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers of one attempt (``timestamp``: now)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: sign(key, msg_id, ts, body),
        "content-type": "application/json",
    }


def queue_key(listen_key: str | None) -> bytes | None:
    """The key that seals queued deliveries, derived from the node's ``listen_key`` (None: none, nothing sealed)."""
    if not listen_key:
        return None
    return hmac.new(listen_key.encode(), b"callbridge webhook queue seal", hashlib.sha256).digest()


def queue_seal(key: bytes, parts: Sequence[str | int]) -> str:
    """The seal (hex HMAC-SHA256 under :func:`queue_key`'s key) of a queued delivery's ``parts``."""
    text = json.dumps(list(parts), separators=(",", ":"), ensure_ascii=False)
    return hmac.new(key, text.encode("utf-8", "replace"), hashlib.sha256).hexdigest()


def seal_holds(key: bytes, parts: Sequence[str | int], seal: object) -> bool:
    """Whether ``seal`` (as read from Redis: anything) is the seal of ``parts``, compared in constant time."""
    return isinstance(seal, str) and seal.isascii() and hmac.compare_digest(seal, queue_seal(key, parts))
