"""One error tree for the bridge, and the pure classification of remote failures.

::

    BridgeError                      (base; never carries a secret in its message)
    ├── ConfigError                  bad dialplan / call script / settings: names the file and the field
    │   ├── ConfigErrors             several at once (every bad setting), each a ConfigError
    │   └── DialectFieldError        a profile field the target dialect does not have
    ├── LocalProtocolError           we were about to send something invalid (a bug on our side)
    └── RemoteError                  the peer failed; ``error_class`` + ``retryable`` decide recovery
        ├── RemoteProtocolError      the peer sent garbage
        └── ConnectError             the Realtime socket could not be opened or was lost
            └── ModelRefused         the service refuses the model itself (not found, retired, not allowed)

Recovery keys off :class:`bridge.events.ErrorClass` (network, auth, protocol, server) and a ``retryable`` flag:
a network blip reconnects with the same credential, an auth or session failure gets a fresh credential.
A :class:`ModelRefused` is no outage: the service is up and says no to one model, so a worker neither counts it
toward its circuit breaker nor retries that model; the call moves to another variant (``bridge.serve.variant``).
"""

from __future__ import annotations

import re

from bridge.events import ErrorClass

# Anything that looks like an OpenAI key, an ephemeral client secret, or a bearer header value.
_SECRET = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|ek_[A-Za-z0-9_\-]{6,}|(?i:bearer)\s+[A-Za-z0-9_\-.]{6,})")


def redact(text: str, *secrets: str) -> str:
    """Remove credentials from ``text``: known ``secrets`` verbatim, and anything shaped like a key."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _SECRET.sub("[redacted]", text)


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """Invalid configuration. ``source`` is the file (or "profile"), ``field`` the dotted field path."""

    def __init__(self, source: str, field: str, message: str) -> None:
        self.source = source
        self.field = field
        self.message = message
        super().__init__(f"{source}: {field}: {message}")


class ConfigErrors(ConfigError):
    """Several configuration errors found at once; the first is this error's own source, field and message."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__(errors[0].source, errors[0].field, errors[0].message)
        self.errors = errors

    def __str__(self) -> str:
        return f"{len(self.errors)} errors:\n" + "\n".join(f"  {e}" for e in self.errors)


class DialectFieldError(ConfigError):
    def __init__(self, dialect: str, field: str, message: str | None = None) -> None:
        super().__init__(f"dialect {dialect}", field, message or f"the {dialect} dialect has no field {field!r}")
        self.dialect = dialect


class LocalProtocolError(BridgeError):
    pass


class RemoteError(BridgeError):
    def __init__(self, error_class: ErrorClass, message: str, *, retryable: bool, code: str = "") -> None:
        super().__init__(redact(message))
        self.error_class = error_class
        self.retryable = retryable
        self.code = code


class RemoteProtocolError(RemoteError):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorClass.PROTOCOL, message, retryable=False)


class ConnectError(RemoteError):
    pass


class ModelRefused(ConnectError):
    """The service refused ``model`` (an ``error`` event whose code is in :data:`REFUSAL_CODES`): never retryable
    on that model, and not a network failure."""

    def __init__(self, model: str, code: str, message: str = "") -> None:
        text = f"model {model} refused: {code}" + (f" ({message})" if message else "")
        super().__init__(ErrorClass.PROTOCOL, text, retryable=False, code=code)
        self.model = model


# --------------------------------------------------------------------------------------------------------------
# Pure classification

# The service's answers that refuse a model rather than a request: ``model_not_found`` (Realtime; also a retired
# or unannounced model, and one the project may not use), ``invalid_model`` (GPT-Live: a Realtime model on its endpoint
# or the reverse), ``model_not_allowed``/``model_deprecated`` (a project's model allow-list, a retired snapshot).
REFUSAL_CODES = frozenset({"model_not_found", "invalid_model", "model_not_allowed", "model_deprecated"})
_AUTH_CODES = {"invalid_api_key", "invalid_client_secret", "expired_client_secret", "unauthorized", "forbidden"}
_SERVER_RETRYABLE_CODES = {"session_expired", "server_error", "rate_limit_exceeded", "overloaded"}


def classify_server_error(error_type: str, code: str | None) -> tuple[ErrorClass, bool]:
    """Map an ``error`` event's ``error.type`` / ``error.code`` to (class, retryable)."""
    code = code or ""
    if error_type in {"authentication_error", "permission_error"} or code in _AUTH_CODES:
        return ErrorClass.AUTH, True  # retryable with a fresh credential
    if code in _SERVER_RETRYABLE_CODES or error_type in {"server_error", "rate_limit_error"}:
        return ErrorClass.SERVER, True
    return ErrorClass.PROTOCOL, False


def is_refusal(code: str | None) -> bool:
    """Does an ``error`` event with ``code`` refuse the model itself (see :data:`REFUSAL_CODES`)?"""
    return (code or "") in REFUSAL_CODES


def classify_close(code: int | None) -> tuple[ErrorClass | None, bool]:
    """Map a WebSocket close code (RFC 6455 §7.4, plus the service's 3000/4000) to (class, retryable).

    ``(None, False)`` is a normal close (1000).
    """
    if code == 1000:
        return None, False
    if code is None or code in {1006, 1012, 1013, 1014}:  # abnormal / restart / try again later / bad gateway
        return ErrorClass.NETWORK, True
    if code in {1001, 1011}:  # going away (session cap) / internal error
        return ErrorClass.SERVER, True
    if code in {3000, 4001, 4003, 1008}:  # bad or missing key, policy violation
        return ErrorClass.AUTH, True
    return ErrorClass.PROTOCOL, False  # 4000 bad model / beta shape disabled, 1002, 1003, 1007, 1009, ...


def classify_http_status(status: int) -> tuple[ErrorClass, bool]:
    """Classify a failed WebSocket upgrade or credential request by its HTTP status."""
    if status in {401, 403}:
        return ErrorClass.AUTH, True
    if status == 429 or status >= 500:
        return ErrorClass.SERVER, True
    return ErrorClass.PROTOCOL, False
