"""A webhook endpoint for tests: a real aiohttp server that checks every request's signature with the reference
verifier (the ``standardwebhooks`` package) and every body against the published JSON Schema
(``docs/webhooks.schema.json``, with ``jsonschema``), and answers what the test asks for: a status per request, and
optionally not before the test releases it (``hold``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator
from standardwebhooks import Webhook, WebhookVerificationError

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "docs" / "webhooks.schema.json"
_validator: Draft202012Validator | None = None


def schema_errors(body: Any) -> list[str]:
    """Where ``body`` (a parsed webhook body) departs from the published schema; [] when it fits."""
    global _validator
    if _validator is None:
        schema = json.loads(SCHEMA_FILE.read_text())
        Draft202012Validator.check_schema(schema)
        _validator = Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}" for e in _validator.iter_errors(body)]


@dataclass
class Received:
    id: str
    body: dict[str, Any]
    verified: bool
    answered: int
    at: float = field(default_factory=time.monotonic)
    invalid: list[str] = field(default_factory=list)  # where it departs from the schema
    traceparent: str = ""  # its W3C Trace Context header, if any


class Receiver:
    """POST /hook (and /moved, where /redirect points). ``answer(n)`` gives the status of the n-th request (from 0),
    or ``by_body(body)`` the status of each request by what it carries;
    with ``hold`` set, every answer waits until it is set (``arrived`` counts the requests that came in). :meth:`stop`
    fails the test if any body did not fit the published schema."""

    def __init__(
        self,
        secret: str,
        answer: Callable[[int], int] = lambda n: 204,
        port: int = 0,
        hold: asyncio.Event | None = None,
        by_body: Callable[[dict[str, Any]], int] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.secret, self.answer, self.port, self.hold, self.by_body = secret, answer, port, hold, by_body
        self.tls = tls  # serve https (the context holds the certificate)
        self.received: list[Received] = []
        self.arrived = 0
        self.moved: list[str] = []  # requests that reached the redirect's target
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Event()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = Webhook(self.secret).verify(raw, dict(request.headers))
            verified = True
        except WebhookVerificationError:
            body, verified = json.loads(raw), False
        self.arrived += 1
        self._arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        status = self.by_body(body) if self.by_body is not None else self.answer(len(self.received))
        got = Received(request.headers.get("webhook-id", ""), body, verified, status, invalid=schema_errors(body),
                       traceparent=request.headers.get("traceparent", ""))  # fmt: skip
        self.received.append(got)
        self._arrived.set()
        return web.Response(status=status)

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{self.port}/moved")

    async def _moved(self, request: web.Request) -> web.Response:
        self.moved.append(request.method)
        return web.Response(status=204)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        app.router.add_post("/redirect", self._redirect)
        app.router.add_route("*", "/moved", self._moved)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.tls)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        invalid = [(r.body.get("type"), r.invalid) for r in self.received if r.invalid]
        assert not invalid, f"deliveries that do not fit {SCHEMA_FILE.name}: {invalid}"

    async def wait_for(self, test: Callable[[list[Received]], bool], within_s: float) -> list[Received]:
        """The requests answered so far, once ``test`` holds for them (AssertionError past ``within_s``)."""
        return await self.wait_until(lambda: test(self.received), within_s)

    async def wait_until(self, test: Callable[[], bool], within_s: float) -> list[Received]:
        """The requests answered so far, once ``test()`` holds (checked at each request's arrival and answer)."""
        deadline = time.monotonic() + within_s
        while not test():
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [(r.id, r.answered) for r in self.received]
                raise AssertionError(f"not within {within_s} s; received: {seen}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(left, 0.5))
        return self.received

    def of_type(self, event_type: str) -> list[Received]:
        return [r for r in self.received if r.body.get("type") == event_type]


def call_event(event_type: str, call_id: str, seq: int, **more: Any) -> dict[str, Any]:
    """The data of one call event as a worker makes it (``bridge.webhooks.body``), for tests that emit their own."""
    from bridge.webhooks.body import call_data, call_ended_data

    identity = {"call_id": call_id, "sip_call_id": f"{call_id}@pbx.example", "dialplan": "support", "variant": "ga",
                "dialect": "ga", "model": "gpt-realtime", "voice": "alloy", "called": "1000",
                "caller": "••••••••67"}  # fmt: skip
    now = time.time()
    times: dict[str, float | None] = {"started_at": now - 10, "answered_at": now - 9}
    if event_type == "call.ended":
        report = {"end_reason": "caller hung up", "ended_by": "caller", "outcome": "completed", "checks": [],
                  "reports": [(900.0, {"kind": "agent_transcript", "text": "Hello."})]}  # fmt: skip
        data = call_ended_data(identity, times | {"ended_at": now}, report | more)
    elif event_type == "call.transferred":
        data = call_data(identity, times) | {"mode": "blind", "target": "sip:agent@pbx", "outcome": "referred"}
    else:
        data = call_data(identity, times)
    return data | {"seq": seq} | ({} if event_type == "call.ended" else more)


def routes(*pairs: tuple[str, str]) -> Callable[[], dict[str, Any]]:
    """Endpoints by name and URL (the settings' one is ``default``), as the deliverer reads them."""
    from bridge.webhooks.endpoints import Endpoint

    found = {name: Endpoint(name, url) for name, url in pairs}
    return lambda: found


@contextlib.asynccontextmanager
async def running(deliverer: Any) -> AsyncIterator[Any]:
    """A :class:`bridge.webhooks.delivery.Deliverer` started, and closed at the end."""
    deliverer.start()
    try:
        yield deliverer
    finally:
        await deliverer.close()


def waker_for(url: str) -> Any:
    """A client for the deliverer's blocking wait (reads may take longer than its wait)."""
    from bridge.store.connection import connect

    return connect(url, socket_timeout=60.0)
