"""A webhook endpoint for tests: a real aiohttp server that checks every request's signature with the reference
verifier (the ``standardwebhooks`` package) and answers what the test asks for."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    id: str
    body: dict[str, Any]
    verified: bool
    answered: int
    at: float = field(default_factory=time.monotonic)


class Receiver:
    """POST /hook (and /moved, where /redirect points). ``answer(n)`` gives the status of the n-th request (from 0)."""

    def __init__(self, secret: str, answer: Callable[[int], int] = lambda n: 204, port: int = 0) -> None:
        self.secret, self.answer, self.port = secret, answer, port
        self.received: list[Received] = []
        self.moved: list[str] = []  # requests that reached the redirect's target
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = Webhook(self.secret).verify(raw, dict(request.headers))
            verified = True
        except WebhookVerificationError:
            body, verified = json.loads(raw), False
        status = self.answer(len(self.received))
        self.received.append(Received(request.headers.get("webhook-id", ""), body, verified, status))
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
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, test: Callable[[list[Received]], bool], within_s: float) -> list[Received]:
        """The requests so far, once ``test`` holds for them (AssertionError past ``within_s``)."""
        deadline = time.monotonic() + within_s
        while not test(self.received):
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
