"""A call's MCP tools: the plan's MCP servers (streamable HTTP, the official ``mcp`` client), listed once when the
call's first session is set up, then called by name.

Each server gets one client session for the call, opened and closed by one task of their own (the ``mcp`` client's
task groups must be left by the task that entered them, and a call's setup runs in tasks that come and go); tool
calls run in their own tasks over those sessions. Listing is
bounded (``list_timeout_s``): a server that fails leaves its tools out of the call and is logged, the call goes
on. A tool's answer goes back to the model as ``{"ok", "content": [texts], "structured": ...}``; a failure or a
call past ``timeout_s`` is a typed error the agent says. A call's arguments are checked against the tool's
``inputSchema`` first (``bad_arguments``: the server is not asked), and its answer is read no further than the
server's ``max_response_bytes`` (``too_large``), as an HTTP tool's is.

A server's ``pin`` applies to each of its tools whose ``inputSchema`` declares the argument: taken out of the schema
the model sees, set from the call's context on every call (:mod:`bridge.tools.guard`). With a context secret (the
server's ``context`` or the plan's ``tool_context``) each ``tools/call`` carries the signed call context
(:mod:`bridge.tools.context`) in its ``params._meta`` and, copied from there by the HTTP client's request hook
(:func:`context_headers_hook`), as headers of its POST, as an HTTP tool's request does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import json
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import httpx2

from bridge.errors import redact
from bridge.realtime.profile import Tool
from bridge.runtime import tracecontext
from bridge.tools.context import META, CallContext, SignedRequest, caller_form
from bridge.tools.http import context_headers, fill, pinned_arguments, read_context_key, read_headers
from bridge.tools.spec import McpServer, ToolContext, ToolOutcome, argument_errors, check_schema, unpinned

if TYPE_CHECKING:  # the ``mcp`` SDK (about 280 modules, 20 MB) only where a plan has MCP servers (load_sdk)
    from mcp import Client
    from mcp.types import RequestParamsMeta

log = logging.getLogger("bridge.tools")
SDK = "mcp"  # imported by :func:`load_sdk` (a worker, before it is ready) or the preloaded parent, never mid-call


def sdk_needed(plans: Iterable[Any]) -> tuple[str, ...]:
    """The SDK's module if one of ``plans`` (dialplans) has MCP servers: what a process serving them loads up front."""
    return (SDK,) if any(getattr(p, "mcp_servers", ()) for p in plans) else ()


def load_sdk(plans: Iterable[Any]) -> None:
    """Import the MCP SDK now if ``plans`` use it (about a second of imports: never in the middle of a call)."""
    for name in sdk_needed(plans):
        importlib.import_module(name)


def load_sdk_soon(plans: Iterable[Any]) -> None:
    """:func:`load_sdk` on a thread of the running loop's executor (plans read again with calls up), or now."""
    if all(name in sys.modules for name in sdk_needed(plans)):
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        load_sdk(plans)
        return
    loop.run_in_executor(None, load_sdk, plans)


MCP_TIMEOUT_S, MCP_READ_TIMEOUT_S = 30.0, 300.0  # the SDK's default client's (a server may hold a stream open)
OTHER_ANSWER_BYTES = 4 * 1024 * 1024  # the most of any other answer (the session's start, the tool list)


class TooLarge(httpx2.StreamError):
    """An MCP server's answer past its cap: the SDK's transport fails that request (a StreamError it handles)."""


class _Capped(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, cap: int, over: AnswerCap) -> None:
        self.inner, self.cap, self.over = inner, cap, over

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.inner:
            seen += len(chunk)
            if seen > self.cap:
                self.over.refused += 1
                raise TooLarge(f"an answer of more than {self.cap} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class AnswerCap:
    """The response hook of one server's HTTP client: each POST's answer is read up to ``max_response_bytes`` for a
    tool call, :data:`OTHER_ANSWER_BYTES` for anything else; ``refused`` counts the answers cut off."""

    tool_bytes: int
    refused: int = 0

    async def __call__(self, response: httpx2.Response) -> None:
        if response.request.method != "POST":
            return  # the server's own stream of notifications: each event bounded by the SDK
        try:
            method = json.loads(response.request.content).get("method")
        except (ValueError, AttributeError, httpx2.RequestNotRead):
            method = None
        cap = self.tool_bytes if method == "tools/call" else max(self.tool_bytes, OTHER_ANSWER_BYTES)
        assert isinstance(response.stream, httpx2.AsyncByteStream)  # an AsyncClient's
        response.stream = _Capped(response.stream, cap, self)


def rpc_attributes(url: str) -> dict[str, str | int]:
    """A tool span's attributes for an MCP ``tools/call`` (OpenTelemetry's RPC and MCP conventions): JSON-RPC, the
    method, the server (its URL without the query)."""
    where = url.split("?", 1)[0]
    parts = urlsplit(where)
    return {
        "rpc.system": "jsonrpc",
        "rpc.method": "tools/call",
        "mcp.method.name": "tools/call",
        "server.address": parts.hostname or "",
        "server.port": parts.port or (443 if parts.scheme == "https" else 80),
        "url.template": where,
    }


async def context_headers_hook(request: httpx2.Request) -> None:
    """A ``tools/call`` POST carries the call context of its ``params._meta`` as headers too (:data:`META`), and its
    ``traceparent``."""
    if request.method != "POST":
        return
    try:
        meta = json.loads(request.content).get("params", {}).get("_meta") or {}
    except (ValueError, AttributeError, httpx2.RequestNotRead):
        return
    for header, key in (*META.items(), (tracecontext.HEADER, tracecontext.HEADER)):
        if isinstance(meta.get(key), str):
            request.headers[header] = meta[key]


async def _transport(stack: contextlib.AsyncExitStack, server: McpServer, headers: dict[str, str],
                     cap: AnswerCap) -> Any:  # fmt: skip
    """A streamable HTTP transport whose HTTP client sends ``headers`` (and a call's context: ``_meta`` as headers)
    and caps the answers (its lifetime the call's, on ``stack``). The SDK's way: "to configure headers, create an
    httpx2.AsyncClient and pass it" (``streamable_http_client``), with the timeouts of its own default client."""
    timeout = httpx2.Timeout(MCP_TIMEOUT_S, read=MCP_READ_TIMEOUT_S)
    hooks: dict[str, list[Callable[..., Any]]] = {"request": [context_headers_hook], "response": [cap]}
    http = httpx2.AsyncClient(headers=headers, timeout=timeout, event_hooks=hooks)
    await stack.enter_async_context(http)
    from mcp.client.streamable_http import streamable_http_client

    return streamable_http_client(server.url, http_client=http)


@dataclass(frozen=True, slots=True)
class _Offered:
    """A listed tool: its server, the server's client and answer cap, the tool's ``inputSchema`` as the model sees it
    (``schema``) and whole (``full``: with its pinned arguments), and its ``pins``."""

    server: McpServer
    client: Client
    cap: AnswerCap
    schema: dict[str, Any]
    full: dict[str, Any]
    pins: dict[str, str]


class McpTools:
    """A call's MCP servers' tools; ``call``: the call's context, ``context``: the plan's ``tool_context``."""

    def __init__(
        self, servers: tuple[McpServer, ...], call: CallContext | None = None, context: ToolContext | None = None
    ) -> None:
        self.servers = servers
        self.call = call or CallContext()
        self._context = context or ToolContext()
        self.offered: list[Tool] = []  # every listed tool, as the model sees it
        self._where: dict[str, _Offered] = {}  # tool name -> where it is called
        self._owner: asyncio.Task[None] | None = None  # opens the clients, lists, and closes them at the end
        self._listed = asyncio.Event()
        self._stop = asyncio.Event()

    def handles(self, name: str) -> bool:
        return name in self._where

    async def list_tools(self, taken: set[str]) -> None:
        """List every server's tools, once (``taken``: names the plan already uses; a clash is left out)."""
        if self._owner is None and self.servers:
            self._owner = asyncio.create_task(self._own(set(taken)), name="mcp-clients")
        if self._owner is not None:
            await self._listed.wait()

    async def _own(self, taken: set[str]) -> None:
        from mcp import Client  # here: a process whose calls have no MCP server never loads the SDK

        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self._listed.set)  # whatever happens, nobody waits for the listing forever
            for server in self.servers:
                headers, missing = read_headers(server.headers)
                if missing is not None:
                    log.error("MCP server %s: the secret of header %s is not set (its env variable or file): no "
                              "tools for this call", server.name, missing)  # fmt: skip
                    continue
                cap = AnswerCap(server.max_response_bytes)
                try:
                    async with asyncio.timeout(server.list_timeout_s):
                        transport = await _transport(stack, server, headers, cap)
                        client = await stack.enter_async_context(Client(transport))
                        listing = await client.list_tools()
                except Exception as exc:  # any failure of a server leaves its tools out; the call goes on
                    log.error("MCP server %s (%s): no tools for this call: %s", server.name, server.url.split("?")[0],
                              redact(f"{type(exc).__name__}: {exc}"))  # fmt: skip
                    continue
                self._offer(server, client, cap, listing.tools, taken)
            self._listed.set()
            await self._stop.wait()

    def _offer(self, server: McpServer, client: Client, cap: AnswerCap, tools: list[Any], taken: set[str]) -> None:
        for tool in tools:
            if (server.tools and tool.name not in server.tools) or tool.name in taken or tool.name in self._where:
                continue
            full = server.input_schema(dict(tool.input_schema or {"type": "object", "properties": {}}))
            try:
                check_schema(full)
            except ValueError as exc:
                log.error("MCP server %s: tool %s left out of this call: its inputSchema is %s", server.name,
                          tool.name, exc)  # fmt: skip
                continue
            declared = full.get("properties") or {}
            pins = {name: path for name, path in server.pin.items() if name in declared}
            schema = unpinned(full, pins)
            self.offered.append(Tool(name=tool.name, description=tool.description or "", parameters=schema))
            self._where[tool.name] = _Offered(server, client, cap, schema, full, pins)

    def sensitive(self, name: str) -> bool:
        where = self._where.get(name)
        return where is not None and where.server.sensitive

    def pins(self, name: str) -> dict[str, str]:
        where = self._where.get(name)
        return where.pins if where is not None else {}

    def verify_before(self, name: str) -> tuple[str, ...]:
        """The verifying tool a listed tool's server makes it wait for (none for an unlisted one)."""
        where = self._where.get(name)
        needs = where.server.verify_before if where is not None else None
        return (needs,) if needs else ()

    def _meta(self, where: _Offered, name: str, args: dict[str, Any]) -> RequestParamsMeta | None:
        """The signed context of one call with ``args`` and, when the call is traced, its tool span's ``traceparent``
        (None with neither); raises ValueError if the context's secret is unreadable."""
        spec = where.server.context or self._context
        key, why = read_context_key(spec)
        if why is not None:
            raise ValueError(why)
        headers = context_headers(self.call, spec, key, name, SignedRequest.mcp(where.server.url, args))
        meta = {META[h]: v for h, v in headers.items()}
        meta |= tracecontext.headers(name, rpc_attributes(where.server.url))  # _meta.traceparent: MCP's own place
        return cast("RequestParamsMeta", meta) if meta else None  # an open map

    async def run(self, name: str, arguments: str) -> ToolOutcome:
        where = self._where[name]
        arguments, discarded = pinned_arguments(name, arguments, where.pins)
        outcome = await self._run(name, where, arguments)
        return dataclasses.replace(outcome, discarded=discarded) if discarded else outcome

    async def _run(self, name: str, where: _Offered, arguments: str) -> ToolOutcome:
        server, refused = where.server, where.cap.refused
        args, bad = argument_errors(where.schema, arguments)
        if bad is not None:
            log.warning("MCP tool %s of %s: call refused, nothing sent: %.300r", name, server.name, bad)
            return ToolOutcome.failed("bad_arguments", f"{name}: {bad}")
        form = caller_form((server.context or self._context).caller, server.url)
        args, refusal = fill(name, args, where.pins, self.call, form, where.full)
        if refusal is not None:
            return refusal
        try:
            meta = self._meta(where, name, args)
        except ValueError as why:
            log.error("MCP tool %s of %s: the call context's secret %s: not called", name, server.name, why)
            return ToolOutcome.failed("unreachable", server.failure())
        try:
            result = await asyncio.wait_for(where.client.call_tool(name, args, meta=meta), server.timeout_s)
        except TimeoutError:
            log.warning("MCP tool %s of %s: no answer within %g s", name, server.name, server.timeout_s)
            return ToolOutcome.failed("timeout", server.failure())
        except Exception as exc:  # the server or the transport failed: a typed error, never a crash
            if where.cap.refused > refused:
                log.warning("MCP tool %s of %s: %s answered more than max_response_bytes (%d)", name, server.name,
                            server.url.split("?", 1)[0], server.max_response_bytes)  # fmt: skip
                return ToolOutcome.failed("too_large", server.failure())
            log.warning("MCP tool %s of %s failed: %s", name, server.name, redact(type(exc).__name__))
            return ToolOutcome.failed("unreachable", server.failure())
        texts = [str(getattr(c, "text", "")) for c in result.content if getattr(c, "type", "") == "text"]
        body: dict[str, Any] = {"ok": not result.is_error, "content": texts}
        if result.structured_content is not None:
            body["structured"] = result.structured_content
        output = json.dumps(body, separators=(",", ":"))
        return ToolOutcome(output, "tool_error" if result.is_error else None, answer=_answer(result, texts))

    async def close(self) -> None:
        self._stop.set()
        if self._owner is not None:
            with contextlib.suppress(Exception):
                await self._owner
            self._where.clear()


def _answer(result: Any, texts: list[str]) -> dict[str, Any]:
    """What a tool answered, as an object (a verifying tool's fields): its structured content, else its one text if
    that is a JSON object, else nothing."""
    if isinstance(result.structured_content, dict):
        return dict(result.structured_content)
    try:
        found = json.loads(texts[0]) if len(texts) == 1 else None
    except ValueError:
        found = None
    return found if isinstance(found, dict) else {}
