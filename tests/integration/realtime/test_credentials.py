"""Short-lived credentials against the in-process emulator: minting in both dialects, rotation before expiry, re-issue
after an expired or refused credential, the credential broker (in process and for a worker subprocess that never
holds the key), its token, and a scan that the long-lived key never shows up in logs, responses or reprs.

Every test runs with logging captured at DEBUG and fails if the long-lived key appears in it (``_no_key_in_logs``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge import events as ev
from bridge.call.retry import RetryPolicy, Step, next_step
from bridge.emulator import EmulatorServer
from bridge.errors import ConfigError, ConnectError
from bridge.realtime.client import RealtimeClient
from bridge.realtime.credentials import (
    BROKER_TOKEN_ENV,
    BROKER_URL_ENV,
    BrokerClient,
    MintingSource,
    Sources,
    StaticKey,
    fingerprint,
    http_base,
)
from bridge.realtime.dialects import BETA, GA, Dialect
from bridge.realtime.profile import AgentProfile
from bridge.serve.broker import BROKER, CredentialBroker, start_broker

pytestmark = pytest.mark.integration

KEY = "sk-test-long-lived-KEY123"
TOKEN = "broker-token-for-tests-0123456789"
DIALECTS = [BETA, GA]
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _no_key_in_logs(caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        assert KEY not in text, f"the long-lived key leaked into a log record of {record.name}"
        assert TOKEN not in text, f"the broker token leaked into a log record of {record.name}"
    assert KEY not in caplog.text


async def keyed_emulator(ttl_s: float = 600.0) -> EmulatorServer:
    server = EmulatorServer("127.0.0.1", 0, api_key=KEY, client_secret_ttl_s=ttl_s)
    await server.start()
    return server


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    """The emulator with a known long-lived key (the shared fixture accepts any key)."""
    server = await keyed_emulator()
    yield server
    await server.close()


async def first_event(client: RealtimeClient, within_s: float = 5.0) -> ev.Event:
    """The first event that says how the connect went: SessionReady, or the Closed after a refusal."""
    async with asyncio.timeout(within_s):
        while True:
            event = await client.next_event()
            if isinstance(event, ev.SessionReady | ev.Closed):
                return event


class Tracked:
    """Wraps a source to remember which credential each connect used (what the call session needs to name the
    credential it saw refused)."""

    def __init__(self, source: Callable[[], Awaitable[str]]) -> None:
        self.source = source
        self.used: list[str] = []

    async def __call__(self) -> str:
        value = await self.source()
        self.used.append(value)
        return value


async def connect_with_recovery(
    dialect: Dialect, base_url: str, source: MintingSource | BrokerClient, policy: RetryPolicy
) -> tuple[RealtimeClient, list[Step]]:
    """The recovery loop the call session runs, reduced to credentials: connect, classify, follow next_step."""
    tracked = Tracked(source)
    steps: list[Step] = []
    for attempt in itertools.count():
        client = RealtimeClient(dialect, base_url, tracked)
        try:
            await client.connect()
            event = await first_event(client)
            if isinstance(event, ev.SessionReady):
                return client, steps
            assert isinstance(event, ev.Closed)
            cls, retryable = event.error_class, event.retryable
        except ConnectError as exc:
            cls, retryable = exc.error_class, exc.retryable
        await client.close()
        step = next_step(cls, retryable, attempt, policy)
        steps.append(step)
        if step is Step.GIVE_UP:
            raise AssertionError(f"gave up after {steps}")
        if step is Step.REFRESH:
            source.invalidate(fingerprint(tracked.used[-1]))
    raise AssertionError("unreachable")


class Clock:
    """Wall-clock time plus an offset the test moves."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset

    def set(self, t: float) -> None:
        self.offset = t - time.time()


# --------------------------------------------------------------------------------------------------------------
# Pure bits


@pytest.mark.parametrize(
    "url, base",
    [
        ("ws://127.0.0.1:8765/v1", "http://127.0.0.1:8765/v1"),
        ("wss://api.openai.com/v1", "https://api.openai.com/v1"),
        ("ws://127.0.0.1:8765/v1/?drop_after_s=3", "http://127.0.0.1:8765/v1"),
        ("https://broker.local:8766", "https://broker.local:8766"),
    ],
)
def test_http_base(url: str, base: str) -> None:
    assert http_base(url) == base


def test_http_base_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="not a ws://"):
        http_base("ftp://example.com")


async def test_static_key_never_prints_itself() -> None:
    source = StaticKey(KEY)
    assert await source() == KEY
    source.invalidate()  # a no-op: nothing fresher to fetch
    assert await source() == KEY
    for text in (repr(source), str(source), f"{source}", f"{source!r}"):
        assert KEY not in text
    with pytest.raises(ValueError):
        StaticKey("")


def test_sources_from_environment() -> None:
    broker = Sources.from_environment(
        "ws://h/v1", None, env={BROKER_URL_ENV: "http://127.0.0.1:1", BROKER_TOKEN_ENV: TOKEN}
    )
    assert broker.mode == "broker"
    source = broker.get(GA)
    assert isinstance(source, BrokerClient) and source.model == GA.default_model
    assert broker.get(GA, GA.default_model) is source  # one source per (dialect, model), shared by calls
    assert broker.get(BETA) is not source
    assert TOKEN not in repr(source) + repr(broker)
    with pytest.raises(ConfigError, match=BROKER_TOKEN_ENV):
        Sources.from_environment("ws://h/v1", None, env={BROKER_URL_ENV: "http://127.0.0.1:1"})
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        Sources.from_environment("ws://h/v1", None, env={})
    static = Sources.from_environment("ws://h/v1", KEY, env={})
    assert static.mode == "static" and isinstance(static.get(GA), StaticKey)
    mint = Sources.from_environment("ws://h/v1", KEY, mint=True, env={})
    assert mint.mode == "mint" and isinstance(mint.get(BETA, "gpt-4o-realtime-preview"), MintingSource)
    assert KEY not in repr(mint.get(BETA)) + repr(mint)


# --------------------------------------------------------------------------------------------------------------
# Minting


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
async def test_mints_in_both_dialects_and_connects(emulator: EmulatorServer, dialect: Dialect) -> None:
    source = MintingSource(dialect, emulator.base_url, KEY, AgentProfile())
    assert source.endpoint == f"{emulator.http_url}/v1{dialect.credential_path}"
    t0 = time.time()
    value = await source()
    assert value.startswith("ek_") and value != KEY
    assert source.expires_at is not None and t0 + 598 <= source.expires_at <= time.time() + 601
    assert await source() == value and source.issued == 1  # cached
    client = RealtimeClient(dialect, emulator.base_url, source)
    await client.connect()
    ready = await first_event(client)
    assert isinstance(ready, ev.SessionReady)
    await client.close()
    assert KEY not in repr(source) + str(source)
    assert source.stats() | {"expires_in_s": None} == {
        "issued": 1, "rotations": 0, "invalidations": 0, "failures": 0, "expires_in_s": None
    }  # fmt: skip


async def test_concurrent_connects_share_one_mint(emulator: EmulatorServer) -> None:
    source = MintingSource(GA, emulator.base_url, KEY, AgentProfile())
    values = await asyncio.gather(*(source() for _ in range(10)))
    assert len(set(values)) == 1 and source.issued == 1


async def test_rotates_30_s_before_expiry(emulator: EmulatorServer) -> None:
    clock = Clock()
    source = MintingSource(GA, emulator.base_url, KEY, AgentProfile(), clock=clock)
    first = await source()
    expires_at = source.expires_at
    assert expires_at is not None and source.refresh_at == pytest.approx(expires_at - 30)
    clock.set(expires_at - 30.5)
    assert await source() == first and source.rotations == 0
    clock.set(expires_at - 29.9)
    second = await source()
    assert second != first
    assert (source.issued, source.rotations, source.invalidations) == (2, 1, 0)
    assert await source() == second  # the new one is cached, not re-minted on every call
    assert source.issued == 2


async def test_rotates_in_real_time_with_a_short_ttl() -> None:
    """A secret that lives no longer than twice the 30 s margin is used for half its life (never a mint per call)."""
    server = await keyed_emulator(ttl_s=2.0)
    try:
        source = MintingSource(BETA, server.base_url, KEY, AgentProfile())
        first = await source()
        t0, expires_at = time.time(), source.expires_at
        assert expires_at is not None  # the service sends whole seconds: 1-2 s of life left
        while (value := await source()) == first:
            assert time.time() - t0 < 3.0, "no rotation"
            await asyncio.sleep(0.02)
        assert time.time() - t0 == pytest.approx((expires_at - t0) / 2, abs=0.15)  # half its life
        assert time.time() < expires_at  # rotated before the old one expired
        assert source.rotations == 1
        client = RealtimeClient(BETA, server.base_url, source)
        await client.connect()
        assert isinstance(await first_event(client), ev.SessionReady)
        await client.close()
        assert value == await source()
    finally:
        await server.close()


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
async def test_an_expired_credential_is_reissued_and_the_client_connects(dialect: Dialect) -> None:
    """Our clock runs 10 s behind the service's, so we hold on to a secret it already considers expired: the
    connect is refused (error expired_client_secret, close 3000), the policy says REFRESH, and the next connect
    uses a fresh secret."""
    server = await keyed_emulator(ttl_s=1.0)
    try:
        source = MintingSource(dialect, server.base_url, KEY, AgentProfile(), clock=Clock(-10.0))
        stale = await source()
        await asyncio.sleep(1.1)
        assert await source() == stale  # to us it is still good
        client, steps = await connect_with_recovery(dialect, server.base_url, source, RetryPolicy(max_attempts=3))
        await client.close()
        assert steps == [Step.REFRESH]
        assert (source.issued, source.invalidations) == (2, 1)
        refused, accepted = server.sessions[0], server.sessions[1]
        assert refused.close_code == 3000
        assert [e["error"]["code"] for e in refused.errors] == ["expired_client_secret"]
        assert not accepted.errors
    finally:
        await server.close()


# --------------------------------------------------------------------------------------------------------------
# A stub service: HTTP refusals the emulator does not produce (401/403 at the upgrade, 5xx and junk at the mint)


class Stub:
    def __init__(self) -> None:
        self.counter = itertools.count(1)
        self.revoked: set[str] = set()
        self.mint_status = 200
        self.mint_body: Any = None
        self.refuse_status = 401
        self.upgrades: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/realtime/client_secrets", self.mint)
        app.router.add_get("/v1/realtime", self.realtime)
        return app

    async def mint(self, request: web.Request) -> web.Response:
        if self.mint_status != 200 or self.mint_body is not None:
            body = self.mint_body if self.mint_body is not None else {"error": {"code": "server_error"}}
            text = body if isinstance(body, str) else json.dumps(body)
            return web.Response(status=self.mint_status, text=text, content_type="application/json")
        return web.json_response({"value": f"ek_stub_{next(self.counter):06d}", "expires_at": time.time() + 600})

    async def realtime(self, request: web.Request) -> web.StreamResponse:
        secret = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.upgrades.append(secret)
        if secret in self.revoked:
            return web.json_response({"error": {"code": "invalid_api_key"}}, status=self.refuse_status)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session = {"id": "sess_stub", "object": "realtime.session", "model": "gpt-realtime"}
        await ws.send_json({"type": "session.created", "event_id": "event_1", "session": session})
        async for _ in ws:
            pass
        return ws


@pytest.fixture
async def stub() -> AsyncIterator[tuple[Stub, str]]:
    stub = Stub()
    runner = web.AppRunner(stub.app(), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield stub, f"ws://127.0.0.1:{runner.addresses[0][1]}/v1"
    await runner.cleanup()


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_upgrade_invalidates_and_reissues(stub: tuple[Stub, str], status: int) -> None:
    server, base = stub
    server.refuse_status = status
    server.revoked.add("ek_stub_000001")  # the first secret is revoked before anyone uses it
    source = MintingSource(GA, base, KEY, AgentProfile())
    client, steps = await connect_with_recovery(GA, base, source, RetryPolicy(max_attempts=3))
    await client.close()
    assert steps == [Step.REFRESH]
    assert server.upgrades == ["ek_stub_000001", "ek_stub_000002"]
    assert (source.issued, source.invalidations) == (2, 1)
    # A second call that saw the same secret refused is late: the source already moved on; nothing is re-minted.
    source.invalidate(fingerprint("ek_stub_000001"))
    assert await source() == "ek_stub_000002" and source.issued == 2


@pytest.mark.parametrize(
    "status, body, error_class, retryable",
    [
        (500, None, ev.ErrorClass.SERVER, True),
        (429, {"error": {"code": "rate_limit_exceeded"}}, ev.ErrorClass.SERVER, True),
        (400, {"error": {"code": "invalid_value", "message": f"echo {KEY}"}}, ev.ErrorClass.PROTOCOL, False),
        (403, "<html>forbidden</html>", ev.ErrorClass.AUTH, True),
        (200, {"no": "value"}, ev.ErrorClass.PROTOCOL, False),
        (200, "not json", ev.ErrorClass.PROTOCOL, False),
    ],
)
async def test_mint_failures_are_classified(
    stub: tuple[Stub, str], status: int, body: Any, error_class: ev.ErrorClass, retryable: bool
) -> None:
    server, base = stub
    server.mint_status, server.mint_body = status, body
    source = MintingSource(GA, base, KEY, AgentProfile())
    with pytest.raises(ConnectError) as info:
        await source()
    assert (info.value.error_class, info.value.retryable) == (error_class, retryable)
    assert KEY not in str(info.value) and info.value.__cause__ is None
    assert source.failures == 1 and source.issued == 0


async def test_a_wrong_key_is_an_auth_failure_and_stays_secret(emulator: EmulatorServer) -> None:
    wrong = "sk-wrong-long-lived-ABCDEF987"
    source = MintingSource(BETA, emulator.base_url, wrong, AgentProfile())
    with pytest.raises(ConnectError) as info:
        await source()
    exc = info.value
    assert (exc.error_class, exc.retryable, exc.code) == (ev.ErrorClass.AUTH, True, "401")
    assert "invalid_api_key" in str(exc)
    assert wrong not in str(exc) and "sk-wro" not in str(exc)  # not even the service's masked echo
    assert next_step(exc.error_class, exc.retryable, 0, RetryPolicy()) is Step.REFRESH


async def test_an_unreachable_endpoint_is_a_network_failure() -> None:
    source = MintingSource(GA, "ws://127.0.0.1:9/v1", KEY, AgentProfile(), timeout_s=2.0)
    with pytest.raises(ConnectError) as info:
        await source()
    assert (info.value.error_class, info.value.retryable) == (ev.ErrorClass.NETWORK, True)
    assert KEY not in str(info.value)


# --------------------------------------------------------------------------------------------------------------
# The broker


@pytest.fixture
async def broker(emulator: EmulatorServer) -> AsyncIterator[tuple[str, CredentialBroker]]:
    runner, url = await start_broker(KEY, emulator.base_url, token=TOKEN)
    yield url, runner.app[BROKER]
    await runner.cleanup()


async def http(method: str, url: str, token: str | None = TOKEN, **kwargs: Any) -> tuple[int, str]:
    headers = kwargs.pop("headers", None) or ({"Authorization": f"Bearer {token}"} if token is not None else {})
    async with aiohttp.ClientSession() as session, session.request(method, url, headers=headers, **kwargs) as resp:
        return resp.status, await resp.text()


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
async def test_broker_end_to_end(
    emulator: EmulatorServer, broker: tuple[str, CredentialBroker], dialect: Dialect
) -> None:
    url, core = broker
    worker_a = BrokerClient(url, dialect.name, None, TOKEN)
    worker_b = BrokerClient(url, dialect.name, dialect.default_model, TOKEN)
    client = RealtimeClient(dialect, emulator.base_url, worker_a)
    await client.connect()
    assert isinstance(await first_event(client), ev.SessionReady)
    await client.close()
    value = await worker_a()
    assert value.startswith("ek_") and await worker_b() == value  # calls share one secret
    assert core.stats()["issued"] == 1
    # Both workers see the secret refused: the broker re-mints once.
    worker_a.invalidate(fingerprint(value))
    worker_b.invalidate(fingerprint(value))
    fresh = await worker_a()
    assert fresh != value and await worker_b() == fresh
    stats = core.stats()
    assert (stats["issued"], stats["invalidations"], stats["failures"]) == (2, 1, 0)
    status, text = await http("GET", f"{url}/v1/credentials/stats")
    assert status == 200 and json.loads(text)["sources"][f"{dialect.name}/{dialect.default_model}"]["issued"] == 2
    assert KEY not in text and fresh not in text and value not in text
    assert KEY not in repr(core) + str(core) and TOKEN not in repr(core) + repr(worker_a)


async def test_broker_rotates_30_s_before_expiry_and_workers_follow(emulator: EmulatorServer) -> None:
    clock = Clock()
    runner, url = await start_broker(KEY, emulator.base_url, token=TOKEN, clock=clock)
    try:
        worker = BrokerClient(url, "ga", None, TOKEN, clock=clock)
        first = await worker()
        status, text = await http("POST", f"{url}/v1/credentials", json={"dialect": "ga"})
        body = json.loads(text)
        assert status == 200 and set(body) == {"value", "expires_at", "refresh_at"}
        assert body["value"] == first and body["refresh_at"] == pytest.approx(body["expires_at"] - 30)
        clock.set(body["expires_at"] - 30.5)
        assert await worker() == first
        clock.set(body["expires_at"] - 29.9)
        second = await worker()
        assert second != first and worker.rotations == 1
        stats = runner.app[BROKER].stats()
        assert (stats["issued"], stats["rotations"]) == (2, 1)
    finally:
        await runner.cleanup()


async def test_broker_per_call_mode_mints_every_time(emulator: EmulatorServer) -> None:
    runner, url = await start_broker(KEY, emulator.base_url, token=TOKEN, share=False)
    try:
        values = {json.loads((await http("POST", f"{url}/v1/credentials", json={"dialect": "beta"}))[1])["value"]
                  for _ in range(3)}  # fmt: skip
        assert len(values) == 3
        worker = BrokerClient(url, "beta", None, TOKEN)
        assert await worker() != await worker()  # the worker does not cache a per-call secret either
    finally:
        await runner.cleanup()


async def test_broker_requires_its_token_and_says_nothing(broker: tuple[str, CredentialBroker]) -> None:
    url, core = broker
    bodies: list[str] = []
    for token in (None, "wrong", TOKEN[:-1], TOKEN + "x", ""):
        for method, path, kwargs in (
            ("POST", "/v1/credentials", {"json": {"dialect": "ga"}}),
            ("GET", "/v1/credentials/stats", {}),
        ):
            status, text = await http(method, url + path, token, **kwargs)
            assert status == 401, (token, path)
            assert json.loads(text) == {
                "error": {"code": "unauthorized", "message": "a valid broker token is required"}
            }
            bodies.append(text)
    status, text = await http("POST", f"{url}/v1/credentials", None, json={"dialect": "ga"},
                              headers={"Authorization": f"Basic {TOKEN}"})  # fmt: skip
    assert status == 401
    assert core.stats()["issued"] == 0 and core.unauthorized == 11
    with pytest.raises(ConnectError) as info:
        await BrokerClient(url, "ga", None, "wrong-token")()
    assert (info.value.error_class, info.value.retryable) == (ev.ErrorClass.AUTH, False)
    assert next_step(info.value.error_class, info.value.retryable, 0, RetryPolicy()) is Step.GIVE_UP
    for body in bodies:
        assert KEY not in body and TOKEN not in body and "ek_" not in body


@pytest.mark.parametrize(
    "body, code",
    [
        ({"dialect": "v2"}, "invalid_dialect"),
        ({}, "invalid_dialect"),
        ({"dialect": "ga", "model": "../../etc"}, "invalid_model"),
        ({"dialect": "ga", "model": 7}, "invalid_model"),
        ({"dialect": "ga", "key": KEY}, "unknown_parameter"),
        ({"dialect": "ga", KEY: 1}, "unknown_parameter"),
        ({"dialect": "ga", "rejected": KEY}, "invalid_rejected"),
        ("not json", "invalid_json"),
        ([1, 2], "invalid_json"),
    ],
)
async def test_broker_bad_requests(broker: tuple[str, CredentialBroker], body: Any, code: str) -> None:
    url, core = broker
    kwargs = {"data": body} if isinstance(body, str) else {"json": body}
    status, text = await http("POST", f"{url}/v1/credentials", **kwargs)
    assert status == 400 and json.loads(text)["error"]["code"] == code
    assert KEY not in text
    assert core.bad_requests == 1


async def test_broker_upstream_failure_keeps_its_class_and_hides_the_key(emulator: EmulatorServer) -> None:
    wrong = "sk-wrong-long-lived-ABCDEF987"
    runner, url = await start_broker(wrong, emulator.base_url, token=TOKEN)
    try:
        status, text = await http("POST", f"{url}/v1/credentials", json={"dialect": "ga"})
        assert status == 502
        assert json.loads(text) == {
            "error": {
                "code": "upstream_failed",
                "message": "the upstream credential endpoint failed",
                "class": "auth",
                "retryable": True,
                "status": "401",
            }
        }
        with pytest.raises(ConnectError) as info:
            await BrokerClient(url, "ga", None, TOKEN)()
        assert (info.value.error_class, info.value.retryable, info.value.code) == (ev.ErrorClass.AUTH, True, "401")
        status, stats = await http("GET", f"{url}/v1/credentials/stats")
        assert json.loads(stats)["failures"] == 2
        for text_ in (text, stats, str(info.value)):
            assert wrong not in text_ and "sk-wro" not in text_
    finally:
        await runner.cleanup()


async def test_an_unreachable_broker_is_a_network_failure() -> None:
    with pytest.raises(ConnectError) as info:
        await BrokerClient("http://127.0.0.1:9", "ga", None, TOKEN, timeout_s=2.0)()
    assert (info.value.error_class, info.value.retryable) == (ev.ErrorClass.NETWORK, True)
    assert TOKEN not in str(info.value)


WORKER = """
import asyncio, json, logging, os, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
from bridge import events as ev
from bridge.realtime.client import RealtimeClient
from bridge.realtime.credentials import Sources
from bridge.realtime.dialects import get_dialect

async def main():
    base = sys.argv[1]
    sources = Sources.from_environment(base, os.environ.get("OPENAI_API_KEY"))
    out = {"mode": sources.mode, "env": dict(os.environ)}
    for name in ("ga", "beta"):
        dialect = get_dialect(name)
        client = RealtimeClient(dialect, base, sources.get(dialect))
        await client.connect()
        event = await asyncio.wait_for(client.next_event(), 5)
        out[name] = type(event).__name__
        await client.close()
    print(json.dumps(out))

asyncio.run(main())
"""


async def test_a_worker_process_connects_through_the_broker_without_the_key(
    emulator: EmulatorServer, broker: tuple[str, CredentialBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The serve process holds the key (OPENAI_API_KEY); the worker it spawns gets the broker URL and token instead,
    connects in both dialects, and its environment, output and logs never contain the key."""
    url, core = broker
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env |= {BROKER_URL_ENV: url, BROKER_TOKEN_ENV: TOKEN, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WORKER, emulator.base_url,
        env=env, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    out = json.loads(stdout.decode().strip().splitlines()[-1])
    assert out["mode"] == "broker"
    assert (out["ga"], out["beta"]) == ("SessionReady", "SessionReady")
    assert "OPENAI_API_KEY" not in out["env"]
    assert KEY not in json.dumps(out["env"])
    assert KEY.encode() not in stdout and KEY.encode() not in stderr
    assert b"Authorization: [redacted]" in stderr  # it authenticated (the handshake is logged, redacted)
    assert b": issued" in stderr and b"ek_" not in stderr  # with a credential fetched from the broker
    assert core.stats()["issued"] == 2  # one per dialect


async def test_broker_cli_refuses_to_start_without_a_token(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from bridge.serve.broker import main

    monkeypatch.delenv(BROKER_TOKEN_ENV, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert main(["--port", "0"]) == 2
    err = capsys.readouterr().err
    assert BROKER_TOKEN_ENV in err and KEY not in err


async def test_broker_cli_serves(emulator: EmulatorServer) -> None:
    """``callbridge tokens`` as its own process: prints its URL, mints with the key from its environment."""
    env = {**os.environ, "OPENAI_API_KEY": KEY, BROKER_TOKEN_ENV: TOKEN, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.serve.broker", "--port", "0", "--upstream", emulator.base_url,
        env=env, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        url = json.loads(line)["broker_url"]
        value = await BrokerClient(url, "beta", None, TOKEN)()
        assert value.startswith("ek_")
    finally:
        proc.terminate()
        _, stderr = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0
    assert KEY.encode() not in stderr and TOKEN.encode() not in stderr


# --------------------------------------------------------------------------------------------------------------
# websockets logs the handshake headers at DEBUG, Authorization included: the client's logger redacts them


async def test_static_key_on_the_socket_stays_out_of_debug_logs(
    emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = RealtimeClient(GA, emulator.base_url, StaticKey(KEY))
    await client.connect()
    await first_event(client)
    await client.close()
    assert "Authorization" in caplog.text and "[redacted]" in caplog.text  # the handshake was logged, redacted
    assert KEY not in caplog.text
