"""The call's context as a tool's server gets it, to authorize a call: who is calling (as the trunk vouches for it,
not as the model says), on which call and plan, and what a verifying tool returned. Signed in the Standard Webhooks
style (standardwebhooks.com, "Signature scheme"), so the business's server can tell it came from the bridge. Pure.

Each request of an HTTP tool, and each ``tools/call`` of an MCP tool, whose plan (``tool_context``) or tool
(``context``) names a secret (:class:`~bridge.tools.spec.ToolContext`) carries:

=================================  ==================================================================================
``callbridge-context``             the context: one line of JSON, ASCII only (:meth:`CallContext.document`)
``callbridge-context-id``          ``ctx_`` + 26 random characters, new for every request (a replayed one repeats it)
``callbridge-context-timestamp``   when it was signed, Unix seconds (the context's ``ts``)
``callbridge-context-signature``   ``v1,`` + base64(HMAC-SHA256(key, ``{id}.{timestamp}.{context}``))
=================================  ==================================================================================

The key is the bytes of the ``whsec_`` + base64 secret, as a Standard Webhooks secret's: the ``standardwebhooks``
package verifies a context with the headers renamed (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``)
and the context as the payload. An MCP tool's ``tools/call`` carries the same four in its request's
``params._meta`` (``callbridge/context``, ``callbridge/context-id``, ...) and as headers of its HTTP request.

The context::

    {"v": 1, "call_id": "...", "dialplan": "orders", "tool": "order_status", "called": "4300",
     "caller": "+15551234567", "caller_form": "full", "ts": 1700000000,
     "verified": {"tool": "verify_customer", "customer_id": "C-123"},
     "request": {"method": "GET", "url": "https://crm.example/orders?order=A-1", "sha256": "e3b0c442..."}}

``caller`` is the number the SIP side took the call from, ``full`` or ``masked`` (:func:`caller_form`); ``verified``
is null until a verifying tool of the plan (``verifiers``) succeeded in this call, then what it returned that the plan
names (the latest verification's fields win). ``request`` (:class:`SignedRequest`) binds the signature to the one
request that carries it, so a context cannot be moved onto other arguments, another URL or another method:

* an HTTP tool: ``method`` its HTTP method, ``url`` the URL as sent (the query with the arguments included, as the
  server's request line and ``Host`` give it), ``sha256`` the lower-case hex SHA-256 of the body's bytes as sent
  (a ``GET`` or ``DELETE`` has none: the SHA-256 of nothing, ``e3b0c442...b855``; its arguments are in the URL);
* an MCP tool: ``method`` ``tools/call``, ``url`` the server's URL, ``sha256`` that of the call's ``arguments`` as
  canonical JSON (:func:`canonical_json`: keys sorted, no blanks, ASCII with ``\\uXXXX`` escapes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from bridge.privacy.masking import mask_number

SECRET_PREFIX: Final = "whsec_"
VERSION: Final = "v1"
CONTEXT_HEADER, ID_HEADER = "callbridge-context", "callbridge-context-id"
TIMESTAMP_HEADER, SIGNATURE_HEADER = "callbridge-context-timestamp", "callbridge-context-signature"
HEADERS: Final = (CONTEXT_HEADER, ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)
META: Final = {h: "callbridge/" + h.removeprefix("callbridge-") for h in HEADERS}  # an MCP request's _meta keys
MASKED_DIGITS: Final = 4  # the digits a masked caller keeps where the plan's logs keep numbers whole
Form = Literal["full", "masked"]


def canonical_json(value: Any) -> bytes:
    """``value`` as the digest of an MCP call's arguments reads it: ``json.dumps(value, sort_keys=True,
    separators=(",", ":"), ensure_ascii=True)``, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class SignedRequest:
    """The request a context is signed for: ``method``, ``url`` and the bytes whose SHA-256 it carries."""

    method: str
    url: str
    content: bytes = b""

    @classmethod
    def mcp(cls, url: str, arguments: dict[str, Any]) -> SignedRequest:
        """An MCP ``tools/call`` at the server ``url`` with ``arguments``."""
        return cls("tools/call", url, canonical_json(arguments))

    def digest(self) -> dict[str, str]:
        return {"method": self.method, "url": self.url, "sha256": hashlib.sha256(self.content).hexdigest()}


def caller_form(setting: str, url: str) -> Form:
    """How a tool at ``url`` gets the caller's number: ``full`` or ``masked`` as set, or for ``auto`` full only
    over ``https://`` or to a loopback address (the number never crosses a network in clear text)."""
    if setting in ("full", "masked"):
        return "full" if setting == "full" else "masked"
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme == "https" or host == "localhost":
        return "full"
    try:
        return "full" if ipaddress.ip_address(host).is_loopback else "masked"
    except ValueError:
        return "masked"


@dataclass
class CallContext:
    """One call's context: fixed when the call is set up, but for what verifying tools return (:meth:`verify`)."""

    call_id: str = ""
    caller: str = ""  # as the SIP side took it (the trunk's identity of the caller)
    called: str = ""
    dialplan: str = ""
    caller_visible_digits: int | None = MASKED_DIGITS  # the plan's privacy: what a masked caller keeps
    verified: dict[str, Any] = field(default_factory=dict)  # {"tool", <field>: value}: the latest verification's
    passed: set[str] = field(default_factory=set)  # the verifying tools that succeeded in this call

    def caller_as(self, form: Form) -> str:
        if form == "full":
            return self.caller
        visible = self.caller_visible_digits
        return mask_number(self.caller, MASKED_DIGITS if visible is None else visible)

    def value(self, path: str, form: Form) -> tuple[bool, Any]:
        """(found, the value) of ``path`` (``call_id``, ``caller``, ``called``, ``dialplan``, ``verified.<field>``)."""
        if path.startswith("verified."):
            name = path.removeprefix("verified.")
            found = name in self.verified and self.verified[name] is not None
            return found, self.verified.get(name)
        if path == "caller":
            return True, self.caller_as(form)
        return True, getattr(self, path)

    def verify(self, tool: str, fields: dict[str, Any]) -> None:
        """``tool`` verified the caller and returned ``fields`` (those the plan keeps)."""
        self.passed.add(tool)
        self.verified = {**self.verified, **fields, "tool": tool}

    def document(self, tool: str, form: Form, ts: int, request: SignedRequest | None = None) -> dict[str, Any]:
        """The context ``request`` of ``tool`` carries, signed at ``ts`` (``request`` null: none named)."""
        return {
            "v": 1,
            "call_id": self.call_id,
            "dialplan": self.dialplan,
            "tool": tool,
            "called": self.called,
            "caller": self.caller_as(form),
            "caller_form": form,
            "ts": ts,
            "verified": self.verified or None,
            "request": request.digest() if request is not None else None,
        }


def context_key(secret: str) -> bytes:
    """The key of a ``whsec_<base64>`` secret. Raises ValueError (never quoting the secret)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a context secret starts with {SECRET_PREFIX} (then the base64 of 24 to 64 bytes)")
    text = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"a context secret is {SECRET_PREFIX} then base64: this one is not base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"a context secret's key must be 24 to 64 bytes (this one has {len(key)})")
    return key


def sign(key: bytes, context_id: str, timestamp: int, context: str) -> str:
    """``v1,<base64 HMAC-SHA256 of id.timestamp.context>``."""
    mac = hmac.new(key, f"{context_id}.{timestamp}.{context}".encode(), hashlib.sha256).digest()
    return f"{VERSION},{base64.b64encode(mac).decode()}"


def signed(key: bytes, document: dict[str, Any]) -> dict[str, str]:
    """The four headers of one request carrying ``document`` (its ``ts`` is the signature's timestamp)."""
    context_id = "ctx_" + base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=True)
    timestamp = int(document["ts"])
    return {
        CONTEXT_HEADER: text,
        ID_HEADER: context_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(key, context_id, timestamp, text),
    }


def now() -> int:
    return int(time.time())
