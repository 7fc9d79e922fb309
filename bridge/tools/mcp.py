"""A call's MCP tools: the plan's MCP servers (streamable HTTP, the official ``mcp`` client), listed once when the
call's first session is set up, then called by name.

Each server gets one client session for the call, opened and closed by one task of their own (the ``mcp`` client's
task groups must be left by the task that entered them, and a call's setup runs in tasks that come and go); tool
calls run in their own tasks over those sessions. Listing is
bounded (``list_timeout_s``): a server that fails leaves its tools out of the call and is logged, the call goes
on. A tool's answer goes back to the model as ``{"ok", "content": [texts], "structured": ...}``; a failure or a
call past ``timeout_s`` is a typed error the agent says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bridge.errors import redact
from bridge.realtime.profile import Tool
from bridge.tools.http import read_headers
from bridge.tools.spec import McpServer, ToolOutcome

log = logging.getLogger("bridge.tools")
MCP_TIMEOUT_S, MCP_READ_TIMEOUT_S = 30.0, 300.0  # the SDK's default client's (a server may hold a stream open)


async def _transport(stack: contextlib.AsyncExitStack, server: McpServer, headers: dict[str, str]) -> Any:
    """The server's URL, or with headers, a streamable HTTP transport whose HTTP client sends them (its lifetime
    the call's, on ``stack``). The SDK's way: "to configure headers, create an httpx2.AsyncClient and pass it"
    (``streamable_http_client``), with the timeouts of its own default client."""
    if not headers:
        return server.url
    timeout = httpx2.Timeout(MCP_TIMEOUT_S, read=MCP_READ_TIMEOUT_S)
    http = await stack.enter_async_context(httpx2.AsyncClient(headers=headers, timeout=timeout))
    return streamable_http_client(server.url, http_client=http)


class McpTools:
    def __init__(self, servers: tuple[McpServer, ...]) -> None:
        self.servers = servers
        self.offered: list[Tool] = []  # every listed tool, as the model sees it
        self._where: dict[str, tuple[McpServer, Client]] = {}  # tool name -> its server and client
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
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self._listed.set)  # whatever happens, nobody waits for the listing forever
            for server in self.servers:
                headers, missing = read_headers(server.headers)
                if missing is not None:
                    log.error("MCP server %s: the secret of header %s is not set (its env variable or file): no "
                              "tools for this call", server.name, missing)  # fmt: skip
                    continue
                try:
                    async with asyncio.timeout(server.list_timeout_s):
                        client = await stack.enter_async_context(Client(await _transport(stack, server, headers)))
                        listing = await client.list_tools()
                except Exception as exc:  # any failure of a server leaves its tools out; the call goes on
                    log.error("MCP server %s (%s): no tools for this call: %s", server.name, server.url.split("?")[0],
                              redact(f"{type(exc).__name__}: {exc}"))  # fmt: skip
                    continue
                self._offer(server, client, listing.tools, taken)
            self._listed.set()
            await self._stop.wait()

    def _offer(self, server: McpServer, client: Client, tools: list[Any], taken: set[str]) -> None:
        for tool in tools:
            if (server.tools and tool.name not in server.tools) or tool.name in taken or tool.name in self._where:
                continue
            schema = dict(tool.input_schema or {"type": "object", "properties": {}})
            self.offered.append(Tool(name=tool.name, description=tool.description or "", parameters=schema))
            self._where[tool.name] = (server, client)

    async def run(self, name: str, arguments: str) -> ToolOutcome:
        server, client = self._where[name]
        try:
            args = json.loads(arguments or "{}")
        except ValueError:
            return ToolOutcome.failed("bad_arguments", f"{name}: the arguments are not valid JSON")
        try:
            result = await asyncio.wait_for(client.call_tool(name, args if isinstance(args, dict) else {}),
                                            server.timeout_s)  # fmt: skip
        except TimeoutError:
            log.warning("MCP tool %s of %s: no answer within %g s", name, server.name, server.timeout_s)
            return ToolOutcome.failed("timeout", server.failure())
        except Exception as exc:  # the server or the transport failed: a typed error, never a crash
            log.warning("MCP tool %s of %s failed: %s", name, server.name, redact(type(exc).__name__))
            return ToolOutcome.failed("unreachable", server.failure())
        texts = [str(getattr(c, "text", "")) for c in result.content if getattr(c, "type", "") == "text"]
        body: dict[str, Any] = {"ok": not result.is_error, "content": texts}
        if result.structured_content is not None:
            body["structured"] = result.structured_content
        return ToolOutcome(json.dumps(body, separators=(",", ":")), "tool_error" if result.is_error else None)

    async def close(self) -> None:
        self._stop.set()
        if self._owner is not None:
            with contextlib.suppress(Exception):
                await self._owner
            self._where.clear()
