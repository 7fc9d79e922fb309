"""A dialplan's business tools, as data: pure (no I/O at import, none in validation).

An HTTP tool (``http_tools`` in a dialplan) is a function the model may call, with a JSON Schema for its arguments,
that the bridge carries out as one HTTP request::

    http_tools:
      - name: order_status
        description: Look up an order by its number.
        parameters: {type: object, properties: {order: {type: string}}, required: [order]}
        url: https://orders.example.com/status
        method: GET                      # GET/HEAD/PUT/DELETE are idempotent: retried; POST/PATCH never
        headers: {Authorization: {env: ORDERS_TOKEN, prefix: "Bearer "}}   # or {file: /run/secrets/x}, or text
        timeout_s: 3                     # the whole call, retries included
        retries: 1
        max_response_bytes: 65536
        expect_s: 4                      # a slow tool: the agent says what it is doing first
        pin: {customer_id: verified.customer_id}   # set by the bridge from the call's context, never by the model
        verify_before: verify_customer   # not called until that tool has verified the caller in this call
        context: {secret: {env: ORDERS_CONTEXT_SECRET}, caller: auto}   # the signed call context (else the plan's)

The arguments go into the query string (GET, HEAD, DELETE) or a JSON body, and only the declared ones: unless the
tool says ``extra_arguments: true``, its schema is closed (:func:`closed`: ``additionalProperties: false`` on the
arguments' object and every object in it that does not say otherwise), in what the model sees and in the check of
what it sends, and a call with an undeclared argument is refused (``bad_arguments`` naming them; nothing is sent).
A name the URL's query already fixes (``?account=acme``) may not be declared (the plan is refused at load) and is
never sent again: a call that carries it anyway is refused. An MCP server's tools are closed the same way.

The answer must be JSON; it goes back to the model as the tool's output. Every failure is a :class:`ToolOutcome`
with a typed error (``timeout``, ``http_status``, ``too_large``, ``not_json``, ``unreachable``, ``bad_arguments``)
whose ``message`` the agent can say.
Secret header values are read when a call needs them and never logged, stored or put into an outcome.

What a tool needs to authorize a call (:mod:`bridge.tools.context`, :mod:`bridge.tools.guard`): the call's context
(:class:`ToolContext`: signed with a secret the plan names, the caller's number ``full`` or ``masked``), the
arguments a plan pins to that context (``pin``: out of the schema the model sees, set by the bridge on every call)
and the verification a tool waits for (``verify_before``: the tool is not called until then; ``unverified``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from bridge.realtime.profile import Tool

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
IN_QUERY = frozenset({"GET", "HEAD", "DELETE"})
ErrorType = Literal[
    "timeout", "http_status", "too_large", "not_json", "unreachable", "bad_arguments", "tool_error", "unverified"
]
CONTEXT_VALUES = ("call_id", "caller", "called", "dialplan")  # what a pin may name, beside verified.<field>
PIN_PATH = re.compile(rf"^(?:{'|'.join(CONTEXT_VALUES)}|verified\.[A-Za-z_][A-Za-z0-9_]{{0,63}})$")
CallerForm = Literal["auto", "full", "masked"]


class Header(BaseModel):
    """A header value: plain ``text`` (a plain string in the dialplan), or a secret read when a call needs it from
    the environment (``env``, or the file ``<env>_FILE`` names: :class:`bridge.config.Secret`) or a file (``file``,
    stripped), after ``prefix``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    text: str | None = None
    env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    file: str | None = None
    prefix: str = ""

    @model_validator(mode="before")
    @classmethod
    def _plain(cls, value: Any) -> Any:
        return {"text": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_source(self) -> Header:
        if sum(v is not None for v in (self.text, self.env, self.file)) != 1:
            raise ValueError("a header is a string, or names exactly one of env or file")
        return self


class ToolContext(BaseModel):
    """The signed call context a tool's requests carry (:mod:`bridge.tools.context`): ``secret`` (a ``whsec_``
    secret named by ``env``, or its ``_FILE``, or ``file``; never written in the plan; none: no context is sent) and
    the ``caller``'s number in it: ``full``, ``masked`` (as the plan's logs keep it), or ``auto``: full only to an
    ``https://`` or loopback URL, masked otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    secret: Header | None = None
    caller: CallerForm = "auto"

    @model_validator(mode="after")
    def _secret_by_reference(self) -> ToolContext:
        if self.secret is not None and (self.secret.text is not None or self.secret.prefix):
            raise ValueError("secret: name env or file (a secret is never written in a dialplan)")
        return self


def check_pins(pins: dict[str, str]) -> dict[str, str]:
    """``pin``: argument name -> a value of the call's context (:data:`CONTEXT_VALUES`, or ``verified.<field>``)."""
    for name, path in pins.items():
        if not PIN_PATH.match(path):
            known = ", ".join((*CONTEXT_VALUES, "verified.<field>"))
            raise ValueError(f"{name}: {path!r} is no value of the call's context ({known})")
    return pins


def unpinned(schema: dict[str, Any], pinned: Iterable[str]) -> dict[str, Any]:
    """``schema`` without the arguments in ``pinned``: the model neither sees nor fills them."""
    names = set(pinned)
    properties = schema.get("properties")
    if not names or not isinstance(properties, dict):
        return schema
    out = {**schema, "properties": {k: v for k, v in properties.items() if k not in names}}
    if isinstance(schema.get("required"), list):
        out["required"] = [r for r in schema["required"] if r not in names]
    return out


def check_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` if it is a valid JSON Schema (2020-12) of an object; else ValueError saying why."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise ValueError(f"not a valid JSON Schema{f' at {where}' if where else ''}: {exc.message}") from None
    if schema.get("type") != "object":
        raise ValueError("the arguments' schema must have type: object")
    return schema


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of an arguments' ``schema`` that allows no undeclared property: ``additionalProperties: false`` at its
    top, and on every object schema under ``properties``, ``items``, ``prefixItems`` and ``$defs`` that does not
    say otherwise (``allOf``/``anyOf``/``oneOf`` are left alone: closing their parts would refuse everything)."""

    def close(node: Any, top: bool) -> Any:
        if not isinstance(node, dict):
            return node
        out = dict(node)
        if top or ((node.get("type") == "object" or "properties" in node) and "additionalProperties" not in node):
            out["additionalProperties"] = False
        if isinstance(node.get("properties"), dict):
            out["properties"] = {k: close(v, False) for k, v in node["properties"].items()}
        if isinstance(node.get("$defs"), dict):
            out["$defs"] = {k: close(v, False) for k, v in node["$defs"].items()}
        if isinstance(node.get("items"), dict):
            out["items"] = close(node["items"], False)
        if isinstance(node.get("prefixItems"), list):
            out["prefixItems"] = [close(v, False) for v in node["prefixItems"]]
        return out

    result: dict[str, Any] = close(schema, True)
    return result


def url_fixed(url: str) -> frozenset[str]:
    """The argument names ``url``'s query already fixes (``?account=acme``: ``account``)."""
    return frozenset(parse_qs(urlsplit(url).query, keep_blank_values=True))


def check_header_names(headers: dict[str, Header]) -> dict[str, Header]:
    for name in headers:
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):  # RFC 9110 5.1: a token
            raise ValueError(f"{name!r} is not a header name")
    return headers


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"not an http(s) URL with a host: {url!r}")
    if parts.username or parts.password:
        raise ValueError("credentials in the URL would be logged: put them in headers from env or file")
    return url


class HttpTool(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str = ""
    extra_arguments: bool = False  # true: the model may send arguments ``parameters`` does not declare
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    url: str
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, Header] = Field(default_factory=dict)
    timeout_s: float = Field(3.0, gt=0, le=60)
    retries: int = Field(1, ge=0, le=5)  # idempotent methods only
    max_response_bytes: int = Field(65_536, ge=64, le=4 * 1024 * 1024)
    expect_s: float | None = Field(None, gt=0, le=120)  # announced as slow: the agent says what it is doing first
    unavailable: str = ""  # what the agent says when the tool fails ("" -> "the NAME service did not answer")
    announce: str = ""  # with expect_s: what the agent says at once ("" -> a line naming the expected wait)
    sensitive: bool = False  # its arguments are never stored (events, report, recording, logs); its output masked
    pin: dict[str, str] = Field(default_factory=dict)  # argument -> a value of the call's context, set by the bridge
    verify_before: str | None = Field(None, pattern=r"^[a-zA-Z0-9_-]{1,64}$")  # that tool must have verified first
    context: ToolContext | None = None  # the signed call context (None: the plan's tool_context)

    _check_headers = field_validator("headers")(check_header_names)
    _check_pins = field_validator("pin")(check_pins)

    @field_validator("parameters")
    @classmethod
    def _check_parameters(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        check_schema(value)
        extra = value.get("additionalProperties", False)
        if extra is not False and not info.data.get("extra_arguments"):
            raise ValueError(
                f"additionalProperties is {json.dumps(extra)}: the model could send arguments the tool does not "
                "declare; declare them, or set extra_arguments: true on the tool"
            )
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str, info: ValidationInfo) -> str:
        check_url(value)
        declared = (info.data.get("parameters") or {}).get("properties") or {}
        both = sorted(url_fixed(value) & set(declared))
        if both:
            raise ValueError(
                f"its query fixes {', '.join(both)}, which parameters.properties also declares: an argument may "
                "not override the URL (drop it from one of them)"
            )
        return value

    @model_validator(mode="after")
    def _pins_declared(self) -> HttpTool:
        declared = self.parameters.get("properties") or {}
        undeclared = sorted(set(self.pin) - set(declared))
        if undeclared:
            why = "a pinned argument is declared, with its type, and taken out of what the model sees"
            raise ValueError(f"pin: {', '.join(undeclared)} not in parameters.properties ({why})")
        if self.verify_before == self.name:
            raise ValueError("verify_before: a tool cannot wait for itself")
        return self

    @property
    def full_schema(self) -> dict[str, Any]:
        """The arguments' schema a call is checked against once its pinned arguments are set (:func:`closed` unless
        ``extra_arguments``)."""
        return self.parameters if self.extra_arguments else closed(self.parameters)

    @property
    def arguments_schema(self) -> dict[str, Any]:
        """The arguments' schema the model sees and its calls are checked against: :attr:`full_schema` without the
        pinned arguments."""
        return unpinned(self.full_schema, self.pin)

    @property
    def fixed(self) -> frozenset[str]:
        """The argument names the URL fixes: never sent again."""
        return url_fixed(self.url)

    @property
    def idempotent(self) -> bool:
        return self.method in IDEMPOTENT

    @property
    def attempts(self) -> int:
        return 1 + (self.retries if self.idempotent else 0)

    def definition(self) -> Tool:
        """The function the model sees."""
        return Tool(name=self.name, description=self.description, parameters=self.arguments_schema)

    def announcement(self) -> str | None:
        """The line said as the call starts, for a tool that declared itself slow (``expect_s``)."""
        if self.expect_s is None:
            return None
        return self.announce or f"Let me look that up for you; it takes about {max(1, round(self.expect_s))} seconds."

    def failure(self) -> str:
        return self.unavailable or f"the {self.name.replace('_', ' ')} service did not answer"


def argument_errors(
    schema: dict[str, Any], arguments: str, fixed: frozenset[str] = frozenset()
) -> tuple[dict[str, Any], str | None]:
    """(the parsed arguments, None) or ({}, why they are not valid for ``schema``: an HTTP tool's
    :attr:`HttpTool.arguments_schema`, an MCP tool's ``inputSchema``, closed or not). Undeclared arguments of a
    closed schema are named first, and so is any name in ``fixed`` (the URL's own): such a call is not sent."""
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        return {}, "the arguments are not valid JSON"
    if not isinstance(args, dict):
        return {}, "the arguments must be a JSON object"
    if schema.get("additionalProperties") is False:
        declared = schema.get("properties") or {}
        undeclared = sorted(set(args) - set(declared))
        if undeclared:
            takes = ", ".join(sorted(declared)) or "none"
            return {}, f"undeclared arguments refused, nothing sent: {', '.join(undeclared)} (it takes: {takes})"
    overriding = sorted(set(args) & fixed)
    if overriding:
        return {}, f"{', '.join(overriding)}: fixed by the tool's URL, nothing sent"
    error = schema_error(schema, args)
    return ({}, error) if error is not None else (args, None)


def schema_error(schema: dict[str, Any], args: dict[str, Any]) -> str | None:
    """Why ``args`` do not fit ``schema`` (its first error, where it is), or None."""
    error = next(iter(Draft202012Validator(schema).iter_errors(args)), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where + ': ' if where else ''}{error.message}"


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """One tool call's result: ``output`` (the JSON text the model gets) and, on failure, the typed error;
    ``answer``: what the tool's server answered, as an object (an HTTP tool's JSON, an MCP tool's structured content),
    for a verifying tool's fields; ``discarded``: arguments the model sent that the plan pins (not sent);
    ``waits_for``: the verifying tools an ``unverified`` call waits for."""

    output: str
    error: ErrorType | None = None
    status: int | None = None  # the HTTP status, when one came
    attempts: int = 1
    answer: Any = None
    discarded: tuple[str, ...] = ()
    waits_for: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    @staticmethod
    def failed(kind: ErrorType, message: str, *, status: int | None = None, attempts: int = 1) -> ToolOutcome:
        """A typed error the model reads out: ``{"ok": false, "error": {"type", "message"}}``."""
        body = {"ok": False, "error": {"type": kind, "message": message}}
        return ToolOutcome(json.dumps(body, separators=(",", ":")), kind, status, attempts)


class McpServer(BaseModel):
    """An MCP server (streamable HTTP) whose tools the model may call: listed when a call's session is set up (at
    most ``list_timeout_s``; a server that does not answer leaves its tools out of that call), each call bounded by
    ``timeout_s``. ``tools``: only these of its tools (empty: all). ``headers`` go with every request to it, as an
    HTTP tool's do (a secret from ``env`` or ``file``, read as the call's tools are listed, never logged). A call's
    arguments must fit the tool's ``inputSchema``, closed (:func:`closed`) unless ``extra_arguments`` (else
    ``bad_arguments``, the server not asked); its answer is read up to ``max_response_bytes`` (else ``too_large``).
    ``pin``, ``verify_before`` and ``context`` as an HTTP tool's, for each of its tools (a pin where the tool's
    ``inputSchema`` declares the argument; ``verify_before`` but for the plan's verifying tools)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    url: str
    tools: tuple[str, ...] = ()
    headers: dict[str, Header] = Field(default_factory=dict)
    list_timeout_s: float = Field(2.0, gt=0, le=10)
    timeout_s: float = Field(5.0, gt=0, le=60)
    max_response_bytes: int = Field(65_536, ge=64, le=4 * 1024 * 1024)  # a tool call's answer, as the server sends it
    unavailable: str = ""  # what the agent says when a call fails ("" -> "the NAME service did not answer")
    sensitive: bool = False  # its tools' arguments are never stored (events, report, recording, logs)
    extra_arguments: bool = False  # true: its tools' inputSchemas are taken as the server sends them (not closed)
    pin: dict[str, str] = Field(default_factory=dict)  # in each of its tools that declares the argument
    verify_before: str | None = Field(None, pattern=r"^[a-zA-Z0-9_-]{1,64}$")  # for each of its tools but verifiers
    context: ToolContext | None = None  # the signed call context (None: the plan's tool_context)

    _check_url = field_validator("url")(check_url)
    _check_headers = field_validator("headers")(check_header_names)
    _check_pins = field_validator("pin")(check_pins)

    def input_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """One of its tools' ``inputSchema`` as the model sees it and its calls are checked against."""
        return schema if self.extra_arguments else closed(schema)

    def failure(self) -> str:
        return self.unavailable or f"the {self.name.replace('_', ' ')} service did not answer"
