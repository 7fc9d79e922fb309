"""The console's server side without a browser: the pure parts (latency from stream entries, the live-table diff,
the rollout panel and its preview, tokens and sessions) and the HTTP app's doors (aiohttp's test client, no Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.errors import ConfigError
from bridge.rollout.health import WindowStats
from bridge.rollout.policy import RolloutFlag, legacy_spec
from bridge.store.read import CallSummary, StreamEntry
from bridge.supervisor.api import ConsoleOptions, create_app
from bridge.supervisor.auth import Sessions, Tokens, csrf_ok, display_name
from bridge.supervisor.rollout_view import dialplan_panel, preview
from bridge.supervisor.stream import diff, row
from bridge.supervisor.timeline import SAME_AS_METRICS, latency


def entry(t: float, kind: str, **data: str) -> StreamEntry:
    return StreamEntry(f"{int(t * 1000)}-0", kind, "", t, data)


def segment(measured: dict[str, object], name: str) -> dict[str, object]:
    segments = measured["segments"]
    assert isinstance(segments, list)
    (found,) = [s for s in segments if s["segment"] == name]
    return dict(found)


# ------------------------------------------------------------------------------------------------ latency
def test_latency_segments_are_measured_between_the_entries() -> None:
    entries = [
        entry(100.000, "ringing"),
        entry(100.250, "session_configured"),
        entry(100.300, "answered"),
        entry(100.310, "phase", old="IDLE", new="LISTENING"),
        entry(102.000, "speech_started"),
        entry(103.000, "speech_stopped"),
        entry(103.120, "response_started"),
        entry(103.400, "phase", old="THINKING", new="SPEAKING"),
        entry(104.000, "phase", old="SPEAKING", new="LISTENING"),
        entry(105.000, "speech_started"),  # the caller again ...
        entry(106.000, "speech_stopped"),
        entry(106.050, "speech_started"),  # ... and again before any answer: that turn is not measured
        entry(107.000, "speech_stopped"),
        entry(107.200, "response_started"),
        entry(107.800, "phase", old="THINKING", new="SPEAKING"),
        entry(108.000, "realtime_closed"),
        entry(108.900, "recovered"),
    ]
    measured = latency(entries)
    # the caller spoke first: no greeting; the first reply is the first turn (caller stops -> agent audio)
    assert measured["greeting_ms"] is None and measured["first_reply_ms"] == pytest.approx(400.0)
    assert segment(measured, "session_setup")["last_ms"] == pytest.approx(250.0)
    response = segment(measured, "response")
    assert (response["count"], response["last_ms"], response["max_ms"]) == (2, pytest.approx(200), pytest.approx(200))
    turn = segment(measured, "turn")
    assert turn["count"] == 2 and turn["median_ms"] == pytest.approx(600.0) and turn["max_ms"] == pytest.approx(800.0)
    assert segment(measured, "recovery")["last_ms"] == pytest.approx(900.0)


def test_the_segments_the_metrics_also_measure_keep_their_names() -> None:
    assert {"session_setup", "greeting", "turn"} == SAME_AS_METRICS


def test_an_agent_that_speaks_first_has_a_greeting_and_then_a_first_reply() -> None:
    entries = [
        entry(100.000, "answered"),
        entry(100.700, "phase", old="THINKING", new="SPEAKING"),  # the greeting
        entry(102.000, "phase", old="SPEAKING", new="LISTENING"),
        entry(103.000, "speech_started"),
        entry(104.000, "speech_stopped"),
        entry(104.900, "phase", old="THINKING", new="SPEAKING"),
    ]
    measured = latency(entries)
    assert measured["greeting_ms"] == pytest.approx(700.0) and measured["first_reply_ms"] == pytest.approx(900.0)
    assert segment(measured, "greeting")["count"] == 1 and segment(measured, "turn")["count"] == 1


def test_latency_of_a_call_that_has_not_answered_yet_is_empty() -> None:
    measured = latency([entry(1.0, "ringing")])
    assert measured["greeting_ms"] is None and measured["first_reply_ms"] is None
    assert all(s["count"] == 0 and s["last_ms"] is None for s in measured["segments"])  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------------ live table
def summary(call_id: str, *, worker: str = "w0", alive: bool = True, phase: str = "LISTENING") -> CallSummary:
    return CallSummary(call_id, worker, alive, phase, "ga", "desk", "+1555", "4000", "gpt-realtime", "alloy",
                       1000.0, 3.0, "Caller: hi")  # fmt: skip


def test_rows_are_lost_when_their_worker_is_dead_or_its_heartbeat_expired() -> None:
    assert row(summary("a"), frozenset())["status"] == "live"
    assert row(summary("a", alive=False), frozenset())["status"] == "lost"
    assert row(summary("a", worker="w1"), frozenset({"w1"}))["status"] == "lost"
    assert "duration_s" not in row(summary("a"), frozenset())  # the page counts it: no event every tick


def test_the_diff_sends_only_what_changed() -> None:
    old = {c: row(summary(c), frozenset()) for c in ("a", "b")}
    new = {"b": row(summary("b", phase="SPEAKING"), frozenset()), "c": row(summary("c"), frozenset())}
    assert diff(old, new) == [("remove", {"call_id": "a"}), ("upsert", new["b"]), ("upsert", new["c"])]
    assert diff(new, dict(new)) == []


# ------------------------------------------------------------------------------------------------ rollout panel
SPEC = legacy_spec()  # the canary plan: dialect rollout with no variants of its own, GA against beta


def test_the_panel_describes_variants_weights_health_and_editable_settings() -> None:
    flag = RolloutFlag(weights={"ga": 25, "beta": 75}, allow={"ga": ("+1 555 0100",)})
    ga_stats = WindowStats(calls=10, connect_failures=1, dropped=1, greeting_p95_ms=900.0, first_reply_p95_ms=700.0,
                           priced_calls=10, cost_usd=0.5)  # fmt: skip
    panel = dialplan_panel("canary", SPEC, flag, True, {"ga": ga_stats, "beta": WindowStats(calls=30)})
    variants = [(v["name"], v["weight"], v["share_percent"], v["safe"], v["model"]) for v in panel["variants"]]
    assert variants == [("ga", 25, 25, False, "gpt-realtime"), ("beta", 75, 75, True, "gpt-4o-realtime-preview")]
    assert panel["allow"] == {"ga": ["+15550100"]} and panel["values"]["weights"] == {"ga": 25, "beta": 75}
    assert panel["values"]["allow"] == {"ga": ["+15550100"], "beta": []} and panel["safe_variant"] == "beta"
    ga = panel["health"]["rows"][0]  # health per variant, in the variants' order: side by side with the weights
    assert (ga["variant"], ga["calls"], ga["failure_rate"], ga["greeting_p95_ms"], ga["first_reply_p95_ms"],
            ga["cost_per_call_usd"]) == ("ga", 10, 0.2, 900.0, 700.0, 0.05)  # fmt: skip
    assert {c["key"] for c in panel["health"]["columns"]} <= set(ga)
    assert [e["kind"] for e in panel["editable"]] == ["weights", "switch", "variant-numbers", "variant-numbers"]
    killed = dialplan_panel("canary", SPEC, RolloutFlag(weights={"ga": 25, "beta": 75}, kill=True), True, {})
    assert [v["share_percent"] for v in killed["variants"]] == [0, 100]


def test_preview_shows_the_change_and_refuses_what_the_store_would_naming_the_field() -> None:
    old = RolloutFlag(weights={"ga": 10, "beta": 90})
    preview_ = preview("canary", SPEC, old, {"weights": "ga=50,beta=50", "deny": {"ga": ["+1555"]}})
    assert preview_["changes"] == [
        {"setting": "weights", "old": {"ga": 10, "beta": 90}, "new": {"ga": 50, "beta": 50}},
        {"setting": "deny", "old": {}, "new": {"ga": ["+1555"]}},
    ]
    assert preview_["shares"] == {"ga": 50, "beta": 50}
    assert preview("canary", SPEC, old, {"weights": {"ga": 10, "beta": 90}})["changes"] == []
    for change, field in (
        ({"weights": {"gamma": 1}}, "weights.gamma"),
        ({"weights": {"ga": -1}}, "weights"),
        ({"weights": "ga=x"}, "weights.ga"),
        ({"deny": {"beta": ["+1555"]}}, "deny.beta"),
        ({"salt": "reshuffle"}, "salt"),  # not editable from the console
        ({"allow": {"ga": ["+1555"]}, "deny": {"ga": ["+1555"]}}, "(flag)"),
    ):
        with pytest.raises(ConfigError) as exc:
            preview("canary", SPEC, old, change)
        assert exc.value.field == field, change


# ------------------------------------------------------------------------------------------------ tokens, sessions
def test_tokens_open_their_role_only() -> None:
    tokens = Tokens("operator-secret", "viewer-secret")
    assert tokens.role_of("operator-secret") == "admin"
    assert tokens.role_of("viewer-secret") == "viewer"
    for wrong in ("", "operator-secret ", "viewer", "x" * 1000):
        assert tokens.role_of(wrong) is None
    assert Tokens(None, "viewer-secret").role_of("") is None
    assert not Tokens().configured and Tokens(read_only="v").configured


def test_sessions_expire_and_close() -> None:
    now = [0.0]
    sessions = Sessions(10, clock=lambda: now[0])
    session = sessions.open("admin", "Ann\x1b[31m")
    assert session.name == "Ann[31m (admin, console)"  # control characters never reach the audit or the log
    assert sessions.get(session.id) == session and sessions.get("forged") is None
    assert csrf_ok(session, session.csrf) and not csrf_ok(session, None) and not csrf_ok(session, "x")
    now[0] = 9.9
    assert sessions.get(session.id) == session
    now[0] = 10.0
    assert sessions.get(session.id) is None and len(sessions) == 0
    other = sessions.open("viewer")
    sessions.close(other.id)
    assert sessions.get(other.id) is None
    assert display_name("  ", "viewer") == "viewer (console)"


# ------------------------------------------------------------------------------------------------ the app's doors
@pytest.fixture
async def client() -> AsyncIterator[TestClient[object, object]]:
    options = ConsoleOptions(readonly_token="ro", refused_delay_s=0.3)
    app = create_app(token="op", redis=None, rollouts=None, options=options)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_bearer_roles_and_the_slow_refusal(client: TestClient[object, object]) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    r = await client.get("/api/calls", headers={"Authorization": "Bearer nope"})
    assert (r.status, await r.json()) == (401, {"error": "unauthorized"})
    assert loop.time() - t0 >= 0.3
    r = await client.get("/api/calls")  # no credential: not a guess, answered at once
    assert r.status == 401
    r = await client.put("/api/rollout/canary", headers={"Authorization": "Bearer ro"}, json={"reason": "x"})
    assert r.status == 403
    r = await client.put("/api/rollout/canary", headers={"Authorization": "Bearer op"}, json={"reason": "x"})
    assert r.status == 503  # past the doors: no Redis configured here


async def test_a_session_needs_its_csrf_token_and_its_origin(client: TestClient[object, object]) -> None:
    r = await client.post("/auth/signin", data="token=op")  # a form post (what a cross-site page could send)
    assert r.status == 415
    r = await client.post("/auth/signin", json={"token": "op", "name": "Ann"})
    assert r.status == 200
    session = await r.json()
    assert set(session) == {"role", "name", "csrf", "expires_in_s"} and session["role"] == "admin"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=" in cookie
    assert "op" not in session.values()
    change = {"kill": True, "reason": "x"}
    assert (await client.put("/api/rollout/canary", json=change)).status == 403
    headers = {"X-CSRF-Token": session["csrf"], "Origin": "http://evil.example"}
    assert (await client.put("/api/rollout/canary", json=change, headers=headers)).status == 403
    headers = {"X-CSRF-Token": session["csrf"]}
    assert (await client.put("/api/rollout/canary", json=change, headers=headers)).status == 503  # allowed through
    page = await client.get("/")
    assert page.status == 200 and "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert '<script type="module" src="/static/main.js">' in await page.text()
