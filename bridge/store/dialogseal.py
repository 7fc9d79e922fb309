"""A call's SIP dialog as its Redis hash keeps it (``sip_dialog``): sealed, so that Redis holds no caller's number.

The dialog (Call-ID, both tags, the caller's From, To and Contact URIs, the route set: :class:`bridge.sip.sipmsg.
Dialog`) is what lets whoever finds the call orphaned (the restarted worker, ``serve``'s pool, another node's reaper)
send the caller a BYE (:mod:`bridge.sip.orphans`). Its URIs name the caller, so the hash keeps it sealed:
AES-256-GCM (NIST SP 800-38D) under a key derived from the node's ``listen_key`` with HKDF-SHA256 (RFC 5869, info
:data:`PURPOSE`), a random 96-bit nonce per dialog, and the call's id as associated data (a dialog moved to another
call's hash does not open). Stored as text: :data:`VERSION` and the base64url of nonce and ciphertext (tag included).

GCM also authenticates: a dialog written straight into Redis, or altered there, does not open, so nobody who can
write to Redis can aim a worker's BYE at an address of their choosing. A reader that cannot open one (sealed under
another ``listen_key``: every node that reaps another's calls must share it) logs a WARNING naming the call, counts
it (``callbridge_sip_dialogs_unopened``) and goes on: the call's record is closed all the same, without the BYE.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from collections.abc import Iterable
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bridge import metrics

log = logging.getLogger("bridge.store")

PURPOSE: Final = b"callbridge sip-dialog v1"  # HKDF's info: this key seals dialogs and nothing else
VERSION: Final = "v1:"
KEY_BYTES: Final = 32  # AES-256
NONCE_BYTES: Final = 12  # GCM's 96-bit IV (SP 800-38D §8.2.2: random, never reused under one key)
TAG_BYTES: Final = 16


class DialogSeal:
    """Seals and opens the ``sip_dialog`` of calls under one node's ``listen_key`` (its bytes)."""

    def __init__(self, listen_key: bytes) -> None:
        if not listen_key:
            raise ValueError("a dialog seal needs a listen_key")
        hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=PURPOSE)
        self._aead = AESGCM(hkdf.derive(listen_key))

    @classmethod
    def under(cls, listen_key: str | None) -> DialogSeal:
        """The seal of a node whose ``listen_key`` setting is this (``serve`` gives its workers one, its own or a
        random one); None, a process started without ``serve``: a random key, so what it seals only it opens."""
        return cls(listen_key.encode() if listen_key else secrets.token_bytes(KEY_BYTES))

    def seal(self, call_id: str, dialog: str) -> str:
        """``dialog`` (its JSON text) sealed for the hash of ``call_id``: ``v1:`` and base64url, no padding."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, dialog.encode(), call_id.encode())
        return VERSION + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def open(self, call_id: str, stored: str) -> str | None:
        """The dialog's JSON text, or None if ``stored`` is not a dialog this key sealed for ``call_id`` (another
        key, another call, altered, not sealed at all)."""
        if not stored.startswith(VERSION):
            return None
        body = stored[len(VERSION) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) < NONCE_BYTES + TAG_BYTES:
            return None
        try:
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], call_id.encode())
        except InvalidTag:
            return None
        try:
            return plain.decode()
        except UnicodeDecodeError:
            return None

    def open_all(self, stored: Iterable[tuple[str, str]]) -> list[str]:
        """The dialogs of ``(call id, stored sip_dialog)`` pairs that open (an empty one is skipped: the call was
        never answered); each that does not is a WARNING and a count, and is left out."""
        opened = []
        for call_id, text in stored:
            if not text:
                continue
            dialog = self.open(call_id, text)
            if dialog is None:
                metrics.SIP_DIALOGS_UNOPENED.inc()
                log.warning(
                    "call %s: its stored SIP dialog does not open with this node's listen_key (sealed by a node "
                    "with another listen_key, or altered in Redis): no BYE sent to its caller; listen_key must be "
                    "the same on every node that reaps another's calls",
                    call_id,
                )
                continue
            opened.append(dialog)
        return opened
