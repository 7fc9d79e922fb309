"""A refusal before a call exists makes no call (issue 70, item 4), against a real ``callbridge serve`` (one worker, a
private Redis, the emulator) with a webhook endpoint: an INVITE whose Session-Expires (RFC 4028) is below the worker's
Min-SE gets ``422 Session Interval Too Small`` with ``Min-SE`` before pjsua makes it a call, so it writes no record,
no ``call.ended`` webhook and no ``abandoned``, as a 488 does not; the caller's retry with the same Call-ID is the
call, and that Call-ID has one record (tests/integration/sip/scenarios/uac_session_too_small.xml, SIPp).
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest
from _edge import serve_node, wait_report
from _ending import LOCALHOST, PLAN, SIPP, ended_hooks, hashes_of, metrics_text, sample, sipp_call, webhook_env
from _webhooks import Receiver

from bridge.store.reportfile import read_reports
from bridge.webhooks.signing import new_secret

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)"),
]


@pytest.mark.timeout(180)
async def test_a_422_is_no_call_and_the_retry_with_its_call_id_is_the_one(tmp_path: Path) -> None:
    token = secrets.token_hex(4)
    sip_call_id = f"short-{token}-1@{LOCALHOST}"
    hook = await Receiver(new_secret()).start()
    try:
        async with serve_node(tmp_path / "node", [PLAN], webhook_env(tmp_path, hook)) as node:
            rc, out = await sipp_call(tmp_path, node, "uac_session_too_small.xml", f"short-{token}-%u@%s")
            report = await wait_report(node, sip_call_id)
            await hook.wait_for(lambda r: any(x.body["type"] == "call.ended" for x in r), 30)
            await asyncio.sleep(2.0)  # time for a second record or webhook, were there one
            lines = [line for line in read_reports(node.reports) if line.get("sip_call_id") == sip_call_id]
            stored = await hashes_of(node, sip_call_id)
            metrics = await metrics_text(node)
            incoming = [line for line in node.log.read_text(errors="replace").splitlines()
                        if "incoming call" in line and f"(Call-ID {sip_call_id!r})" in line]  # fmt: skip
    finally:
        await hook.stop()
    assert rc == 0, out  # 422 with Min-SE 90, then the retry answered 200 and ended by its BYE
    assert lines == [report], lines  # one Call-ID, one call
    assert report["answered"] is True and report["ended_by"] == "caller", report
    assert [s["outcome"] for s in stored] == ["completed"], stored
    ended = ended_hooks(hook, sip_call_id)
    assert [d["outcome"] for d in ended] == ["completed"], ended
    assert sample(metrics, "callbridge_calls_ended_total", dialplan="reasons", outcome="abandoned") == 0
    assert sample(metrics, "callbridge_calls_ended_total", dialplan="reasons") == 1
    assert sample(metrics, "callbridge_sip_rejected_total", code="422") == 1
    assert len(incoming) == 1, incoming  # the 422 made no call of the first INVITE
