"""One call's business tools: the plan's HTTP tools (:mod:`bridge.tools.http`) and its MCP servers' tools
(:mod:`bridge.tools.mcp`), behind the interface the call session's tool calls use (``bridge.call.toolcalls``).

The MCP tools are listed before the call's first session opens (:meth:`CallTools.wrap`: the connector lists first,
the profile offers what was listed), so the model sees them from its first turn.

The call's context (:class:`~bridge.tools.context.CallContext`) and its verifications (:class:`~bridge.tools.guard.
Guard`) are the call's: a tool that must wait for a verification is refused before it runs (:meth:`CallTools.refused`:
the caller must be verified first), and a verifying tool's success is kept for the tools after it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVar

from bridge.realtime.profile import AgentProfile
from bridge.tools.context import CallContext
from bridge.tools.guard import Guard
from bridge.tools.http import HttpTools
from bridge.tools.mcp import McpTools
from bridge.tools.spec import HttpTool, McpServer, ToolContext, ToolOutcome

C = TypeVar("C")


class ToolPlan(Protocol):
    """What a call's tools need of its plan (``bridge.dialplan.Dialplan`` is one)."""

    @property
    def http_tools(self) -> tuple[HttpTool, ...]: ...

    @property
    def mcp_servers(self) -> tuple[McpServer, ...]: ...

    @property
    def profile(self) -> AgentProfile: ...

    @property
    def name(self) -> str: ...

    @property
    def tool_context(self) -> ToolContext: ...

    @property
    def verifiers(self) -> Mapping[str, tuple[str, ...]]: ...

    @property
    def verify_first(self) -> Mapping[str, tuple[str, ...]]: ...


class CallTools:
    def __init__(self, plan: ToolPlan, context: CallContext | None = None) -> None:
        self.context = context or CallContext(dialplan=plan.name)
        self.http = HttpTools(plan.http_tools, self.context, plan.tool_context)
        self.mcp = McpTools(plan.mcp_servers, self.context, plan.tool_context)
        self.guard = Guard(self.context, plan.verify_first, plan.verifiers)
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

    def refused(self, name: str) -> ToolOutcome | None:
        """The ``unverified`` result the model gets instead of a call of ``name`` that must wait for a verification
        that has not succeeded in this call (its own ``verify_before``, its MCP server's, the plan's
        ``checks.verify_before``, a pin on ``verified.<field>``); None: it may run."""
        if self.http.handles(name):
            return self.guard.refusal(name, self.http.tools[name].pin)
        also = () if name in self.guard.keeps else self.mcp.verify_before(name)
        return self.guard.refusal(name, self.mcp.pins(name), also)

    async def run(self, name: str, arguments: str) -> ToolOutcome:
        refusal = self.refused(name)
        if refusal is not None:
            return refusal
        if self.http.handles(name):
            outcome = await self.http.run(name, arguments)
        else:
            outcome = await self.mcp.run(name, arguments)
        self.guard.settle(name, outcome)
        return outcome

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


def business_tools(plan: ToolPlan, context: CallContext | None = None) -> CallTools | None:
    """The business tools of one call on ``plan``, in its ``context`` (None: it declares none)."""
    if not plan.http_tools and not plan.mcp_servers:
        return None
    return CallTools(plan, context)
