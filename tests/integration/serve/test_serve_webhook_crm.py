"""What a CRM gets from a real `callbridge serve` (issue 62 item 12): a SIPp caller with a number (From:
+15551234567) and its own Call-ID calls the support plan; two real endpoints verify every signature
(``standardwebhooks``) and every body against docs/webhooks.schema.json. The settings' endpoint, over https (a
self-signed certificate the node trusts), asks for the caller in full (``webhook_caller: full``, said in the start-up
log); the plan's own endpoint, over plain http, keeps the default (the last two digits). Both get the SIP Call-ID in
``call.started`` and ``call.ended``, as the report line and the carrier have it; the number is in no log line."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from pathlib import Path

import pytest
import yaml
from _sipp import SIPP
from _webhooks import Receiver
from test_serve_operable import ROOT, stop_serve, wait_healthy
from test_serve_stop_in_outage import _serve

from bridge.devkit.ports import free_port
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.devkit.tlscert import self_signed
from bridge.emulator import EmulatorServer
from bridge.store.reportfile import read_reports
from bridge.webhooks.signing import new_secret

pytestmark = [
    pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary"),
    pytest.mark.skipif(SIPP is None, reason="no sipp binary"),
]

NUMBER = "+15551234567"
SCENARIO = Path(__file__).parent / "scenarios" / "uac_caller_number.xml"
CALL_ID_PREFIX = "crm-"


async def call_from_a_number(sip_port: int, work: Path) -> None:
    """One SIPp call from :data:`NUMBER` to 1000, Call-ID ``crm-<n>-<pid>@127.0.0.1``, hung up after 3 s."""
    assert SIPP is not None
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(SCENARIO, work / SCENARIO.name)
    errors = work / "errors.log"
    proc = await asyncio.create_subprocess_exec(
        SIPP, "-sf", str(work / SCENARIO.name), "-m", "1", "-i", "127.0.0.1", "-p", str(free_port()),
        "-mp", str(free_port()), "-timeout", "30", "-timeout_error", "-nostdin", "-trace_err",
        "-error_file", str(errors), "-cid_str", f"{CALL_ID_PREFIX}%u-%p@%s", "-s", "1000", f"127.0.0.1:{sip_port}",
        cwd=work, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (out.decode(errors="replace")[-2000:], errors.read_text() if errors.exists() else "")


@pytest.mark.timeout(180)
async def test_a_crm_gets_the_sip_call_id_and_the_full_number_only_where_it_asked_over_https(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "tls")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    secret, plan_secret = new_secret(), new_secret()
    (tmp_path / "whsec").write_text(secret + "\n")
    crm = await Receiver(secret, tls=tls).start()
    qa = await Receiver(plan_secret).start()
    plans = tmp_path / "dialplans"
    plans.mkdir()
    plan = yaml.safe_load((ROOT / "dialplans" / "support.yaml").read_text())
    plan["webhooks"] = [{"url": qa.url, "secret": {"env": "QA_WEBHOOK_SECRET"}, "name": "qa"}]  # caller: the default
    (plans / "support.yaml").write_text(yaml.safe_dump(plan))
    log = tmp_path / "serve.log"
    env = {"CALLBRIDGE_WEBHOOK_URL": crm.url, "CALLBRIDGE_WEBHOOK_SECRET_FILE": str(tmp_path / "whsec"),
           "CALLBRIDGE_WEBHOOK_CALLER": "full", "QA_WEBHOOK_SECRET": plan_secret,
           "SSL_CERT_FILE": str(cert)}  # fmt: skip  # the node trusts the endpoint's certificate
    try:
        with EmbeddedRedis() as redis:
            async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
                sip_port = free_port()
                serve = _serve(tmp_path, redis, emulator, sip_port, log, env, plans)
                try:
                    await wait_healthy(serve)
                    await call_from_a_number(sip_port, tmp_path / "sipp")
                    for hook in (crm, qa):
                        await hook.wait_for(lambda r: {x.body["type"] for x in r} >= {"call.started", "call.ended"}, 60)
                finally:
                    stop_serve(serve.proc)
    finally:
        await crm.stop()
        await qa.stop()
    (report,) = read_reports(serve.reports)
    assert report["sip_call_id"].startswith(CALL_ID_PREFIX) and report["sip_call_id"].endswith("@127.0.0.1")
    for hook, caller in ((crm, NUMBER), (qa, "•" * 10 + "67")):
        assert [r.body["type"] for r in hook.received] == ["call.started", "call.ended"]
        for got in hook.received:
            data = got.body["data"]
            assert got.verified and data["call_id"] == report["call_id"]
            assert data["sip_call_id"] == report["sip_call_id"]  # the carrier's and the PBX's name for the call
            assert data["caller"] == caller, (hook.url, data["caller"])
    text = log.read_text()
    said = f"webhooks to default ({crm.url}) carry the callers' full numbers (webhook_caller: full)"
    assert text.count(said) == 1, text[-3000:]  # one line at start for the one endpoint that asked
    assert "support.qa" in text and "full numbers (caller: full in dialplan" not in text
    assert NUMBER[2:] not in text  # the number itself is never logged (masked: +*******4567)
