"""The HTTP tools of one call: each model's call becomes one bounded HTTP request (``bridge.tools.spec`` says what).

One :class:`aiohttp.ClientSession` per call (closed with it). A call's whole time, retries included, is bounded by
the tool's ``timeout_s``; an idempotent method is retried (``retries``) after a connection failure or a 5xx while
that time lasts, a POST or PATCH never. The answer is read to its end (its Content-Length, or the last chunk of a
chunked one), however it is cut into packets, within that time and ``max_response_bytes``, and must be JSON. Secret
headers are read from the environment or their file for each call and go nowhere but the request: errors name the
tool, the URL without its query, and the kind of failure.

A tool's pinned arguments (``pin``) are taken out of what the model sent (a value it sent is discarded and logged)
and set from the call's context (:mod:`bridge.tools.guard`); with a context secret (the tool's ``context`` or the
plan's ``tool_context``) every request carries the signed call context (:mod:`bridge.tools.context`), signed anew for
each attempt. A secret that cannot be read, or is no ``whsec_`` secret, fails the call as ``unreachable``: nothing is
sent without the context the plan promised the tool.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yarl

from bridge.config import Secret, read_secret_file
from bridge.errors import ConfigError, redact
from bridge.orchestrator.client import whole_body
from bridge.runtime import tracecontext
from bridge.tools.context import CallContext, Form, SignedRequest, caller_form, context_key, now, signed
from bridge.tools.guard import fill_pins, strip_pinned
from bridge.tools.spec import IN_QUERY, Header, HttpTool, ToolContext, ToolOutcome, argument_errors, schema_error

log = logging.getLogger("bridge.tools")
RETRY_PAUSE_S = 0.05


def header_values(tool: HttpTool) -> tuple[dict[str, str], str | None]:
    """The tool's headers with their secrets read now, or the name of the one that could not be read."""
    return read_headers(tool.headers)


def read_headers(headers: Mapping[str, Header]) -> tuple[dict[str, str], str | None]:
    """``headers`` with their secrets read now (an HTTP tool's, an MCP server's), or the name of the one that could
    not be read."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if value.text is not None:
            out[name] = value.text
            continue
        secret = _read(name, value)
        if secret is None:
            return {}, name
        out[name] = value.prefix + secret
    return out, None


def _read(name: str, secret: Header) -> str | None:
    """The secret of header ``name`` (:class:`bridge.config.Secret`: ``env``, or ``env``'s ``_FILE``; or ``file``,
    stripped); ``None`` when it cannot be read (the caller logs the header's name, never a value)."""
    setting = f"header {name}"
    try:
        if secret.env is not None:
            return Secret(secret.env, setting).read()
        assert secret.file is not None  # Header's validator: exactly one source
        return read_secret_file(secret.file, source=f"file {secret.file}", setting=setting).strip() or None
    except ConfigError:
        return None


def read_context_key(spec: ToolContext) -> tuple[bytes | None, str | None]:
    """The key that signs a tool's call context (None: the plan names no secret), or why it cannot be read (never
    quoting it)."""
    if spec.secret is None:
        return None, None
    found, missing = read_headers({"context": spec.secret})
    if missing is not None:
        return None, "is not set (its env variable or file)"
    try:
        return context_key(found["context"]), None
    except ValueError as exc:
        return None, str(exc)


def context_headers(
    call: CallContext, spec: ToolContext, key: bytes | None, tool: str, request: SignedRequest
) -> dict[str, str]:
    """The signed context one ``request`` of ``tool`` carries (none without a key)."""
    if key is None:
        return {}
    return signed(key, call.document(tool, caller_form(spec.caller, request.url), now(), request))


def http_request(tool: HttpTool, args: Mapping[str, Any]) -> SignedRequest:
    """The request one call of ``tool`` sends, as its context signs it: the arguments in the query (``GET``,
    ``DELETE``) or as a JSON body."""
    url = yarl.URL(tool.url)
    if tool.method in IN_QUERY:
        return SignedRequest(tool.method, str(url.extend_query(_query(args))))
    body = json.dumps(args).encode()  # as aiohttp's json= sends it
    return SignedRequest(tool.method, str(url), body)


def pinned_arguments(name: str, arguments: str, pins: Mapping[str, str]) -> tuple[str, tuple[str, ...]]:
    """The model's ``arguments`` without those the plan pins, and the pinned names it sent (logged: an attempt)."""
    kept, discarded = strip_pinned(arguments, pins)
    if discarded:
        sent = ", ".join(discarded)
        log.warning("tool %s: the model sent %s, which the plan pins to the call's context: discarded", name, sent)
    return kept, discarded


def fill(
    tool: str, args: dict[str, Any], pins: Mapping[str, str], call: CallContext, form: Form, full: dict[str, Any]
) -> tuple[dict[str, Any], ToolOutcome | None]:
    """``args`` with the pinned ones set from ``call``, checked against the ``full`` schema, or why not."""
    done, missing = fill_pins(args, pins, call, form)
    if missing:
        message = f"{tool} was not called: the caller must be verified first ({', '.join(missing)} is not known yet)"
        return {}, ToolOutcome.failed("unverified", message)
    if schema_error(full, done) is not None:
        log.error("tool %s: its pinned arguments (%s) do not fit its schema: not called", tool, ", ".join(pins))
        return {}, ToolOutcome.failed("bad_arguments", f"{tool}: the arguments the plan sets do not fit its schema")
    return done, None


def _query(args: Mapping[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in args.items()}


def span_attributes(method: str, where: str, attempt: int) -> dict[str, str | int]:
    """A tool span's HTTP client attributes (OpenTelemetry's semantic conventions): the method, the server and the
    URL without its query (``where``: never the arguments a query carries), the attempts before this one."""
    parts = urlsplit(where)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return {
        "http.request.method": method,
        "server.address": parts.hostname or "",
        "server.port": port,
        "url.template": where,
        "http.request.resend_count": attempt - 1,
    }


class HttpTools:
    """A call's HTTP tools by name; :meth:`run` never raises (every failure is a typed :class:`ToolOutcome`).
    ``call``: the call's context (pins and the signed header); ``context``: the plan's ``tool_context``."""

    def __init__(
        self, tools: tuple[HttpTool, ...], call: CallContext | None = None, context: ToolContext | None = None
    ) -> None:
        self.tools = {t.name: t for t in tools}
        self.call = call or CallContext()
        self._context = context or ToolContext()
        self._session: aiohttp.ClientSession | None = None

    def handles(self, name: str) -> bool:
        return name in self.tools

    def announcement(self, name: str) -> str | None:
        return self.tools[name].announcement()

    def spec(self, tool: HttpTool) -> ToolContext:
        """The tool's call context setting: its own, else the plan's."""
        return tool.context or self._context

    async def run(self, name: str, arguments: str) -> ToolOutcome:
        tool = self.tools[name]
        arguments, discarded = pinned_arguments(name, arguments, tool.pin)
        outcome = await self._run(tool, arguments)
        return dataclasses.replace(outcome, discarded=discarded) if discarded else outcome

    async def _run(self, tool: HttpTool, arguments: str) -> ToolOutcome:
        name = tool.name
        args, bad = argument_errors(tool.arguments_schema, arguments, tool.fixed)
        if bad is not None:
            log.warning("tool %s: call refused, nothing sent: %.300r", name, bad)
            return ToolOutcome.failed("bad_arguments", f"{name}: {bad}")
        spec = self.spec(tool)
        args, refused = fill(name, args, tool.pin, self.call, caller_form(spec.caller, tool.url), tool.full_schema)
        if refused is not None:
            return refused
        try:
            return await asyncio.wait_for(self._attempts(tool, args, spec), tool.timeout_s)
        except TimeoutError:
            log.warning("tool %s: no answer from %s within %g s", name, tool.url.split("?", 1)[0], tool.timeout_s)
            return ToolOutcome.failed("timeout", tool.failure())

    async def _attempts(self, tool: HttpTool, args: dict[str, Any], spec: ToolContext) -> ToolOutcome:
        headers, missing = header_values(tool)
        if missing is not None:
            log.error("tool %s: the secret of header %s is not set (its env variable or file)", tool.name, missing)
            return ToolOutcome.failed("unreachable", tool.failure())
        key, why = read_context_key(spec)
        if why is not None:
            log.error("tool %s: the call context's secret %s: not called", tool.name, why)
            return ToolOutcome.failed("unreachable", tool.failure())
        outcome = ToolOutcome.failed("unreachable", tool.failure())
        request = http_request(tool, args)
        for attempt in range(1, tool.attempts + 1):
            signed_now = {**headers, **context_headers(self.call, spec, key, tool.name, request)}
            outcome = await self._once(tool, request, signed_now, attempt)
            if outcome.error not in {"unreachable", "http_status"} or (outcome.status or 500) < 500:
                return outcome
            if attempt < tool.attempts:
                await asyncio.sleep(RETRY_PAUSE_S * attempt)
        return outcome

    async def _once(self, tool: HttpTool, request: SignedRequest, headers: dict[str, str], attempt: int) -> ToolOutcome:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        where = tool.url.split("?", 1)[0]
        if request.content and not any(h.lower() == "content-type" for h in headers):
            headers = {**headers, "Content-Type": "application/json"}
        headers |= tracecontext.headers(tool.name, span_attributes(request.method, where, attempt))
        try:
            async with self._session.request(
                request.method, yarl.URL(request.url, encoded=True), data=request.content or None,
                headers=headers, allow_redirects=False,
            ) as resp:  # fmt: skip
                status = resp.status
                body = await whole_body(resp, tool.max_response_bytes) if status < 300 else b""
        except (aiohttp.ClientError, OSError) as exc:
            why = redact(type(exc).__name__)
            log.warning("tool %s: %s unreachable (attempt %d): %s", tool.name, where, attempt, why)
            return ToolOutcome.failed("unreachable", tool.failure(), attempts=attempt)
        if status >= 300:
            log.warning("tool %s: %s answered HTTP %d", tool.name, where, status)
            return ToolOutcome.failed("http_status", tool.failure(), status=status, attempts=attempt)
        if body is None:
            log.warning("tool %s: %s answered more than max_response_bytes (%d)", tool.name, where,
                        tool.max_response_bytes)  # fmt: skip
            return ToolOutcome.failed("too_large", tool.failure(), status=status, attempts=attempt)
        try:
            answer = json.loads(body) if body else None
        except ValueError:
            return ToolOutcome.failed("not_json", tool.failure(), status=status, attempts=attempt)
        return ToolOutcome(json.dumps(answer, separators=(",", ":")), None, status, attempt, answer=answer)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
