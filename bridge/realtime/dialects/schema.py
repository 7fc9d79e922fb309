"""A small validator for client JSON that fails the way the Realtime service does.

The dialect tables describe what the service accepts with it (``Service.session_schema`` and friends); the
emulator checks every client event against them.

Each node checks one value and raises :class:`ClientError` carrying the service's ``error`` fields: ``type``
(``invalid_request_error``), ``code`` (``unknown_parameter``, ``missing_required_parameter``, ``invalid_type``,
``invalid_value``), a message in the service's wording, and ``param`` (the dotted path, e.g.
``session.audio.input.format.rate``, ``session.tools[0].name``).

Objects validate their keys before their values, unknown keys first ("Unknown parameter: 'session.modalities'."),
then required ones ("Missing required parameter: 'session.type'."). :func:`merge` applies a validated partial
update onto a stored object the way ``session.update`` does: nested objects marked ``merge`` are merged key by key,
every other value is replaced whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any


class ClientError(Exception):
    """A client event the service would answer with an ``error`` event (never fatal)."""

    def __init__(
        self, code: str, message: str, param: str | None = None, error_type: str = "invalid_request_error"
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.error_type = error_type


# What a JSON value is called in the service's error messages, by its Python type (bool before int: a bool is one)
_KINDS: tuple[tuple[type, str], ...] = (
    (type(None), "null"),
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a decimal"),
    (str, "a string"),
    (list, "an array"),
    (dict, "an object"),
)


def _kind(value: Any) -> str:
    return next((name for kind, name in _KINDS if isinstance(value, kind)), type(value).__name__)


def _show(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else str(value)


def invalid_type(path: str, expected: str, value: Any) -> ClientError:
    return ClientError(
        "invalid_type", f"Invalid type for '{path}': expected {expected}, but got {_kind(value)} instead.", path
    )


def invalid_value(path: str, value: Any, supported: Iterable[Any] | None = None, detail: str = "") -> ClientError:
    message = f"Invalid value: {_show(value)}."
    if supported is not None:
        message += " Supported values are: " + ", ".join(_show(v) for v in supported) + "."
    if detail:
        message += " " + detail
    return ClientError("invalid_value", message, path)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class Node:
    """Checks one JSON value; returns the value to store (objects may gain defaults)."""

    expected = "a value"

    def check(self, value: Any, path: str) -> Any:
        raise NotImplementedError


class AnyValue(Node):
    def check(self, value: Any, path: str) -> Any:
        return value


class OfType(Node):
    """A value of one Python type (:attr:`kind`), as it is."""

    kind: type = object

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, self.kind):
            raise invalid_type(path, self.expected, value)
        return value


class Str(OfType):
    expected = "a string"
    kind = str


class Bool(OfType):
    expected = "a boolean"
    kind = bool


class Num(Node):
    """A number in [lo, hi]; ``integer`` rejects decimals."""

    def __init__(self, lo: float | None = None, hi: float | None = None, *, integer: bool = False) -> None:
        self.lo, self.hi, self.integer = lo, hi, integer
        self.expected = "an integer" if integer else "a number"

    def check(self, value: Any, path: str) -> Any:
        ok = isinstance(value, int) if self.integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok:
            raise invalid_type(path, self.expected, value)
        what = "integer" if self.integer else "decimal"
        if self.lo is not None and value < self.lo:
            raise ClientError(
                "invalid_value",
                f"Invalid '{path}': {what} below minimum value. Expected a value >= {self.lo:g}, "
                f"but got {value} instead.",
                path,
            )
        if self.hi is not None and value > self.hi:
            raise ClientError(
                "invalid_value",
                f"Invalid '{path}': {what} above maximum value. Expected a value <= {self.hi:g}, "
                f"but got {value} instead.",
                path,
            )
        return value


def Int(lo: float | None = None, hi: float | None = None) -> Num:
    return Num(lo, hi, integer=True)


class Enum(Node):
    def __init__(self, *values: Any) -> None:
        self.values = values
        self.expected = "one of " + ", ".join(_show(v) for v in values)

    def check(self, value: Any, path: str) -> Any:
        if isinstance(value, bool) or value not in self.values:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise invalid_type(path, "a string" if isinstance(self.values[0], str) else "a number", value)
            raise invalid_value(path, value, self.values)
        return value


class Nullable(Node):
    def __init__(self, inner: Node) -> None:
        self.inner = inner
        self.expected = inner.expected

    def check(self, value: Any, path: str) -> Any:
        return None if value is None else self.inner.check(value, path)


class ListOf(Node):
    expected = "an array"

    def __init__(self, inner: Node, *, check: Callable[[list[Any], str], None] | None = None) -> None:
        self.inner = inner
        self.extra_check = check

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise invalid_type(path, self.expected, value)
        out = [self.inner.check(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if self.extra_check is not None:
            self.extra_check(out, path)
        return out


class OneOf(Node):
    """The first alternative that accepts the value wins; else the first alternative's error."""

    def __init__(self, *alternatives: Node) -> None:
        self.alternatives = alternatives
        self.expected = " or ".join(a.expected for a in alternatives)

    def check(self, value: Any, path: str) -> Any:
        first: ClientError | None = None
        for alt in self.alternatives:
            try:
                return alt.check(value, path)
            except ClientError as exc:
                first = first or exc
        assert first is not None
        raise first


class Obj(Node):
    """A JSON object with known keys. ``defaults`` fill keys the client left out (when the object is new or replaced
    whole); ``merge`` makes :func:`merge` combine it key by key with the stored value; ``open`` accepts any key."""

    expected = "an object"

    def __init__(
        self,
        fields: Mapping[str, Node],
        *,
        required: Iterable[str] = (),
        defaults: Mapping[str, Any] | None = None,
        merge: bool = False,
        open: bool = False,
    ) -> None:
        self.fields = dict(fields)
        self.required = tuple(required)
        self.defaults = dict(defaults or {})
        self.merge = merge
        self.open = open

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise invalid_type(path, self.expected, value)
        if not self.open:
            for key in value:
                if key not in self.fields:
                    name = _join(path, key)
                    raise ClientError("unknown_parameter", f"Unknown parameter: '{name}'.", name)
        for key in self.required:
            if key not in value:
                name = _join(path, key)
                raise ClientError("missing_required_parameter", f"Missing required parameter: '{name}'.", name)
        out = {k: v for k, v in self.defaults.items() if not self.merge}
        for key, item in value.items():
            node = self.fields.get(key)
            out[key] = node.check(item, _join(path, key)) if node is not None else item
        return out


class Tagged(Node):
    """An object whose ``key`` (usually ``type``) picks its schema; ``default`` is used when the key is absent."""

    expected = "an object"

    def __init__(self, key: str, variants: Mapping[str, Obj], *, default: str | None = None) -> None:
        self.key = key
        self.variants = dict(variants)
        self.default = default

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise invalid_type(path, self.expected, value)
        tag = value.get(self.key, self.default)
        if tag is None:
            name = _join(path, self.key)
            raise ClientError("missing_required_parameter", f"Missing required parameter: '{name}'.", name)
        if not isinstance(tag, str):
            raise invalid_type(_join(path, self.key), "a string", tag)
        variant = self.variants.get(tag)
        if variant is None:
            raise invalid_value(_join(path, self.key), tag, self.variants)
        out: dict[str, Any] = variant.check({**value, self.key: tag}, path)
        return out


def merge(stored: Any, update: Any, node: Node | None) -> Any:
    """``update`` (already checked by ``node``) applied onto ``stored``."""
    if isinstance(node, Nullable):
        node = node.inner
    if isinstance(node, Obj) and node.merge and isinstance(stored, dict) and isinstance(update, dict):
        out = dict(stored)
        for key, value in update.items():
            out[key] = merge(stored.get(key), value, node.fields.get(key))
        return out
    return update
