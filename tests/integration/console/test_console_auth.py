"""The console's doors, in a real Chromium against a running ``serve``: a wrong token is refused the same way, slowly,
and counted; the session is an HttpOnly SameSite=Strict cookie the page cannot read, and the token is nowhere after
sign-in; a change without the CSRF token, or from a read-only supervisor, is refused (by the page and by the API);
an expired session and a signed-out one are refused even when the browser presents their cookie again."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from _cdp import Browser
from _console_helpers import (
    OPERATOR_TOKEN,
    READONLY_TOKEN,
    console_stack,
    fetch,
    needs_browser_stack,
    sign_in,
)

from bridge.supervisor.auth import REFUSED_DELAY_S

pytestmark = needs_browser_stack
SESSION_S = 10.0


def refused_total(metrics_text: str, via: str) -> float:
    match = re.search(rf'^callbridge_supervisor_refused_tokens_total{{via="{via}"}} (\S+)$', metrics_text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_sign_in_tokens_roles_csrf_and_session_expiry(tmp_path: Path) -> None:
    async with console_stack(tmp_path, session_s=SESSION_S) as stack, Browser() as browser:
        # -- the page itself: strict CSP, no data, no token
        page = await browser.page()
        await page.goto(stack.url)
        headers = await page.eval("fetch('/').then((r) => Object.fromEntries(r.headers.entries()))")
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert headers["x-content-type-options"] == "nosniff"

        # -- a wrong token, through the form: refused after the delay, the same answer every time, counted
        _, before = await stack.get("/metrics")
        for wrong in ("nope", OPERATOR_TOKEN[:-1] + "x", READONLY_TOKEN + " "):
            await page.eval("document.getElementById('signin-error').textContent = ''")
            await page.type("#token", wrong)
            t0 = time.monotonic()
            await page.click("#signin-button")
            await page.wait_for("document.getElementById('signin-error').textContent === 'Wrong token.'")
            assert time.monotonic() - t0 >= REFUSED_DELAY_S
            assert await page.eval("document.getElementById('console').hidden") is True
        answers = [await fetch(page, "POST", "/auth/signin", {"token": t}) for t in ("a", "b" * 64)]
        assert answers[0] == answers[1] == [401, json.dumps({"error": "sign-in failed"})]
        _, after = await stack.get("/metrics")
        assert refused_total(after, "signin") - refused_total(before, "signin") == 5
        status, _ = await stack.get("/api/calls", token="wrong")
        assert status == 401
        _, after_bearer = await stack.get("/metrics")
        assert refused_total(after_bearer, "bearer") - refused_total(after, "bearer") == 1

        # -- the operator signs in: the session is a cookie the page cannot read; the token is gone from everywhere
        await sign_in(page, stack.url, OPERATOR_TOKEN, name="Olga")
        assert await page.text("#who") == "Olga (admin, console)"
        (cookie,) = await page.cookies()
        assert cookie["name"] == "cb_console" and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert 0 < cookie["expires"] - time.time() <= SESSION_S + 1
        assert await page.eval("document.cookie") == ""
        await page.wait_for("document.querySelector('article[data-dialplan=canary]')")
        html = await page.eval("document.documentElement.outerHTML")
        assert OPERATOR_TOKEN not in html and await page.eval("document.getElementById('token').value") == ""
        assert await page.eval("document.querySelector('article[data-dialplan=canary] form.editor') !== null")

        # -- a change without the CSRF token, or with a wrong one, is refused; with it, it goes through
        csrf = json.loads((await fetch(page, "GET", "/auth/session"))[1])["csrf"]
        change = {"weights": {"ga": 50, "beta": 50}, "reason": "csrf probe"}
        assert (await fetch(page, "PUT", "/api/rollout/canary", change))[0] == 403
        assert (await fetch(page, "PUT", "/api/rollout/canary", change, {"X-CSRF-Token": csrf[::-1]}))[0] == 403
        assert (await fetch(page, "POST", "/auth/signout"))[0] == 403  # signing out is a change too
        status, flags = await stack.get("/api/rollout", token=OPERATOR_TOKEN)
        assert status == 200 and "canary" not in flags["flags"], "a refused change wrote something"
        status, body = await fetch(page, "PUT", "/api/rollout/canary", change, {"X-CSRF-Token": csrf})
        assert status == 200 and json.loads(body)["flag"]["weights"] == {"ga": 50, "beta": 50}
        _, flags = await stack.get("/api/rollout", token=OPERATOR_TOKEN)
        assert flags["audit"][0]["who"] == "Olga (admin, console)"

        # -- a read-only supervisor, in a browser context of their own: sees the rollout, cannot change it
        viewer = await browser.page(own_context=True)
        await sign_in(viewer, stack.url, READONLY_TOKEN, name="Rita")
        await viewer.wait_for("document.querySelector('article[data-dialplan=canary] tr[data-variant=ga] .share')")
        assert await viewer.text("article[data-dialplan=canary] tr[data-variant=ga] .share") == "50 %"
        assert await viewer.eval("document.querySelector('form.editor')") is None
        assert "Only an admin" in await viewer.text("#rollout-note")
        ro_csrf = json.loads((await fetch(viewer, "GET", "/auth/session"))[1])["csrf"]
        for method, path in (("PUT", "/api/rollout/canary"), ("POST", "/api/rollout/canary/preview")):
            headers = {"X-CSRF-Token": ro_csrf}
            status, body = await fetch(viewer, method, path, {"kill": True, "reason": "x"}, headers)
            assert status == 403 and "needs the admin role" in json.loads(body)["error"]
        assert await stack.put("/api/rollout/canary", {"kill": True, "reason": "x"}, READONLY_TOKEN) == (
            403, {"error": "forbidden: to change a rollout needs the admin role (viewer here)"},
        )  # fmt: skip
        assert (await stack.get("/api/rollout", token=READONLY_TOKEN))[0] == 200
        _, flags = await stack.get("/api/rollout", token=OPERATOR_TOKEN)
        assert flags["flags"]["canary"]["weights"] == {"ga": 50, "beta": 50}

        # -- the operator's session expires: the open page is told (its event stream ends) and goes back to the form
        await page.wait_for("!document.getElementById('signin').hidden", timeout=SESSION_S + 5)
        assert "session ended" in await page.text("#signin-error")
        # the browser dropped the cookie; presenting it again, with a far expiry, does not bring the session back
        await page.set_cookie({**_settable(cookie), "expires": time.time() + 3600})
        assert (await fetch(page, "GET", "/api/calls"))[0] == 401
        assert (await fetch(page, "GET", "/auth/session"))[0] == 401
        await page.reload()
        await page.wait_for("!document.getElementById('signin').hidden")

        # -- signing out ends the session on the server too
        await sign_in(page, stack.url, OPERATOR_TOKEN)
        (cookie,) = await page.cookies()
        await page.click("#signout")
        await page.wait_for("!document.getElementById('signin').hidden")
        assert await page.cookies() == []
        await page.set_cookie(_settable(cookie))
        assert (await fetch(page, "GET", "/api/calls"))[0] == 401

        # -- no token in any URL the pages asked for, any event they received, or serve's log
        seen = json.dumps([page.urls, viewer.urls, page.sse, viewer.sse])
        assert any(e["event"] == "snapshot" for e in page.sse)  # the scan covers real event traffic
        for token in (OPERATOR_TOKEN, READONLY_TOKEN):
            assert token not in seen
        assert page.problems == [] and viewer.problems == [], (page.problems, viewer.problems)
    log = stack.log.read_text()
    assert "Olga (admin, console) signed in" in log  # the log is where we looked
    for token in (OPERATOR_TOKEN, READONLY_TOKEN):
        assert token not in log


def _settable(cookie: dict[str, object]) -> dict[str, object]:
    """A cookie from ``Network.getCookies`` as ``Network.setCookie`` takes it back."""
    keep = ("name", "value", "domain", "path", "expires", "httpOnly", "secure", "sameSite")
    return {k: cookie[k] for k in keep if k in cookie}
