"""The console's call actions and views by role, in a real Chromium with a real SIP call and accounts from a users
file: a supervisor sees the caller, the variant column and filters, and hangs the call up from the page (confirmed in
the page first; the caller gets the BYE, the audit names the account); a viewer of the same call sees the caller as
it is (the softphone calls as "softphone", a name: masking is for numbers) and no action buttons, and the API refuses
them."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from _cdp import Browser
from _console_helpers import caller_wav, console_stack, fetch, needs_browser_stack, sign_in

from bridge.store import keys
from bridge.supervisor.accounts import Users, add_user, save_users
from bridge.supervisor.action_audit import fold

pytestmark = needs_browser_stack
SAM, VERA = ("sam", "sam-supervises-9"), ("vera", "vera-views-only-7")


def row(call_id: str, cell: str) -> str:
    return f"document.querySelector('#calls tbody tr[data-call-id={json.dumps(call_id)}] {cell}')"


async def test_a_supervisor_hangs_up_from_the_page_a_viewer_cannot(tmp_path: Path) -> None:
    users = add_user(add_user(Users(), SAM[0], "supervisor", SAM[1]), VERA[0], "viewer", VERA[1])
    save_users(tmp_path / "users.yaml", users)
    play = caller_wav(tmp_path / "caller.wav", lead_in_s=3.0)
    settings = {"users_file": str(tmp_path / "users.yaml"), "log_format": "json"}
    async with console_stack(tmp_path, settings=settings) as stack, Browser() as browser:
        phone = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "call", f"sip:4000@127.0.0.1:{stack.sip_port}", "--play", str(play),
            "--loop", "--hangup-after", "60", "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        sam = await browser.page()
        await sign_in(sam, stack.url, SAM[1], name=SAM[0])
        assert await sam.text("#who") == "sam"
        vera = await browser.page(own_context=True)
        await sign_in(vera, stack.url, VERA[1], name=VERA[0])
        call_id, _ = await sam.wait_for(
            "document.querySelector('#calls tbody tr[data-call-id]')?.dataset.callId", timeout=30
        )
        caller = await stack.call_field(call_id, "caller")
        await vera.wait_for(f"{row(call_id, '.caller')} !== null", timeout=10)

        # -- what each sees: the variant column; the caller, a name, whole for both (a number is masked for the
        # viewer: test_console_ended.py); the viewer has no row actions
        assert caller == "softphone"
        assert await sam.text(f"#calls tr[data-call-id='{call_id}'] .variant") == "ga"
        assert await sam.text(f"#calls tr[data-call-id='{call_id}'] .caller") == caller
        assert await vera.text(f"#calls tr[data-call-id='{call_id}'] .caller") == caller
        assert await sam.eval(f"{row(call_id, 'button.hangup')} !== null") is True
        assert await vera.eval(f"{row(call_id, 'button')} === null") is True

        # -- the filters: a caller search that does not match hides the row, a matching plan shows it
        await sam.type("#filter-caller", "no-such-number")
        await sam.wait_for(f"{row(call_id, '')}.hidden === true")
        assert await sam.text("#calls-count") == "(0 of 1 shown)"  # the heading counts what the table shows
        await sam.eval("document.getElementById('filter-caller').value = ''")
        await sam.eval(
            "(() => { const s = document.getElementById('filter-dialplan'); s.value = 'desk';"
            " s.dispatchEvent(new Event('input')); })()"
        )
        await sam.wait_for(f"{row(call_id, '')}.hidden === false")
        assert await sam.text("#calls-count") == "(1)"

        # -- the viewer: the call's detail has no action buttons, and the API refuses them
        await vera.click(f"#calls tbody tr[data-call-id='{call_id}']")
        await vera.wait_for("document.getElementById('detail-state').textContent === 'live'")
        assert await vera.eval("document.getElementById('actions').hidden") is True
        csrf = json.loads((await fetch(vera, "GET", "/auth/session"))[1])["csrf"]
        status, body = await fetch(vera, "POST", f"/api/calls/{call_id}/hangup", None, {"X-CSRF-Token": csrf})
        assert status == 403 and "needs the supervisor role" in json.loads(body)["error"]

        # -- the supervisor hangs up from the page: asked to confirm first, then the caller gets the BYE
        await sam.click(f"#calls tbody tr[data-call-id='{call_id}']")
        await sam.wait_for("document.getElementById('actions').hidden === false")
        await sam.click("#action-hangup")
        await sam.wait_for("document.getElementById('action-confirm').hidden === false")
        assert not phone.returncode and await stack.client.hget(keys.call(call_id), "phase") != "ENDED"
        await sam.click("#action-yes")
        await sam.wait_for("document.getElementById('action-state').textContent.startsWith('hangup: done')")
        out, _ = await asyncio.wait_for(phone.communicate(), 40)
        assert json.loads(out.decode().strip().splitlines()[-1])["hangup_by"] == "remote"
        assert (await stack.report(call_id))["end_reason"].startswith("ended by a supervisor (")
        await sam.wait_for("document.getElementById('actions').hidden === true", timeout=10)
        audit = fold([f for _, f in await stack.client.xrange(keys.CALL_ACTIONS_AUDIT)])
        assert [(a["action"], a["who"]) for a in audit] == [("hangup", "sam")]
        assert sam.problems == [] and vera.problems == [], (sam.problems, vera.problems)
    log = stack.log.read_text()
    assert "DEMO mode" not in log and "2 account(s)" in log
    assert SAM[1] not in log and VERA[1] not in log
    # log_format json: every line an object naming its process and, on a call's behalf, the call
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    announced = [line for line in lines if "logger" not in line]  # serve's stdout: where it listens
    assert all(set(line) == {"http_port"} for line in announced), announced
    lines = [line for line in lines if "logger" in line]
    assert all({"time", "level", "logger", "worker", "call_id", "message"} <= set(line) for line in lines)
    about_call = [line for line in lines if line["call_id"] == call_id]
    assert {line["worker"] for line in about_call} == {"0"} and len(about_call) >= 2, about_call
    assert any(line["worker"] == "serve" and "hangup on call" in line["message"] for line in lines)
