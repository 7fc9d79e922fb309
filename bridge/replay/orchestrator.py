"""The replay's orchestrator: a call script's ``orchestrator.answers``, served in order (``call_scripts/README.md``).

::

    --via direct   the session's Ask is :meth:`ScriptedOrchestrator.ask`: the request and the answer go through
                   their JSON form (as on the wire), the answer comes after its ``delay_ms`` of virtual time
    --via sip      an aiohttp server (:class:`OrchestratorServer`) that the replay's dialplans point at, one path
                   per (script, dialect): ``POST /turn/<script>/<dialect>``

Either way each request takes the next answer, and a request that does not match its answer's ``expect_turn`` /
``expect_event``, a request past the last answer (it gets ``nothing``) and an answer never asked for are
:attr:`ScriptedOrchestrator.failures`: the run fails with them, naming the script's field.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiohttp import web
from pydantic import ValidationError

from bridge.devkit.ports import listen_port
from bridge.orchestrator.models import Decision, TurnRequest, parse_decision
from bridge.replay.script import ScriptedAnswer


class ScriptedOrchestrator:
    """One call's orchestrator: ``answers`` in order; every request kept (:attr:`requests`)."""

    def __init__(self, answers: Sequence[ScriptedAnswer]) -> None:
        self._answers = list(answers)
        self.requests: list[TurnRequest] = []
        self.failures: list[str] = []

    async def ask(self, url: str, request: TurnRequest, limit_s: float) -> Decision:
        """The session's side (``bridge.orchestrator.client.Ask``), without a socket."""
        wire = TurnRequest.model_validate_json(request.model_dump_json())
        body = await self.answer(wire)
        return parse_decision(body)

    async def answer(self, request: TurnRequest) -> bytes:
        """The JSON body of the answer to ``request``, once its ``delay_ms`` has passed."""
        n = len(self.requests)
        self.requests.append(request)
        if n >= len(self._answers):
            self.failures.append(
                f"orchestrator: request {n + 1} ({request.event} {request.turn!r}) after the script's "
                f"{len(self._answers)} answer(s): answered nothing"
            )
            return Decision(action="nothing").model_dump_json(exclude_none=True).encode()
        scripted = self._answers[n]
        where = f"orchestrator.answers[{n}]"
        if scripted.expect_event is not None and request.event != scripted.expect_event:
            self.failures.append(f"{where}.expect_event: expected {scripted.expect_event!r}, got {request.event!r}")
        if scripted.expect_turn is not None and request.turn != scripted.expect_turn:
            self.failures.append(f"{where}.expect_turn: expected {scripted.expect_turn!r}, got {request.turn!r}")
        if scripted.delay_ms:
            await asyncio.sleep(scripted.delay_ms / 1000.0)
        return scripted.decision().model_dump_json(exclude_none=True).encode()

    def finish(self) -> list[str]:
        """The failures, with the answers never asked for (the call ended first, or a turn went unheard)."""
        left = len(self._answers) - len(self.requests)
        if left > 0:
            first = len(self.requests)
            self.failures.append(f"orchestrator.answers[{first}]: never asked for ({left} answer(s) left unused)")
        return self.failures


class OrchestratorServer:
    """The scripted orchestrators of a SIP replay behind one HTTP server on loopback; :meth:`add` one per call."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._calls: dict[str, ScriptedOrchestrator] = {}
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/turn/{script}/{dialect}", self._turn)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, listen_port()).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self, script: str, dialect: str) -> str:
        return f"http://{self.host}:{self.port}/turn/{script}/{dialect}"

    def add(self, script: str, dialect: str, answers: Sequence[ScriptedAnswer]) -> ScriptedOrchestrator:
        self._calls[f"{script}/{dialect}"] = orchestrator = ScriptedOrchestrator(answers)
        return orchestrator

    async def _turn(self, request: web.Request) -> web.Response:
        key = f"{request.match_info['script']}/{request.match_info['dialect']}"
        orchestrator = self._calls.get(key)
        if orchestrator is None:
            return web.json_response({"error": f"no scripted orchestrator for {key}"}, status=404)
        try:
            turn = TurnRequest.model_validate_json(await request.read())
        except ValidationError as exc:  # the bridge sent something that is not a TurnRequest: the run shows it
            orchestrator.failures.append(f"orchestrator: the bridge's request is not a TurnRequest: {exc.errors()[0]}")
            return web.json_response({"error": "not a TurnRequest"}, status=400)
        return web.Response(body=await orchestrator.answer(turn), content_type="application/json")
