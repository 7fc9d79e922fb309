"""A supervisor's kill switch, with accounts and a real Redis: the server's rule (``PUT /api/rollout/{dp}/kill``: a
supervisor may turn the kill switch on and off with a reason, audited with the account; weights, lists and every other
change stay an admin's, and a viewer has neither), who holds it (only its holder or a role at least as high turns it
off: an admin's stop is not a supervisor's to undo, whatever route or change they try), then the button in a real
Chromium: asked first, a reason required, the flag and the audit after; the holder shown beside the switch, and a
supervisor's button on an admin's switch inert, focusable and saying why."""

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


Console = tuple[TestClient[Any, Any], dict[str, dict[str, str]], RolloutStore]
KEY = (b"a rollout key of 32 bytes, test!",)  # the flags are signed: a holder written on one must keep it obeyed


@pytest.fixture(params=[()], ids=["unsigned"])
async def console(request: pytest.FixtureRequest) -> AsyncIterator[Console]:
    """The console's app on a real Redis, with an admin, a supervisor and a viewer; each one's bearer header. The
    store signs with the keys of ``request.param`` (indirect parametrization; none by default)."""
    if redis_server_binary() is None:
        pytest.skip("needs a redis-server binary")
    with EmbeddedRedis() as server:
        users, tokens = Users(), {}
        for name, role, password in ACCOUNTS:
            users = add_user(users, name, role, password)
            users, tokens[name] = add_token(users, name)
        client = aioredis.from_url(server.url, decode_responses=True)
        specs = {"canary": CANARY.rollout_spec}
        rollouts = RolloutStore(client=client, specs=specs, rollout_keys=request.param)  # type: ignore[arg-type]
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
        404, {"error": "dialplan: not a rollout dialplan here (rollout dialplans: canary)", "field": "dialplan"},
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
    audit = [(a.who, a.reason, a.old["kill"], a.new["kill"]) for a in await rollouts.audit("canary")]
    assert audit == [("sam", "fixed upstream", True, False),
                     ("sam", "ga answers in the wrong language", False, True)]  # fmt: skip
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


async def _panel(http: TestClient[Any, Any], headers: dict[str, str]) -> dict[str, Any]:
    body = await (await http.get("/api/console/rollout", headers=headers)).json()
    (card,) = body["dialplans"]
    return dict(card)


@pytest.mark.parametrize("console", [KEY], ids=["signed"], indirect=True)
async def test_a_kill_switch_is_turned_off_only_by_its_holder_or_a_role_as_high(console: Console) -> None:
    http, auth, rollouts = console
    kill = "/api/rollout/canary/kill"

    # -- an admin stops the candidate: the flag names her, and stays obeyed under its signature
    status, body = await _put(http, kill, {"kill": True, "reason": "ga leaks the account number"}, auth["ada"])
    assert status == 200 and body["flag"]["kill"] is True, body
    held = str(body["flag"].get("kill_at", ""))
    assert (body["flag"].get("kill_by"), body["flag"].get("kill_role"), held[:2], held[-1:]) == (
        "ada", "admin", "20", "Z",
    )  # fmt: skip
    flag = await rollouts.stored_flag("canary")
    assert flag is not None and (flag.kill, flag.kill_by, flag.kill_role) == (True, "ada", "admin")
    assert rollouts.refusal("canary") is None and not rollouts.fail_safe("canary")
    (entry,) = await rollouts.audit("canary")
    assert (entry.who, entry.new) == ("ada", {"kill": True, "kill_by": "ada", "kill_role": "admin", "kill_at": held})
    lift = "turning it off needs the admin role or ada, who turned it on (you are signed in as a supervisor)"
    for name, refused in (("sam", lift), ("ada", None)):
        card = await _panel(http, auth[name])
        since = body["flag"]["kill_at_unix"]
        assert card["kill_holder"] == {"by": "ada", "role": "admin", "at": held, "at_unix": since}
        assert card["lift_refused"] == refused, name

    # -- the supervisor may not undo it: by the kill switch's route, nor by any change around it
    refusal = {
        "error": f"forbidden: the kill switch of canary is held by ada (admin, since {held}): turning it off needs "
        "the admin role or ada, who turned it on (you are signed in as a supervisor)",
        "held_by": {"by": "ada", "role": "admin", "at": held},
        "needs": "admin",
    }
    assert await _put(http, kill, {"kill": False, "reason": "looks fine to me"}, auth["sam"]) == (403, refusal)
    assert (await _put(http, kill, {"kill": True, "reason": "mine now"}, auth["sam"]))[1]["changed"] is False
    for change in ({"weights": {"ga": 100, "beta": 0}}, {"allow": {"ga": ["+15550100"]}}, {"kill": False}):
        status, _ = await _put(http, "/api/rollout/canary", {**change, "reason": "x"}, auth["sam"])
        assert status == 403, change
    status, _ = await _put(http, kill, {"kill": False, "weights": {"ga": 100}, "reason": "x"}, auth["sam"])
    assert status == 400
    assert await rollouts.stored_flag("canary") == flag and len(await rollouts.audit("canary")) == 1

    # -- an admin's change of the weights leaves the switch and its holder; the admin lifts it
    status, body = await _put(http, "/api/rollout/canary", {"weights": "ga=10,beta=90", "reason": "x"}, auth["ada"])
    assert status == 200 and (body["flag"]["kill"], body["flag"]["kill_by"]) == (True, "ada"), body
    status, body = await _put(http, kill, {"kill": False, "reason": "ga fixed"}, auth["ada"])
    assert status == 200 and body["flag"]["kill"] is False and body["flag"]["kill_by"] == "", body
    assert (await _panel(http, auth["sam"]))["kill_holder"] is None

    # -- a supervisor's stop: its supervisor turns it off, and an admin may turn off the next one
    for lifter in ("sam", "ada"):
        status, body = await _put(http, kill, {"kill": True, "reason": "ga loops"}, auth["sam"])
        assert status == 200 and (body["flag"]["kill_by"], body["flag"]["kill_role"]) == ("sam", "supervisor")
        assert (await _panel(http, auth["sam"]))["lift_refused"] is None
        status, body = await _put(http, kill, {"kill": False, "reason": "fixed"}, auth[lifter])
        assert status == 200 and body["changed"] and body["flag"]["kill"] is False, (lifter, body)

    # -- an admin turning a supervisor's switch on again takes it over: the supervisor may not turn it off then
    await _put(http, kill, {"kill": True, "reason": "ga loops"}, auth["sam"])
    status, body = await _put(http, kill, {"kill": True, "reason": "keeping it until the vendor answers"}, auth["ada"])
    assert status == 200 and body["changed"] and (body["flag"]["kill_by"], body["flag"]["kill_role"]) == (
        "ada", "admin",
    )  # fmt: skip
    status, body = await _put(http, kill, {"kill": False, "reason": "x"}, auth["sam"])
    assert status == 403 and body["held_by"]["by"] == "ada"
    assert rollouts.refusal("canary") is None
    who = [(a.who, a.new.get("kill"), a.new.get("kill_by")) for a in await rollouts.audit("canary")]
    assert who[:2] == [("ada", None, "ada"), ("sam", True, "sam")]  # the takeover: the holder alone changed


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
async def test_the_console_names_the_holder_and_a_supervisor_cannot_turn_off_an_admins_kill_switch(
    console: Console,
) -> None:
    from _cdp import Browser

    http, auth, rollouts = console
    card = "article[data-dialplan=canary]"
    ask = f"{card} form.kill button.ask"
    status, body = await _put(http, "/api/rollout/canary/kill", {"kill": True, "reason": "ga leaks"}, auth["ada"])
    assert status == 200
    flag = await rollouts.stored_flag("canary")
    since = f"since {str(body['flag'].get('kill_at'))[:19].replace('T', ' ')} UTC"  # to the second, as every time
    async with Browser() as browser:
        page = await browser.page()
        await sign_in(page, str(http.make_url("/")), "sam-supervises-9", name="sam")
        await page.wait_for(f"document.querySelector('{ask}') !== null", 20)

        # -- who holds it, beside the switch: in the card's facts and under the supervisor's button
        assert await page.text(f"{card} dd[data-setting=kill]") == "on"
        assert await page.text(f"{card} dd[data-setting=kill-holder]") == f"ada (admin) {since}"
        assert await page.text(f"{card} form.kill p.holder") == f"Held by ada (admin) {since}."
        assert await page.text(f"{card} form.kill p.kill-reason") == "Turned on because: “ga leaks”"  # the admin's
        assert await page.text(f"{card} dd[data-setting=kill-reason]") == "ga leaks"
        reason = "Turning it off needs the admin role or ada, who turned it on (you are signed in as a supervisor)."
        assert await page.text(f"{card} form.kill p.refused") == reason

        # -- the button: marked disabled for assistive technology, still in the tab order, described by the reason
        assert await page.text(ask) == "Turn the kill switch off"
        described = await page.eval(
            f"(() => {{ const b = document.querySelector('{ask}'); b.focus();"
            " return [b.getAttribute('aria-disabled'), b.disabled, document.activeElement === b,"
            " b.getAttribute('aria-describedby').split(' ').map((id) => document.getElementById(id).textContent)];"
            " })()"
        )
        because = "Turned on because: “ga leaks”"
        assert described == ["true", False, True, [f"Held by ada (admin) {since}.", because, reason]]
        # pressing it from the keyboard says why, and asks nothing
        for kind in ("keyDown", "keyUp"):
            await page.send("Input.dispatchKeyEvent", {"type": kind, "key": "Enter", "code": "Enter",
                                                       "windowsVirtualKeyCode": 13, "text": "\r"})  # fmt: skip
        await page.wait_for(f"document.querySelector('{card} form.kill .message').textContent !== ''")
        assert await page.text(f"{card} form.kill .message") == reason
        assert await page.eval(f"document.querySelector('{card} form.kill .confirm').hidden") is True
        await page.click(ask)  # nor does a click
        assert await page.eval(f"document.querySelector('{card} form.kill .confirm').hidden") is True
        assert await rollouts.stored_flag("canary") == flag and len(await rollouts.audit("canary")) == 1

        # -- once the admin has lifted it, the supervisor's switch is theirs to turn on again
        await _put(http, "/api/rollout/canary/kill", {"kill": False, "reason": "fixed"}, auth["ada"])
        await page.click("#rollout-refresh")
        await page.wait_for(
            f"document.querySelector('{ask}')?.textContent === 'Kill switch: every call on the safe variant'"
        )
        assert await page.eval(f"document.querySelector('{ask}').getAttribute('aria-disabled')") is None
        assert await page.eval(f"document.querySelector('{card} dd[data-setting=kill-holder]')") is None
        assert page.problems == [], page.problems
        assert not [e for e in page.network_errors if "403" in e], page.network_errors  # nothing was sent and refused
