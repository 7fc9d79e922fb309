"""One call's business tools: the plan's HTTP tools (:mod:`bridge.tools.http`) and its MCP servers' tools
(:mod:`bridge.tools.mcp`), behind the interface the call session's tool calls use (``bridge.call.toolcalls``).

The MCP tools are listed before the call's first session opens (:meth:`CallTools.wrap`: the connector lists first,
the profile offers what was listed), so the model sees them from its first turn.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from bridge.realtime.profile import AgentProfile
from bridge.tools.http import HttpTools
from bridge.tools.mcp import McpTools
from bridge.tools.spec import HttpTool, McpServer, ToolOutcome

C = TypeVar("C")


class ToolPlan(Protocol):
    """What a call's tools need of its plan (``bridge.dialplan.Dialplan`` is one)."""

    @property
    def http_tools(self) -> tuple[HttpTool, ...]: ...

    @property
    def mcp_servers(self) -> tuple[McpServer, ...]: ...

    @property
    def profile(self) -> AgentProfile: ...


class CallTools:
    def __init__(self, plan: ToolPlan) -> None:
        self.http = HttpTools(plan.http_tools)
        self.mcp = McpTools(plan.mcp_servers)
        self._taken = {t.name for t in plan.profile.tools}

    def handles(self, name: str) -> bool:
        return self.http.handles(name) or self.mcp.handles(name)

    def announcement(self, name: str) -> str | None:
        return self.http.announcement(name) if self.http.handles(name) else None

    def sensitive(self, name: str) -> bool:
        """Whether the tool's arguments must never be stored (``sensitive`` on the tool or its MCP server)."""
        if self.http.handles(name):
            return self.http.tools[name].sensitive
        return self.mcp.sensitive(name)

    async def run(self, name: str, arguments: str) -> ToolOutcome:
        if self.http.handles(name):
            return await self.http.run(name, arguments)
        return await self.mcp.run(name, arguments)

    def wrap(
        self, connect: Callable[[], Awaitable[C]], profile: Callable[[], AgentProfile]
    ) -> tuple[Callable[[], Awaitable[C]], Callable[[], AgentProfile]]:
        """The session's connector, listing the MCP tools first (once), and its profile, offering them."""

        async def listing_first() -> C:
            await self.mcp.list_tools(self._taken)
            return await connect()

        def offering() -> AgentProfile:
            base = profile()
            extra = [t for t in self.mcp.offered if t.name not in {x.name for x in base.tools}]
            return base.model_copy(update={"tools": (*base.tools, *extra)}) if extra else base

        return listing_first, offering

    async def close(self) -> None:
        await self.http.close()
        await self.mcp.close()


def business_tools(plan: ToolPlan) -> CallTools | None:
    """The business tools of one call on ``plan`` (None: it declares none)."""
    if not plan.http_tools and not plan.mcp_servers:
        return None
    return CallTools(plan)
