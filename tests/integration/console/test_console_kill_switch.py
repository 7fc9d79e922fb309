"""A supervisor's kill switch, with accounts and a real Redis: the server's rule (``PUT /api/rollout/{dp}/kill``: a
supervisor may turn the kill switch on and off with a reason, audited with the account; weights, lists and every other
change stay an admin's, and a viewer has neither), then the button in a real Chromium: asked first, a reason
required, the flag and the audit after."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from _console_helpers import CHROMIUM, sign_in
from aiohttp.test_utils import TestClient, TestServer
from redis import asyncio as aioredis

from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.dialplan import Dialplan
from bridge.rollout.store import RolloutStore
from bridge.supervisor.accounts import Users, add_token, add_user
from bridge.supervisor.api import ConsoleOptions, create_app

pytestmark = pytest.mark.integration
CANARY = Dialplan.model_validate({"name": "canary", "match": ["5000"], "dialect": "rollout"})  # ga | beta (safe)
ACCOUNTS = (("ada", "admin", "ada-admin-pass-1"), ("sam", "supervisor", "sam-supervises-9"),
            ("vic", "viewer", "vic-watches-only"))  # fmt: skip


@pytest.fixture
async def console() -> AsyncIterator[tuple[TestClient[Any, Any], dict[str, dict[str, str]], RolloutStore]]:
    """The console's app on a real Redis, with an admin, a supervisor and a viewer; each one's bearer header."""
    if redis_server_binary() is None:
        pytest.skip("needs a redis-server binary")
    with EmbeddedRedis() as server:
        users, tokens = Users(), {}
        for name, role, password in ACCOUNTS:
            users = add_user(users, name, role, password)
            users, tokens[name] = add_token(users, name)
        client = aioredis.from_url(server.url, decode_responses=True)
        rollouts = RolloutStore(client=client, specs={"canary": CANARY.rollout_spec})  # type: ignore[dict-item]
        app = create_app(token=None, redis=client, rollouts=rollouts, dialplans=[CANARY],
                         options=ConsoleOptions(users=users))  # fmt: skip
        async with TestClient(TestServer(app)) as http:
            yield http, {n: {"Authorization": f"Bearer {t}"} for n, t in tokens.items()}, rollouts
        await client.aclose()


async def _put(http: TestClient[Any, Any], path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    r = await http.put(path, json=body, headers=headers)
    return r.status, await r.json()


async def test_a_supervisor_may_turn_the_kill_switch_and_nothing_else(
    console: tuple[TestClient[Any, Any], dict[str, dict[str, str]], RolloutStore],
) -> None:
    http, auth, rollouts = console
    kill = "/api/rollout/canary/kill"

    # -- what each role is told it may do
    for name, can_change, can_kill in (("ada", True, True), ("sam", False, True), ("vic", False, False)):
        panel = await (await http.get("/api/console/rollout", headers=auth[name])).json()
        assert (panel["can_change"], panel["can_kill"]) == (can_change, can_kill), name

    # -- a supervisor's weights, lists, or kill switch through the general change: the admin's
    for change in ({"weights": {"ga": 50, "beta": 50}}, {"deny": {"ga": ["+15550100"]}}, {"kill": True}):
        assert await _put(http, "/api/rollout/canary", {**change, "reason": "x"}, auth["sam"]) == (
            403, {"error": "forbidden: to change a rollout needs the admin role (supervisor here)"},
        )  # fmt: skip
    # ... and the kill switch's door takes the kill switch only, with a reason
    for body, field in (({"kill": True, "weights": {"ga": 100}, "reason": "x"}, "weights"),
                        ({"kill": "yes", "reason": "x"}, "kill"), ({"reason": "x"}, "kill"),
                        ({"kill": True}, "reason"), ({"kill": True, "reason": "  "}, "reason")):  # fmt: skip
        status, refusal = await _put(http, kill, body, auth["sam"])
        assert (status, refusal["field"]) == (400, field), body
    assert await _put(http, "/api/rollout/nowhere/kill", {"kill": True, "reason": "x"}, auth["sam"]) == (
        400, {"error": "dialplan: not a rollout dialplan here (rollout dialplans: canary)", "field": "dialplan"},
    )  # fmt: skip
    assert await _put(http, kill, {"kill": True, "reason": "x"}, auth["vic"]) == (
        403, {"error": "forbidden: the kill switch needs the supervisor role (viewer here)"},
    )  # fmt: skip
    assert await rollouts.stored_flag("canary") is None, "a refused change wrote something"

    # -- on, then off: each audited with the account and the reason
    status, body = await _put(http, kill, {"kill": True, "reason": "ga answers in the wrong language"}, auth["sam"])
    assert status == 200 and body["changed"] and body["flag"]["kill"] is True, body
    flag = await rollouts.stored_flag("canary")
    assert flag is not None and flag.kill and flag.weights == {"ga": 0, "beta": 100}  # the weights as they were
    status, body = await _put(http, kill, {"kill": False, "reason": "fixed upstream"}, auth["sam"])
    assert status == 200 and body["flag"]["kill"] is False, body
    audit = [(a.who, a.reason, a.old, a.new) for a in await rollouts.audit("canary")]
    assert audit == [("sam", "fixed upstream", {"kill": True}, {"kill": False}),
                     ("sam", "ga answers in the wrong language", {"kill": False}, {"kill": True})]  # fmt: skip
    status, body = await _put(http, kill, {"kill": True, "reason": "an admin may too"}, auth["ada"])
    assert status == 200 and body["flag"]["kill"] is True


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
async def test_the_supervisors_kill_switch_button_asks_for_a_reason_then_sends_every_call_to_the_safe_variant(
    console: tuple[TestClient[Any, Any], dict[str, dict[str, str]], RolloutStore],
) -> None:
    from _cdp import Browser

    http, _, rollouts = console
    card = "article[data-dialplan=canary]"
    async with Browser() as browser:
        page = await browser.page()
        await sign_in(page, str(http.make_url("/")), "sam-supervises-9", name="sam")
        await page.wait_for(f"document.querySelector('{card} form.kill button.ask') !== null", 20)
        assert await page.eval(f"document.querySelector('{card} form.editor')") is None  # no weights, no lists
        assert "other changes need an admin" in await page.text("#rollout-note")
        assert await page.text(f"{card} form.kill button.ask") == "Kill switch: every call on the safe variant"
        assert (await page.text(f"{card} .unsigned")).startswith("Outcome records are not signed (no rollout_key)")

        # -- asked first; no reason, no change
        await page.click(f"{card} form.kill button.ask")
        await page.wait_for(f"document.querySelector('{card} form.kill .confirm').hidden === false")
        assert "to beta, whatever the weights and lists?" in await page.text(f"{card} form.kill .confirm p")
        await page.click(f"{card} form.kill button.yes")
        await page.wait_for(f"document.querySelector('{card} form.kill .message').textContent !== ''")
        assert await page.text(f"{card} form.kill .message") == "A reason is required."
        assert await rollouts.stored_flag("canary") is None

        # -- with a reason: every call on the safe variant, and the audit names the account
        await page.type(f"{card} form.kill input[name=reason]", "ga loops on the greeting")
        await page.click(f"{card} form.kill button.yes")
        await page.wait_for(f"document.querySelector('{card} dd[data-setting=kill]').textContent === 'on'")
        assert await page.text(f"{card} tr[data-variant=beta] .share") == "100 %"
        assert await page.text(f"{card} form.kill button.ask") == "Turn the kill switch off"
        await page.wait_for("document.querySelector('#audit tbody tr .who')?.textContent === 'sam'")
        assert await page.text("#audit tbody tr .reason") == "ga loops on the greeting"
        flag = await rollouts.stored_flag("canary")
        assert flag is not None and flag.kill
        assert page.problems == [], page.problems
        assert not [e for e in page.network_errors if "403" in e], page.network_errors  # nothing refused
