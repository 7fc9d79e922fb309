"""A caller who hangs up while the call rings, against a real `callbridge serve`: SIPp sends an INVITE, then a CANCEL
(or a BYE in the early dialog) while the worker is still opening the model's session (the emulator answers the
upgrade late). The call is an ordinary end: 487 to the INVITE, a report line (``answered: false``, ended by the
caller, ``caller abandoned while ringing``), ``callbridge_calls_abandoned_total`` on /metrics, the call out of its
worker's live set in Redis at once, no model session left, nothing logged at ERROR, and a restart finds no call of a
previous run to close ("worker restarted" / "worker died")."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from _serve_start import ROOT, Started, clean_env, port_block
from _sipp import SIPP, ended_state, left_live_set, metrics_text, run_sipp, sample, wait_reports

from bridge import events as ev
from bridge.devkit.ports import free_port
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.emulator import EmulatorServer
from bridge.store import keys

UPGRADE_DELAY_MS = 4000  # the model's session opens this late: every hang-up below comes while the call rings

pytestmark = [
    pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary"),
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (Debian: sip-tester)"),
]


async def test_cancel_and_bye_while_ringing_are_abandoned_calls(tmp_path: Path) -> None:
    reports = tmp_path / "calls.jsonl"
    with EmbeddedRedis() as redis:
        async with EmulatorServer("127.0.0.1", 0, speed=4, upgrade_delay_ms=UPGRADE_DELAY_MS) as emulator:
            sip_port, http_port = port_block(1), free_port()
            args = [
                "--workers", "1", "--sip-port", str(sip_port),
                "--realtime-url", emulator.base_url, "--redis-url", redis.url, "--http-port", str(http_port),
                "--dialplans", str(ROOT / "dialplans"), "--report-file", str(reports),
            ]  # fmt: skip
            env = clean_env(OPENAI_API_KEY="sk-test", XDG_STATE_HOME=str(tmp_path / "state"))
            client = aioredis.from_url(redis.url, decode_responses=True)
            serve = Started(tmp_path, "serve", args, env, ROOT)
            try:
                await serve.ready("127.0.0.1", http_port, workers=1)
                target = f"127.0.0.1:{sip_port}"
                for scenario in ("uac_cancel_ringing.xml", "uac_bye_ringing.xml"):
                    failed = await run_sipp(scenario, target, tmp_path / "sipp")
                    assert not failed, failed  # 200 to the CANCEL (or the BYE), 487 to the INVITE
                lines = await wait_reports(reports, 2)
                live = await left_live_set(client, keys.worker_calls(f"127.0.0.1:{sip_port}"))
                stored = [await ended_state(client, keys.call(str(line["call_id"]))) for line in lines]
                text = await metrics_text(http_port)
            finally:
                assert serve.stop() == 0, serve.stderr()
            first_run = serve.stderr(200_000)

            for line in lines:
                assert line["answered"] is False, line
                assert line["end_reason"] == ev.ABANDONED_WHILE_RINGING, line
                assert line["ended_by"] == "caller", line
                assert line["dialplan"] == "support", line
            assert live == set(), live  # out of the live set: `callbridge calls` shows no ghost
            for call in stored:
                assert (call["phase"], call["end_reason"]) == ("ENDED", ev.ABANDONED_WHILE_RINGING), call
            assert sample(text, "callbridge_calls_abandoned_total", dialplan="support") == 2, text
            assert sample(text, "callbridge_calls_ended_total", dialplan="support", outcome="abandoned") == 2
            assert sample(text, "callbridge_calls_active", dialplan="support") == 0
            # the opening of the model's session was cancelled: the emulator never opened one
            assert emulator.sessions == []
            for line in lines:
                assert f"call {line['call_id']} ended by caller ({ev.ABANDONED_WHILE_RINGING})" in first_run
            assert " ERROR " not in first_run and "Traceback" not in first_run, first_run[-4000:]

            # a restart on the same Redis finds nothing of the first run left open
            http_port = free_port()
            args[args.index("--http-port") + 1] = str(http_port)
            again = Started(tmp_path, "serve-again", args, env, ROOT)
            try:
                await again.ready("127.0.0.1", http_port, workers=1)
                text = await metrics_text(http_port)
                after = [await client.hget(keys.call(str(line["call_id"])), "end_reason") for line in lines]
            finally:
                assert again.stop() == 0, again.stderr()
                await client.aclose()
            assert after == [ev.ABANDONED_WHILE_RINGING] * 2
            second_run = again.stderr(200_000)
            assert "worker died" not in second_run and "of a previous run ended" not in second_run, second_run
            assert sample(text, "callbridge_calls_lost_to_worker_death_total") == 0
