"""What the network says about an ending (issue 70, item 3), against a real ``callbridge serve`` (one worker, a
private Redis, the emulator) with a webhook endpoint, and SIPp as the far side.

* A BYE whose ``Reason`` (RFC 3326) names a network failure (``Q.850;cause=41``, ``SIP;cause=408;text="RTP
  timeout"``, ``SIP;cause=503`` with a second value) ends the call as the network's: end reason ``network failure
  (...)``, ended by ``network``, outcome ``network_failure``, not the caller's hang-up. A BYE whose Reason is a
  normal clearing is the caller's hang-up. Either way the peer's values (protocol, cause, text) are the
  call's: its report line, its Redis hash (``peer_reason``) and event stream, its timeline and its ``call.ended``
  webhook (``peer_reasons``), and ``callbridge_calls_ended_total`` counts each by its outcome
  (tests/integration/sip/scenarios/uac_bye_reason.xml).
* A CANCEL with ``SIP;cause=200;text="Call completed elsewhere"`` (a parallel ring answered by another phone) is no
  abandon: end reason ``call completed elsewhere``, outcome ``completed_elsewhere``, not counted in
  ``callbridge_calls_abandoned_total``, and its rollout outcome record says ``abandoned: false``; a CANCEL naming a
  network failure is the network's; a CANCEL naming neither is the caller's abandon
  (uac_cancel_reason.xml, on the shipped support plan, a rollout, its model's session slow to open).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml
from _edge import call_events, serve_node, wait_report
from _ending import (
    LOCALHOST,
    PLAN,
    SIPP,
    ended_hash,
    ended_hooks,
    metrics_text,
    outcome_records,
    sample,
    sipp_call,
    webhook_env,
)
from _webhooks import Receiver

from bridge import events as ev
from bridge.webhooks.signing import new_secret

ROOT = Path(__file__).resolve().parents[3]
# the shipped support line: a rollout of two GA variants, so each call writes its rollout outcome record
SUPPORT = yaml.safe_load((ROOT / "dialplans" / "support.yaml").read_text())
UPGRADE_DELAY_MS = 3000  # the model's session opens this late: the CANCELs below come while the call rings

# (name, the BYE's Reason header, as the hash and the timeline keep it, end reason, ended by, outcome, its values)
BYES = [
    (
        "q850-41",
        'Q.850;cause=41;text="Temporary failure"',
        'Q.850;cause=41;text="Temporary failure"',
        "network failure (Q.850 cause 41)",
        "network",
        "network_failure",
        [{"protocol": "Q.850", "cause": 41, "text": "Temporary failure"}],
    ),
    (
        "rtp-timeout",
        'SIP;cause=408;text="RTP timeout"',
        'SIP;cause=408;text="RTP timeout"',
        "network failure (RTP timeout)",
        "network",
        "network_failure",
        [{"protocol": "SIP", "cause": 408, "text": "RTP timeout"}],
    ),
    (
        "two-values",
        'sip ;cause=503; text="Service Unavailable", Q.850 ; cause=38',
        'SIP;cause=503;text="Service Unavailable", Q.850;cause=38',  # written again from the values read
        "network failure (SIP 503)",
        "network",
        "network_failure",
        [
            {"protocol": "SIP", "cause": 503, "text": "Service Unavailable"},
            {"protocol": "Q.850", "cause": 38, "text": ""},
        ],
    ),
    (
        "normal",
        'Q.850;cause=16;text="Normal call clearing"',
        'Q.850;cause=16;text="Normal call clearing"',
        "caller hung up (Normal call clearing)",
        "caller",
        "completed",
        [{"protocol": "Q.850", "cause": 16, "text": "Normal call clearing"}],
    ),
]

# (name, the CANCEL's Reason header, end reason, ended by, outcome, the value recorded, abandoned in its outcome record)
CANCELS = [
    (
        "elsewhere",
        'SIP;cause=200;text="Call completed elsewhere"',
        "call completed elsewhere",
        "network",
        "completed_elsewhere",
        {"protocol": "SIP", "cause": 200, "text": "Call completed elsewhere"},
        False,
    ),
    (
        "network",
        'Q.850;cause=41;text="Temporary failure"',
        "network failure (Q.850 cause 41)",
        "network",
        "network_failure",
        {"protocol": "Q.850", "cause": 41, "text": "Temporary failure"},
        False,
    ),
    (
        "unspecified",
        'Q.850;cause=31;text="Normal, unspecified"',
        ev.ABANDONED_WHILE_RINGING,
        "caller",
        "abandoned",
        {"protocol": "Q.850", "cause": 31, "text": "Normal, unspecified"},
        True,
    ),
]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)"),
]


@pytest.mark.timeout(240)
async def test_a_bye_that_names_a_network_failure_ends_the_call_as_the_networks(tmp_path: Path) -> None:
    token = secrets.token_hex(4)
    hook = await Receiver(new_secret()).start()
    try:
        async with serve_node(tmp_path / "node", [PLAN], webhook_env(tmp_path, hook)) as node:
            found: dict[str, tuple[dict[str, Any], dict[str, str], list[dict[str, str]]]] = {}
            for name, reason, *_ in BYES:
                call_ids = f"{name}-{token}-%u@%s"
                rc, out = await sipp_call(tmp_path, node, "uac_bye_reason.xml", call_ids, "-key", "reason", reason)
                assert rc == 0, out
                report = await wait_report(node, f"{name}-{token}-1@{LOCALHOST}")
                call_id = str(report["call_id"])
                found[name] = (report, await ended_hash(node, call_id), await call_events(node, call_id))
            await hook.wait_for(lambda r: sum(x.body["type"] == "call.ended" for x in r) >= len(BYES), 30)
            metrics = await metrics_text(node)
    finally:
        await hook.stop()  # and every body fits docs/webhooks.schema.json
    for name, _sent, said, end_reason, ended_by, outcome, values in BYES:
        report, state, stream = found[name]
        assert report["answered"] is True, report
        assert (report["end_reason"], report["ended_by"]) == (end_reason, ended_by), report
        assert report["peer_reasons"] == values, report
        assert ["peer_reason", f"BYE with Reason {said}"] in [entry[1:] for entry in report["timeline"]], report
        assert (state["end_reason"], state["ended_by"], state["outcome"]) == (end_reason, ended_by, outcome), state
        assert state["peer_reason"] == said, state
        (entry,) = [e for e in stream if e.get("kind") == "peer_reason"]
        assert (entry["request"], entry["reason"]) == ("BYE", said), entry
        (data,) = ended_hooks(hook, f"{name}-{token}-1@{LOCALHOST}")
        assert (data["end_reason"], data["ended_by"], data["outcome"]) == (end_reason, ended_by, outcome), data
        assert data["peer_reasons"] == values, data
    assert sample(metrics, "callbridge_calls_ended_total", dialplan="reasons", outcome="network_failure") == 3
    assert sample(metrics, "callbridge_calls_ended_total", dialplan="reasons", outcome="completed") == 1
    assert sample(metrics, "callbridge_calls_ended_total", dialplan="reasons", outcome="abandoned") == 0


@pytest.mark.timeout(240)
async def test_a_cancel_for_a_ring_completed_elsewhere_is_no_abandon(tmp_path: Path) -> None:
    token = secrets.token_hex(4)
    hook = await Receiver(new_secret()).start()
    env = webhook_env(tmp_path, hook)
    try:
        async with serve_node(tmp_path / "node", [SUPPORT], env, upgrade_delay_ms=UPGRADE_DELAY_MS) as node:
            reports: dict[str, dict[str, Any]] = {}
            for name, reason, *_ in CANCELS:
                call_ids = f"{name}-{token}-%u@%s"
                rc, out = await sipp_call(tmp_path, node, "uac_cancel_reason.xml", call_ids, "-key", "reason", reason)
                assert rc == 0, out  # 200 to the CANCEL, 487 to the INVITE
                reports[name] = await wait_report(node, f"{name}-{token}-1@{LOCALHOST}")
            states = {name: await ended_hash(node, str(r["call_id"])) for name, r in reports.items()}
            await hook.wait_for(lambda r: sum(x.body["type"] == "call.ended" for x in r) >= len(CANCELS), 30)
            records = {r["call_id"]: r for r in await outcome_records(node, "support")}
            metrics = await metrics_text(node)
    finally:
        await hook.stop()
    for name, reason, end_reason, ended_by, outcome, value, abandoned in CANCELS:
        report, state = reports[name], states[name]
        assert report["answered"] is False, report
        assert (report["end_reason"], report["ended_by"]) == (end_reason, ended_by), report
        assert report["peer_reasons"] == [value], report
        assert (state["end_reason"], state["ended_by"], state["outcome"]) == (end_reason, ended_by, outcome), state
        assert state["peer_reason"] == reason, state
        (data,) = ended_hooks(hook, f"{name}-{token}-1@{LOCALHOST}")
        assert (data["end_reason"], data["ended_by"], data["outcome"]) == (end_reason, ended_by, outcome), data
        assert data["peer_reasons"] == [value], data
        assert records[report["call_id"]]["abandoned"] is abandoned, records[report["call_id"]]
    for outcome in ("completed_elsewhere", "network_failure", "abandoned"):
        assert sample(metrics, "callbridge_calls_ended_total", dialplan="support", outcome=outcome) == 1, outcome
    assert sample(metrics, "callbridge_calls_abandoned_total", dialplan="support") == 1
