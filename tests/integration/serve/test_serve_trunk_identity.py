"""Who called, and whom they dialled, through a real `callbridge serve` (a private Redis, the emulator as the model,
real webhook endpoints that verify every signature and every body against docs/webhooks.schema.json). A SIPp trunk
sends a forwarded call (``uac_trunk_identity.xml``): From its pilot number, P-Asserted-Identity the real caller,
two Diversion entries, the bottom one the original called number.

* From a listed source (``sip_allowed_sources``): the call's record in Redis has the real caller, masked as the plan
  keeps callers, and the original called number masked alike; each webhook endpoint gets both in the form its
  ``caller`` setting says; the dialplan whose ``original_called`` pattern matches takes the call.
* The same INVITE from a source that is not listed (the closed default: loopback callers, nothing listed): the
  caller is From's pilot number, as before; the original called number is data from anyone, as the dialled number
  is, and still routes the call.

Neither number reaches serve's log in full."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml
from _serve_start import ROOT, Started, clean_env, port_block
from _sipp import SIPP, run_sipp, sipp_work, wait_reports
from _webhooks import Receiver

from bridge.devkit.ports import free_port
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.emulator import EmulatorServer
from bridge.store import keys
from bridge.webhooks.signing import new_secret

pytestmark = [
    pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary"),
    pytest.mark.skipif(SIPP is None, reason="no sipp binary"),
]

PILOT, CALLER, ORIGINAL = "+18005550100", "+15551234567", "+15550001111"  # as uac_trunk_identity.xml sends them


def write_plans(directory: Path, plan_hook: str) -> Path:
    """``support`` (the shipped plan: 1000) and ``forwarded`` (1000 when first placed to +1555000...), whose own
    webhook endpoint asks for numbers ``masked`` (as Redis keeps them)."""
    directory.mkdir(parents=True, exist_ok=True)
    support = yaml.safe_load((ROOT / "dialplans" / "support.yaml").read_text())
    (directory / "support.yaml").write_text(yaml.safe_dump(support))
    forwarded = support | {"name": "forwarded", "match": ["1000"], "original_called": ["+1555000*"]}
    forwarded["webhooks"] = [{"url": plan_hook, "secret": {"env": "PLAN_WEBHOOK_SECRET"}, "caller": "masked"}]
    (directory / "forwarded.yaml").write_text(yaml.safe_dump(forwarded))
    return directory


async def trunk_call(tmp: Path, allowed: str) -> tuple[dict[str, str], dict[str, Receiver], str]:
    """One SIPp call of ``uac_trunk_identity.xml`` to 1000 against a serve whose ``sip_allowed_sources`` is
    ``allowed`` ("": unset): the call's hash in Redis, the two endpoints (``default``: webhook_url, the viewer's
    form; ``plan``: the plan's, masked) once each has the call's ``call.ended``, serve's log."""
    secret, plan_secret = new_secret(), new_secret()
    (tmp / "whsec").write_text(secret + "\n")
    hooks = {"default": await Receiver(secret).start(), "plan": await Receiver(plan_secret).start()}
    try:
        with EmbeddedRedis() as redis:
            async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
                sip_port, http_port, reports = port_block(1), free_port(), tmp / "calls.jsonl"
                args = [
                    "--workers", "1", "--sip-port", str(sip_port), "--realtime-url", emulator.base_url,
                    "--http-port", str(http_port), "--redis-url", redis.url, "--report-file", str(reports),
                    "--dialplans", str(write_plans(tmp / "dialplans", hooks["plan"].url)),
                ]  # fmt: skip
                extra = {"CALLBRIDGE_SIP_ALLOWED_SOURCES": allowed} if allowed else {}
                env = clean_env(OPENAI_API_KEY="sk-test", XDG_STATE_HOME=str(tmp / "state"),
                                CALLBRIDGE_WEBHOOK_URL=hooks["default"].url,
                                CALLBRIDGE_WEBHOOK_SECRET_FILE=str(tmp / "whsec"), PLAN_WEBHOOK_SECRET=plan_secret,
                                **extra)  # fmt: skip
                serve = Started(tmp, "serve", args, env, ROOT)
                try:
                    await serve.ready("127.0.0.1", http_port, workers=1)
                    failed = await run_sipp("uac_trunk_identity.xml", f"127.0.0.1:{sip_port}", sipp_work(tmp))
                    assert not failed, failed + serve.stderr()
                    (line,) = await wait_reports(reports, 1)
                    for hook in hooks.values():
                        await hook.wait_for(lambda r: "call.ended" in {x.body["type"] for x in r}, 60)
                finally:
                    assert serve.stop() == 0, serve.stderr()
                client = aioredis.from_url(redis.url, decode_responses=True)
                try:
                    state: dict[str, str] = await client.hgetall(keys.call(line["call_id"]))
                finally:
                    await client.aclose()
    finally:
        for hook in hooks.values():
            await hook.stop()  # fails the test if a body departs from the published schema
    return state, hooks, serve.stderr(200_000)


def numbers(hook: Receiver) -> list[tuple[str, Any, Any, Any]]:
    """Each delivery's type, dialplan, caller and original called number."""
    return [(r.body["type"], r.body["data"]["dialplan"], r.body["data"]["caller"], r.body["data"]["original_called"])
            for r in hook.received]  # fmt: skip


@pytest.mark.timeout(240)
async def test_a_listed_trunks_asserted_caller_and_original_called_number_reach_redis_webhooks_and_the_plan(
    tmp_path: Path,
) -> None:
    state, hooks, log = await trunk_call(tmp_path, "127.0.0.1/32")
    assert (state["caller"], state["original_called"], state["called"]) == ("+*******4567", "+*******1111", "1000")
    assert state["dialplan"] == "forwarded", state  # the plan of the original called number, not support
    masked = ("forwarded", "+*******4567", "+*******1111")
    assert numbers(hooks["plan"]) == [("call.started", *masked), ("call.ended", *masked)]
    viewer = ("forwarded", "•" * 10 + "67", "•" * 10 + "11")
    assert numbers(hooks["default"]) == [("call.started", *viewer), ("call.ended", *viewer)]
    assert all(r.verified for hook in hooks.values() for r in hook.received)
    assert "from +*******4567 to 1000 (originally to +*******1111)" in log, log[-3000:]
    assert not any(n[2:] in log for n in (PILOT, CALLER, ORIGINAL))  # no number in full in any log line


@pytest.mark.timeout(240)
async def test_the_same_invite_from_a_source_not_listed_keeps_froms_number(tmp_path: Path) -> None:
    state, hooks, log = await trunk_call(tmp_path, "")
    assert (state["caller"], state["original_called"]) == ("+*******0100", "+*******1111")  # From's pilot number
    assert state["dialplan"] == "forwarded", state
    assert numbers(hooks["plan"])[-1] == ("call.ended", "forwarded", "+*******0100", "+*******1111")
    assert "from +*******0100 to 1000 (originally to +*******1111)" in log, log[-3000:]
    assert not any(n[2:] in log for n in (PILOT, CALLER, ORIGINAL))
