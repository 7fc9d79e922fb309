"""One pipeline from the gate to the rollout, against a real redis-server, the real ``callbridge replay`` (the
emulator, virtual time), the real ``callbridge rollout`` command line and the real supervisor API: under
``rollout.require_gate`` a candidate is armed only with a green replay report of its exact configuration registered
by ``rollout attest`` (signed with ``rollout_key``), or with an override whose reason the audit keeps."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from bridge.config import Settings
from bridge.devkit.redis_server import EmbeddedRedis
from bridge.dialplan import load_dialplans, rollout_specs
from bridge.dialplan import main as dialplan_main
from bridge.replay.cli import main as replay_main
from bridge.rollout import attest
from bridge.rollout.arming import SHOWN
from bridge.rollout.store import RolloutStore
from bridge.serve import rollout_cli
from bridge.serve.pool import _seal_rollout_flags
from bridge.store import keys
from bridge.supervisor.accounts import Users, add_token, add_user
from bridge.supervisor.api import ConsoleOptions, create_app

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
KEY = "a-rollout-key-for-the-gate-0123456789"
SAFE, CAND = "gpt-realtime-2.1", "gpt-realtime-2.1-mini"
GREEN_ROLLOUT = f"""  safe: {SAFE}
  require_gate: true
  variants:
    - {{name: {SAFE}, dialect: ga, model: {SAFE}, weight: 100}}
    - {{name: {CAND}, dialect: ga, model: {CAND}, fallback_model: {SAFE}, weight: 0}}
"""
# a candidate that answers with a preamble the safe model does not: its replay differs unexpectedly (red)
RED_ROLLOUT = f"""  safe: gpt-realtime
  require_gate: true
  variants:
    - {{name: gpt-realtime, dialect: ga, model: gpt-realtime, weight: 100}}
    - {{name: {SAFE}, dialect: ga, model: {SAFE}, fallback_model: gpt-realtime, weight: 0}}
"""


def plans_with(directory: Path, rollout: str, instructions: str | None = None) -> Path:
    """The shipped dialplans with the support plan's rollout section replaced (and its instructions, if given)."""
    directory.mkdir(exist_ok=True)
    for plan in (ROOT / "dialplans").glob("*.yaml"):
        text = plan.read_text()
        if plan.name == "support.yaml":
            head, _, _ = text.partition("rollout:\n")
            text = head + "rollout:\n" + rollout
            if instructions is not None:
                start = text.index("  instructions: >")
                end = text.index("  voice:", start)
                text = text[:start] + f"  instructions: {json.dumps(instructions)}\n" + text[end:]
        (directory / plan.name).write_text(text)
    return directory


def replay_report(plans: Path, out: Path) -> tuple[int, Path]:
    """``callbridge replay question_answer --variants support --report OUT`` on the emulator."""
    script = str(ROOT / "call_scripts" / "question_answer")
    code = replay_main([script, "--variants", "support", "--dialplans", str(plans), "--report", str(out)])
    return code, out / "report.json"


@pytest.fixture(scope="module")
def green(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The gated plan's files and a green replay report of both its variants."""
    base = tmp_path_factory.mktemp("green")
    plans = plans_with(base / "dialplans", GREEN_ROLLOUT)
    code, report = replay_report(plans, base / "report")
    assert code == 0, report.read_text()[:2000]
    return plans, report


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("CALLBRIDGE_CONFIG", "REDIS_URL", "CALLBRIDGE_REDIS_URL", "CALLBRIDGE_DIALPLANS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CALLBRIDGE_ROLLOUT_KEY", KEY)


async def rollout(
    capsys: pytest.CaptureFixture[str], redis: EmbeddedRedis, plans: Path, *argv: str
) -> tuple[int, str, str]:
    capsys.readouterr()
    where = ["--dialplans", str(plans), "--redis-url", redis.url]
    code = await asyncio.to_thread(rollout_cli.main, [*argv, *where])
    out, err = capsys.readouterr()
    return code, out, err


def digests(plans: Path) -> dict[str, str]:
    [plan] = [p for p in load_dialplans(plans) if p.name == "support"]
    return attest.plan_digests(plan)


async def weights(raw: aioredis.Redis) -> dict[str, float]:
    stored = await raw.hget(keys.rollout_flag("support"), "weights")
    return json.loads(stored) if stored else {}


async def last_audit(raw: aioredis.Redis) -> dict[str, Any]:
    entries = await raw.xrevrange(keys.ROLLOUT_AUDIT, count=1)
    assert entries
    fields: dict[str, str] = dict(entries[0][1] or {})  # type: ignore[arg-type]  # decode_responses: text
    return {**fields, "evidence": json.loads(fields.get("evidence") or "{}")}


ARM = ("set", "support", "--weights", f"{SAFE}=95,{CAND}=5", "--reason", "the canary")
DISARM = ("set", "support", "--weights", f"{SAFE}=100,{CAND}=0", "--reason", "back")


async def test_arming_needs_a_green_report_of_the_exact_configuration(
    redis_server: EmbeddedRedis,
    raw: aioredis.Redis,
    green: tuple[Path, Path],
    cli_env: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plans, report = green
    digest = digests(plans)[CAND]
    code, out, err = await rollout(capsys, redis_server, plans, "show", "support")
    assert f"replay gate   required; {CAND} #{digest}: no green report" in out, err
    code, out, err = await rollout(capsys, redis_server, plans, *ARM)
    assert code == 2, (out, err)
    assert f"rollout support: weights.{CAND}: {CAND}: no green replay report attests its configuration #{digest}" in err
    assert "callbridge rollout attest support --report" in err
    assert await weights(raw) == {}  # nothing written

    code, out, err = await rollout(capsys, redis_server, plans, "attest", "support", "--report", str(report))
    assert code == 0, err
    assert f"support: {CAND} #{digest} attested by {report} (1 run(s))" in out
    stored = json.loads(await raw.hget(keys.rollout_attested("support"), digest) or "{}")
    assert stored["verdict"] == "green" and stored["runs"] == [f"question_answer/{CAND}"] and stored["sig"]
    assert (await last_audit(raw))["evidence"]["attested"]["digest"] == digest
    code, out, err = await rollout(capsys, redis_server, plans, "show", "support")
    assert code == 0, err
    assert f"replay gate   required; {CAND} #{digest}: green report {report} (" in out
    code, out, err = await rollout(capsys, redis_server, plans, "show", "support", "--json")
    [shown] = json.loads(out)["dialplans"]
    assert shown["gate"]["variants"][CAND]["attested"]["report"] == str(report)

    code, out, err = await rollout(capsys, redis_server, plans, *ARM)
    assert code == 0, err
    assert await weights(raw) == {SAFE: 95, CAND: 5}
    gate = (await last_audit(raw))["evidence"]["gate"]
    assert gate == {CAND: {"digest": digest, "attested": {k: stored[k] for k in SHOWN}}}
    # raising an armed candidate's share is no arming: no report asked for
    code, _, err = await rollout(capsys, redis_server, plans, "set", "support", "--weights", f"{SAFE}=75,{CAND}=25",
                                 "--reason", "next step")  # fmt: skip
    assert code == 0, err
    assert "gate" not in (await last_audit(raw))["evidence"]

    # the instructions change by a word: another configuration, which the report did not run
    code, _, err = await rollout(capsys, redis_server, plans, *DISARM)
    assert code == 0, err
    text = (plans / "support.yaml").read_text()
    changed = plans_with(tmp_path / "changed", GREEN_ROLLOUT, "You are Acme's phone agent. Answer briefly.")
    other = digests(changed)[CAND]
    assert other != digest and (plans / "support.yaml").read_text() == text
    code, out, err = await rollout(capsys, redis_server, changed, *ARM)
    assert code == 2 and f"{CAND}: no green replay report attests its configuration #{other}" in err, (out, err)
    code, _, err = await rollout(capsys, redis_server, changed, "attest", "support", "--report", str(report))
    assert code == 2 and f"no run of the report has the configuration of {CAND} #{other}" in err
    assert await weights(raw) == {SAFE: 100, CAND: 0}


async def test_a_red_report_attests_nothing(
    redis_server: EmbeddedRedis,
    raw: aioredis.Redis,
    cli_env: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plans = plans_with(tmp_path / "dialplans", RED_ROLLOUT)
    code, report = await asyncio.to_thread(replay_report, plans, tmp_path / "report")
    assert code == 1  # the candidate's preamble: a difference nobody declared
    digest = digests(plans)[SAFE]
    assert digest in attest.report_digests(json.loads(report.read_text()))  # it ran the candidate's configuration
    code, out, err = await rollout(capsys, redis_server, plans, "attest", "support", "--report", str(report))
    assert code == 2, (out, err)
    assert "meta.gate: the report is red (exit 1: question_answer: unexpected" in err
    assert await raw.hgetall(keys.rollout_attested("support")) == {}
    arm = ("set", "support", "--weights", f"gpt-realtime=95,{SAFE}=5", "--reason", "the canary")
    code, out, err = await rollout(capsys, redis_server, plans, *arm)
    assert code == 2 and f"no green replay report attests its configuration #{digest}" in err, (out, err)
    assert await weights(raw) == {}


async def test_an_override_arms_with_its_reason_in_the_audit(
    redis_server: EmbeddedRedis,
    raw: aioredis.Redis,
    green: tuple[Path, Path],
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plans, _ = green
    code, out, err = await rollout(capsys, redis_server, plans, *ARM, "--override-gate", "   ")
    assert code == 2, (out, err)  # a blank reason overrides nothing
    code, out, err = await rollout(capsys, redis_server, plans, *ARM, "--override-gate", "replayed by hand, INC-12")
    assert code == 0, err
    assert await weights(raw) == {SAFE: 95, CAND: 5}
    entry = await last_audit(raw)
    assert entry["evidence"]["gate"] == {CAND: {"digest": digests(plans)[CAND], "override": "replayed by hand, INC-12"}}
    assert entry["reason"] == "the canary" and entry["sig"]  # the flag change's own entry, signed


async def test_a_forged_attestation_is_refused_never_a_crash(
    redis_server: EmbeddedRedis,
    raw: aioredis.Redis,
    green: tuple[Path, Path],
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plans, report = green
    digest = digests(plans)[CAND]
    code, _, err = await rollout(capsys, redis_server, plans, "attest", "support", "--report", str(report))
    assert code == 0, err
    genuine = json.loads(await raw.hget(keys.rollout_attested("support"), digest) or "{}")
    forged = {**genuine, "who": "mallory"}  # changed after signing
    for text, why in (
        (json.dumps(forged), "bad signature (another key's, or changed since)"),
        (json.dumps({k: v for k, v in genuine.items() if k != "sig"}), "unsigned"),
        ("{not json", "not JSON"),
        ('["a list"]', "not an attestation"),
    ):
        await raw.hset(keys.rollout_attested("support"), digest, text)
        code, out, err = await rollout(capsys, redis_server, plans, *ARM)
        assert code == 2, (text, out, err)
        assert f"{CAND}: the attestation of its configuration #{digest} is refused: {why}" in err, err
        assert await weights(raw) == {}
    # signed with a key this node does not list: refused too
    monkeypatch.setenv("CALLBRIDGE_ROLLOUT_KEY", "another-key-of-another-cluster-000")
    await raw.hset(keys.rollout_attested("support"), digest, json.dumps(genuine))
    code, _, err = await rollout(capsys, redis_server, plans, *ARM)
    assert code == 2 and "bad signature" in err


async def test_rearm_is_gated_before_it_restarts_the_evidence(
    redis_server: EmbeddedRedis,
    raw: aioredis.Redis,
    green: tuple[Path, Path],
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plans, _ = green
    rearm = ("rearm", "support", CAND, "--reason", "fixed", "--share", "5")
    code, out, err = await rollout(capsys, redis_server, plans, *rearm)
    assert code == 2 and f"no green replay report attests its configuration #{digests(plans)[CAND]}" in err, out
    assert await raw.xlen(keys.rollout_records("support")) == 0  # no rearm entry: the evidence is as it was
    code, out, err = await rollout(capsys, redis_server, plans, *rearm, "--override-gate", "the fix is a flag")
    assert code == 0, err
    assert await raw.xlen(keys.rollout_records("support")) == 1
    assert (await last_audit(raw))["evidence"]["gate"][CAND]["override"] == "the fix is a flag"


# ------------------------------------------------------------------------------------------------ the API
@pytest.fixture
async def api(redis_server: EmbeddedRedis, green: tuple[Path, Path]) -> AsyncIterator[tuple[str, str]]:
    """The supervisor app as serve builds it, on a real port: (its URL, an admin's API token)."""
    plans = load_dialplans(green[0])
    users = add_user(Users(), "ana", "admin", "a long password for ana")
    users, token = add_token(users, "ana")
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    store = RolloutStore(client=client, specs=rollout_specs(plans), rollout_keys=(KEY.encode(),))
    app = create_app(token=None, redis=client, dialplans=plans, options=ConsoleOptions(users=users), rollouts=store)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", token
    await runner.cleanup()
    await client.aclose()


async def test_the_api_refuses_arming_without_a_report_and_the_card_names_the_report(
    api: tuple[str, str],
    redis_server: EmbeddedRedis,
    raw: aioredis.Redis,
    green: tuple[Path, Path],
    cli_env: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, token = api
    digest = digests(green[0])[CAND]
    headers = {"Authorization": f"Bearer {token}"}
    body: dict[str, Any] = {"weights": {SAFE: 95, CAND: 5}, "reason": "the canary"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.put(f"{url}/api/rollout/support", json=body) as r:
            assert r.status == 400
            refused = await r.json()
        assert refused["field"] == f"weights.{CAND}"
        assert f"no green replay report attests its configuration #{digest}" in refused["error"]
        async with http.get(f"{url}/api/console/rollout") as r:
            [card] = [c for c in (await r.json())["dialplans"] if c["dialplan"] == "support"]
        assert card["gate"] == {"required": True, "variants": {CAND: {"digest": digest, "attested": None}}}

        code, _, err = await rollout(capsys, redis_server, green[0], "attest", "support", "--report", str(green[1]))
        assert code == 0, err
        async with http.get(f"{url}/api/console/rollout") as r:
            [card] = [c for c in (await r.json())["dialplans"] if c["dialplan"] == "support"]
        assert card["gate"]["variants"][CAND]["attested"]["report"] == str(green[1])
        async with http.put(f"{url}/api/rollout/support", json=body) as r:
            assert r.status == 200, await r.text()
        assert (await last_audit(raw))["evidence"]["gate"][CAND]["attested"]["report"] == str(green[1])

        back = {"weights": {SAFE: 100, CAND: 0}, "reason": "back"}
        async with http.put(f"{url}/api/rollout/support", json=back) as r:
            assert r.status == 200
        await raw.delete(keys.rollout_attested("support"))
        async with http.put(f"{url}/api/rollout/support", json={**body, "override_gate": "INC-7"}) as r:
            assert r.status == 200, await r.text()
        entry = await last_audit(raw)
        assert entry["who"] == "ana" and entry["evidence"]["gate"][CAND]["override"] == "INC-7"

    # the command line through the API: the same refusal, the same override
    token_file = tmp_path / "ana.token"
    token_file.write_text(token)
    via = ("--api", url, "--token-file", str(token_file))
    assert (await asyncio.to_thread(rollout_cli.main, [*DISARM, *via])) == 0
    code = await asyncio.to_thread(rollout_cli.main, [*ARM, *via])
    _, err = capsys.readouterr()
    assert code == 2 and f"no green replay report attests its configuration #{digest}" in err, err
    assert (await asyncio.to_thread(rollout_cli.main, [*ARM, *via, "--override-gate", "INC-8"])) == 0
    assert (await last_audit(raw))["evidence"]["gate"][CAND]["override"] == "INC-8"


# ------------------------------------------------------------------------------------------------ the plan files
def test_dialplan_check_says_whether_the_gate_is_on(
    green: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plans = green[0]
    assert dialplan_main(["check", str(plans / "support.yaml")]) == 0
    out = capsys.readouterr().out
    assert "rollout support: a candidate is armed only with a green replay report of it (rollout.require_gate)" in out
    shipped = ROOT / "dialplans" / "support.yaml"
    assert dialplan_main(["check", str(shipped), "--json"]) == 0
    [ok] = json.loads(capsys.readouterr().out)["ok"]
    assert ok["require_gate"] is False
    assert dialplan_main(["check", str(shipped)]) == 0
    out = capsys.readouterr().out
    assert "rollout support: rollout.require_gate is off: a candidate may be armed" in out
    assert "rollout support: rollout.probes is on: at most 1 session(s) a minute to the safe variant's model" in out
    # a gated plan cannot arm a candidate in its file: that would skip the gate
    armed = tmp_path / "support.yaml"
    shutil.copy(plans / "support.yaml", armed)
    armed.write_text(
        armed.read_text().replace(f"fallback_model: {SAFE}, weight: 0", f"fallback_model: {SAFE}, weight: 5")
    )
    assert dialplan_main(["check", str(armed)]) == 2
    assert f"require_gate: {CAND} has a weight in the file: arm it after `rollout attest`" in capsys.readouterr().err


async def test_serve_says_at_start_whether_each_plan_is_gated(
    redis_server: EmbeddedRedis, green: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bridge.serve.pool")
    await _seal_rollout_flags(Settings(redis_url=redis_server.url, dialplans=green[0]))
    await _seal_rollout_flags(Settings(redis_url=redis_server.url, dialplans=ROOT / "dialplans"))
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rollout support:")]
    probes = (
        "rollout support: rollout.probes is on: at most 1 session(s) a minute to the safe variant's model while a "
        "candidate's calls fail in a run (no caller, no response asked)"
    )
    assert said == [
        "rollout support: a candidate is armed only with a green replay report of it (rollout.require_gate)",
        probes,
        "rollout support: rollout.require_gate is off: a candidate may be armed without a green replay report of its "
        "configuration (docs/configuration.md recommends it on)",
        probes,
    ]


async def test_a_restore_arms_no_candidate_the_gate_would_refuse(
    redis_server: EmbeddedRedis,
    raw: aioredis.Redis,
    green: tuple[Path, Path],
    cli_env: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plans, report = green
    assert (await rollout(capsys, redis_server, plans, "attest", "support", "--report", str(report)))[0] == 0
    assert (await rollout(capsys, redis_server, plans, *ARM))[0] == 0
    saved = tmp_path / "backup.json"
    assert (await rollout(capsys, redis_server, plans, "export", str(saved)))[0] == 0
    await raw.flushall()  # Redis lost: the flag and the attestation with it
    code, out, err = await rollout(capsys, redis_server, plans, "import", str(saved))
    assert code == 2, (out, err)
    assert f"{CAND}: no green replay report attests its configuration #{digests(plans)[CAND]}" in err
    assert await weights(raw) == {} and await raw.xlen(keys.ROLLOUT_AUDIT) == 0  # nothing written
    code, out, err = await rollout(capsys, redis_server, plans, "import", str(saved), "--override-gate", "lost Redis")
    assert code == 0, err
    assert await weights(raw) == {SAFE: 95, CAND: 5}
    assert (await last_audit(raw))["reason"].endswith("; override of the replay gate: lost Redis")
