"""``callbridge rollout show/set`` and ``callbridge calls`` against a real redis-server, through ``main(argv)``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bridge import events as ev
from bridge.devkit.ports import free_port
from bridge.devkit.redis_server import EmbeddedRedis
from bridge.rollout import refusals
from bridge.rollout.store import RolloutStore
from bridge.serve import rollout_cli
from bridge.store import cli as calls_cli
from bridge.store.calls import CallStore, StoreTuning

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.integration


def run(module: object, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = module.main(argv)  # type: ignore[attr-defined]  # rollout_cli and calls_cli both have main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------------------ rollout
SHIPPED = ["--dialplans", str(ROOT / "dialplans")]
NEW, SAFE = "gpt-realtime-2.1-mini", "gpt-realtime-2.1"


def test_rollout_show_lists_the_shipped_rollout_with_its_defaults_before_any_flag(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(rollout_cli, ["show", *SHIPPED, "--redis-url", redis_server.url], capsys)
    assert code == 0, err
    assert "dialplan      support  (no stored flag: the dialplan's defaults)" in out
    assert f"  * {SAFE:<20}    100 100.00% ga      gpt-realtime-2.1 " in out
    assert f"    {NEW:<20}      0   0.00% ga      gpt-realtime-2.1-mini (gpt-realtime-2.1)" in out
    assert "health        last 300 s" in out and f"  {NEW:<22}     0" in out
    monkeypatch.delenv("REDIS_URL", raising=False)
    code, out, err = run(rollout_cli, ["show", "support", *SHIPPED], capsys)  # no Redis at all: the defaults
    assert code == 0, err
    assert "(no Redis: the dialplan's defaults)" in out and "health        n/a (no Redis)" in out
    code, out, _ = run(rollout_cli, ["show", "--json", *SHIPPED], capsys)
    plans = {p["dialplan"]: p for p in json.loads(out)["dialplans"]}
    assert set(plans) == {"support", "support-ga-to-live"}  # every shipped rollout
    live = plans["support-ga-to-live"]
    assert [(v["name"], v["weight"], v["share_percent"], v["safe"]) for v in live["variants"]] == [
        ("ga", 95, 95, True), ("live", 5, 5, False),
    ]  # fmt: skip
    plan = plans["support"]
    assert (plan["dialplan"], plan["stored"], plan["safe"]) == ("support", None, SAFE)
    assert [(v["name"], v["weight"], v["share_percent"], v["safe"]) for v in plan["variants"]] == [
        (SAFE, 100, 100, True), (NEW, 0, 0, False),
    ]  # fmt: skip
    assert plan["variants"][0]["shutdown"] is None  # no announced date for the current models


def test_rollout_set_then_show(redis_server: EmbeddedRedis, capsys: pytest.CaptureFixture[str]) -> None:
    url = [*SHIPPED, "--redis-url", redis_server.url]
    code, out, err = run(
        rollout_cli,
        ["set", "support", "--weights", f"{SAFE}=75,{NEW}=25", "--reason", "canary looks good", "--who", "alice", *url],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert f"support: weights {SAFE}=100, {NEW}=0 -> {SAFE}=75, {NEW}=25" in out
    assert f"support: shares now {SAFE}=75%, {NEW}=25%" in out and "recorded by alice: canary looks good" in out

    code, out, err = run(
        rollout_cli, ["set", "support", "--allow", f"{NEW}:+1 555 0100", "--kill", "--reason", "x", *url], capsys
    )
    assert code == 0, err
    assert f"support: allow - -> {NEW}=+15550100" in out and "support: kill off -> on" in out

    code, out, _ = run(rollout_cli, ["show", "support", *url], capsys)
    assert code == 0
    assert f"    {NEW:<20}     25   0.00%" in out  # its weight kept; no share while the kill switch is on
    assert f"kill switch   on   (every call on {SAFE})" in out
    assert "      allow +15550100" in out
    assert "alice" in out and f"weights {SAFE}=100, {NEW}=0 -> {SAFE}=75, {NEW}=25" in out
    assert "(canary looks good)" in out

    code, out, _ = run(rollout_cli, ["show", "--json", *url], capsys)
    plan = next(p for p in json.loads(out)["dialplans"] if p["dialplan"] == "support")
    assert plan["dialplan"] == "support" and plan["stored"] is True
    assert plan["flag"]["weights"] == {SAFE: 75, NEW: 25} and plan["flag"]["kill"] is True
    assert plan["flag"]["allow"] == {NEW: ["+15550100"]}
    assert [(e["who"], e["new"]) for e in plan["audit"]][-1] == ("alice", {"weights": {SAFE: 75, NEW: 25}})
    assert plan["window"][NEW]["calls"] == 0 and plan["window"][NEW]["failure_rate"] == 0.0

    code, out, _ = run(
        rollout_cli, ["set", "support", "--unkill", "--deny", f"{NEW}:+15550100", "--reason", "y", *url], capsys
    )
    assert code == 0 and f"support: deny - -> {NEW}=+15550100" in out and f"support: allow {NEW}=+15550100 -> -" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["set", "support", "--weights", f"{NEW}=25"], "--reason is required"),
        (["set", "support", "--weights", f"{NEW}=x", "--reason", "r"], f"weights.{NEW}: expected NAME=WEIGHT"),
        (["set", "support", "--weights", "gpt-realtime-3=1", "--reason", "r"], "weights.gpt-realtime-3: no such"),
        (["set", "support", "--weights", f"{NEW}=0", "--reason", "r"], "weights: at least one variant"),
        (["set", "support", "--deny", f"{SAFE}:+1555", "--reason", "r"], f"deny.{SAFE}: the safe variant"),
        (["set", "support", "--allow", "+1555", "--reason", "r"], "--allow wants NAME:CALLER"),
        (["set", "support", "--reason", "r"], "nothing to change"),
        (["set", "billing", "--kill", "--reason", "r"], "dialplan: no rollout dialplan of that name"),
    ],
)
def test_rollout_usage_errors_name_the_field(
    redis_server: EmbeddedRedis, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(rollout_cli, [*argv, *SHIPPED, "--redis-url", redis_server.url], capsys)
    assert code == 2 and message in err and not out, err


def test_rollout_show_without_its_plans_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./dialplans here
    code, out, err = run(rollout_cli, ["show"], capsys)
    assert code == 2 and not out
    assert "dialplans: no folder 'dialplans'" in err, err
    code, out, err = run(rollout_cli, ["show", "nowhere", *SHIPPED], capsys)  # a plan nobody has: no made-up view
    assert code == 2 and not out and "no rollout dialplan of that name" in err


def test_rollout_kill_and_unkill_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        rollout_cli.main(["set", "support", "--kill", "--unkill", "--reason", "r"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_rollout_set_needs_a_redis_url(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    code, _, err = run(rollout_cli, ["set", "support", "--kill", "--reason", "r", *SHIPPED], capsys)
    assert code == 2 and "no Redis: set redis_url in serve's settings" in err and "--redis-url URL" in err


def test_rollout_reads_redis_url_from_the_environment(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.unix_url)
    code, _, err = run(rollout_cli, ["set", "support", "--weights", f"{NEW}=10,{SAFE}=90", "--reason", "env", *SHIPPED],
                       capsys)  # fmt: skip
    assert code == 0, err


def test_unreachable_redis_is_a_clear_error_without_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    code, out, err = run(rollout_cli, ["show", "--redis-url", url], capsys)
    assert code == 1 and not out
    assert f"Redis unreachable at redis://***@127.0.0.1:{url.rsplit(':', 1)[1]}" in err
    assert "hunter2" not in err
    code, _, err = run(calls_cli, ["--redis-url", url], capsys)
    assert code == 1 and "Redis unreachable at redis://***@" in err and "hunter2" not in err


# ------------------------------------------------------------------------------------------------ calls
def populate(url: str) -> None:
    async def go() -> None:
        for worker, calls in (("w0", ["c-a"]), ("w1", ["c-b"])):
            store = CallStore(url, worker=worker, tuning=StoreTuning(reap_interval_s=None))
            await store.start()
            for cid in calls:
                listen = store.listener_for(cid, caller="+1555", called="100", dialplan="support", dialect="ga")
                listen(ev.PhaseChanged("IDLE", "LISTENING", "session ready"))
                listen(ev.CallerSaid(f"hello from {cid}", "i1"))
            assert await store.flush()
            await store.close()  # calls still live: they stay listed until they end or the worker is reaped

    asyncio.run(go())


def test_calls_json_and_table(
    redis_server: EmbeddedRedis, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "120")  # the table's width (the terminal's; pytest-xdist's workers say 80)
    url = ["--redis-url", redis_server.url]
    code, out, _ = run(calls_cli, url, capsys)
    assert code == 0 and "no live calls" in out
    populate(redis_server.url)

    code, out, _ = run(calls_cli, ["--json", *url], capsys)
    assert code == 0
    calls = json.loads(out)["calls"]
    assert [(c["call_id"], c["worker"], c["phase"], c["dialect"]) for c in calls] == [
        ("c-a", "w0", "LISTENING", "ga"),
        ("c-b", "w1", "LISTENING", "ga"),
    ]
    assert all(c["duration_s"] >= 0 and c["worker_alive"] for c in calls)
    assert calls[0]["last_transcript"] == "Caller: hello from c-a"

    code, out, _ = run(calls_cli, url, capsys)
    header, *rows = out.strip().splitlines()
    assert header.split()[:4] == ["CALL", "ID", "WORKER", "PHASE"] and "LAST LINE" in header
    assert rows[0].startswith("c-a") and "LISTENING" in rows[0] and rows[0].endswith("Caller: hello from c-a")

    code, out, _ = run(calls_cli, ["c-b", *url], capsys)
    assert code == 0 and "caller_transcript" in out and "hello from c-b" in out and "phase" in out

    code, out, _ = run(calls_cli, ["c-b", "--json", *url], capsys)
    detail = json.loads(out)
    assert detail["call"]["call_id"] == "c-b" and [e["kind"] for e in detail["events"]] == [
        "phase",
        "caller_transcript",
    ]

    code, _, err = run(calls_cli, ["nope", *url], capsys)
    assert code == 1 and "no call 'nope'" in err

    code, out, _ = run(calls_cli, ["--watch", "--json", "--interval", "0.05", "--count", "3", *url], capsys)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3 and all(len(json.loads(line)["calls"]) == 2 for line in lines)


def test_rollout_show_marks_a_refused_variant_and_unrefuse_clears_it(
    redis_server: EmbeddedRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    url = [*SHIPPED, "--redis-url", redis_server.url]
    [(spec, _)] = [v for k, v in rollout_cli.load_plans(ROOT / "dialplans").items() if k == "support"]
    safe, other = spec.safe, next(n for n in spec.names if n != spec.safe)

    async def mark() -> None:
        async with RolloutStore(redis_server.url, specs={"support": spec}) as store:
            assert await refusals.mark_refused(store, "support", other, "m-retired", "model_not_found")
            assert not await refusals.mark_refused(store, "support", other, "m-retired", "model_not_found")

    asyncio.run(mark())
    code, out, _ = run(rollout_cli, ["show", "support", *url], capsys)
    assert code == 0 and "REFUSED: the service refuses m-retired (model_not_found); no calls go here" in out
    code, out, _ = run(rollout_cli, ["show", "support", "--json", *url], capsys)
    [plan] = json.loads(out)["dialplans"]
    refused = {v["name"]: v["refused"] for v in plan["variants"]}
    assert refused[safe] is None and refused[other] is not None and refused[other]["model"] == "m-retired"
    code, out, _ = run(rollout_cli, ["unrefuse", "support", other, *url], capsys)
    assert code == 0 and f"support: {other} is no longer refused" in out
    code, out, _ = run(rollout_cli, ["show", "support", *url], capsys)
    assert "REFUSED" not in out
    code, _, err = run(rollout_cli, ["unrefuse", "support", "nope", *url], capsys)
    assert code == 2 and "variant: no such variant" in err
