"""The console's accounts: the users file (`callbridge users`), scrypt hashes, roles, API tokens, and the limits on
failed sign-ins, through the supervisor app (aiohttp's test server, no Redis)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.errors import ConfigError
from bridge.supervisor import users_cli
from bridge.supervisor.accounts import (
    add_token,
    add_user,
    allows,
    hash_password,
    load_users,
    parse_users,
    verify_password,
)
from bridge.supervisor.api import ConsoleOptions, create_app
from bridge.supervisor.auth import FailureLimits

PASSWORDS = {"vera": "viewer-pass-1", "sam": "supervisor-pass-2", "ada": "admin-pass-33"}
ROLE_OF = {"vera": "viewer", "sam": "supervisor", "ada": "admin"}
TOKENS: dict[str, str] = {}  # API tokens the fixture made, by account


def test_scrypt_hash_round_trip_and_roles() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$131072$8$1$") and "correct horse" not in stored  # OWASP: N=2^17, r=8, p=1
    assert verify_password("correct horse", stored) and not verify_password("correct hors", stored)
    assert not verify_password("x", "scrypt$bad") and not verify_password("x", "md5$1$2$3$4$5")
    # a hash written with other parameters is verified with its own
    salt = b"s" * 16
    older = hashlib.scrypt(b"correct horse", salt=salt, n=2**14, r=8, p=1, dklen=32)
    stored_old = f"scrypt${2**14}$8$1${base64.urlsafe_b64encode(salt).decode().rstrip('=')}$" + (
        base64.urlsafe_b64encode(older).decode().rstrip("=")
    )
    assert verify_password("correct horse", stored_old) and not verify_password("correct hors", stored_old)
    assert not verify_password("correct horse", stored_old.replace("$16384$", f"${2**24}$"))  # no 16 GiB hash
    assert hash_password("same") != hash_password("same")  # salted
    assert allows("viewer", "watch") and not allows("viewer", "act") and not allows("viewer", "listen")
    assert allows("supervisor", "act") and allows("supervisor", "listen") and not allows("supervisor", "rollout")
    assert allows("admin", "rollout") and not allows("nobody", "watch")


def test_a_bad_users_file_names_the_field() -> None:
    good = hash_password("p" * 12)
    for data, field in (
        ({"users": {"Bad Name": {"role": "viewer", "password": good}}}, "users.Bad Name"),
        ({"users": {"dana": {"role": "boss", "password": good}}}, "users.dana.role"),
        ({"users": {"dana": {"role": "viewer", "password": "plaintext"}}}, "users.dana.password"),
        ({"users": {"dana": {"role": "viewer", "password": good, "tokens": ["short"]}}}, "users.dana.tokens"),
    ):
        with pytest.raises(ConfigError) as exc:
            parse_users(data, "users.yaml")
        assert exc.value.field == field


def _add(path: Path, name: str, role: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORDS.get(name, "some-password") + "\n"))
    return users_cli.main(["add", name, "--role", role, "--file", str(path), "--password-stdin"])


def test_users_cli_writes_hashes_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users.yaml"
    for name, role in ROLE_OF.items():
        assert _add(path, name, role, monkeypatch) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert not any(p in text for p in PASSWORDS.values())
    users = load_users(path)
    assert {n: a.role for n, a in users.accounts.items()} == ROLE_OF
    assert verify_password(PASSWORDS["sam"], users.accounts["sam"].password)
    capsys.readouterr()
    assert users_cli.main(["token", "sam", "--file", str(path)]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("cbt_") and token not in path.read_text()
    found = load_users(path).by_token(token)
    assert found is not None and found.name == "sam"
    assert users_cli.main(["add", "x", "--role", "admin", "--file", str(path), "--password-stdin"]) == 2  # short
    assert _add(path, "Bad Name", "viewer", monkeypatch) == 2
    assert "lower-case" in capsys.readouterr().err


def test_users_cli_edits_the_users_file_serve_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --file, the file of serve's users_file setting (its settings file, CALLBRIDGE_CONFIG): the operator
    edits the accounts serve signs people in with, not a users.yaml wherever the shell stands."""
    served = tmp_path / "etc" / "users.yaml"
    config = tmp_path / "serve.yaml"
    config.write_text(f"users_file: {served}\n")
    monkeypatch.delenv("CALLBRIDGE_USERS_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO("some-password\n"))
    assert users_cli.main(["add", "dana", "--role", "viewer", "--password-stdin", "--config", str(config)]) == 2
    assert f"{served}: (file): cannot write the users file" in capsys.readouterr().err  # its directory is missing
    served.parent.mkdir()
    monkeypatch.setattr("sys.stdin", io.StringIO("some-password\n"))
    assert users_cli.main(["add", "dana", "--role", "viewer", "--password-stdin", "--config", str(config)]) == 0
    assert load_users(served).accounts["dana"].role == "viewer"
    assert not (tmp_path / "users.yaml").exists()
    monkeypatch.setenv("CALLBRIDGE_CONFIG", str(config))
    capsys.readouterr()
    assert users_cli.main(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"dana": {"role": "viewer", "tokens": 0}}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient[object, object]]:
    path = tmp_path / "users.yaml"
    users = load_users(path)
    for name, role in ROLE_OF.items():
        users = add_user(users, name, role, PASSWORDS[name])
    users, token = add_token(users, "vera")
    options = ConsoleOptions(refused_delay_s=0.05, users=users, limits=FailureLimits(4, 60.0))
    app = create_app(token="demo-token-not-used", redis=None, rollouts=None, options=options)
    async with TestClient(TestServer(app)) as test_client:
        TOKENS["vera"] = token
        yield test_client


async def test_accounts_sign_in_roles_tokens_and_the_limits(
    client: TestClient[object, object], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "bridge.supervisor")
    # the demo token opens nothing once there are accounts
    r = await client.get("/api/calls", headers={"Authorization": "Bearer demo-token-not-used"})
    assert r.status == 401
    # an account signs in with its password; the session is the account's, whatever else the body says
    r = await client.post("/auth/signin", json={"name": "sam", "password": PASSWORDS["sam"], "who": "mallory"})
    assert r.status == 200
    session = await r.json()
    assert (session["name"], session["role"]) == ("sam", "supervisor")
    r = await client.get("/auth/session")
    assert (await r.json())["name"] == "sam"
    # a supervisor may not change a rollout: 403 naming the role it needs
    r = await client.put("/api/rollout/x", json={"reason": "y"}, headers={"X-CSRF-Token": session["csrf"]})
    assert r.status == 403 and "needs the admin role" in (await r.json())["error"]
    # an API token opens its account's role
    token = TOKENS["vera"]
    r = await client.put("/api/rollout/x", json={"reason": "y"}, headers={"Authorization": f"Bearer {token}"})
    assert r.status == 403 and "(viewer here)" in (await r.json())["error"]
    # wrong passwords (with the wrong bearer token above: four failures from this address): then 429 with
    # Retry-After, even with the right password
    for _ in range(3):
        r = await client.post("/auth/signin", json={"name": "ada", "password": "wrong-password"})
        assert r.status == 401
    r = await client.post("/auth/signin", json={"name": "ada", "password": PASSWORDS["ada"]})
    assert r.status == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    # the same address is now over its limit for every account and for bearer guesses too
    r = await client.post("/auth/signin", json={"name": "vera", "password": PASSWORDS["vera"]})
    assert r.status == 429
    r = await client.get("/api/calls", headers={"Authorization": "Bearer guess"})
    assert r.status == 429 and "Retry-After" in r.headers
    log = caplog.text
    assert "failed sign-in for 'ada' from 127.0.0.1" in log and "too many failures" in log
    assert not any(p in log for p in PASSWORDS.values())
    assert json.dumps(session).count(PASSWORDS["sam"]) == 0


def test_an_attempt_is_checked_and_counted_at_once_and_a_success_withdrawn() -> None:
    now = [0.0]
    limits = FailureLimits(2, 10.0, clock=lambda: now[0])
    first, second, third = (limits.attempt("a") for _ in range(3))  # three at once, none answered yet
    assert first[0] == 0 and second[0] == 0 and third[0] > 0  # the third waits: two are already counted
    limits.succeeded(first[1], "a")  # the first was right: it is no failure
    assert limits.attempt("a")[0] == 0


def test_failure_limits_slide() -> None:
    now = [0.0]
    limits = FailureLimits(2, 10.0, clock=lambda: now[0])
    limits.failed("a")
    now[0] = 4.0
    limits.failed("a", "x")
    assert limits.retry_after("a") == pytest.approx(6.0)
    assert limits.retry_after("b", "x") == 0.0
    now[0] = 10.5
    assert limits.retry_after("a") == 0.0


def test_failures_from_others_never_lock_an_account_and_an_admin_unlocks() -> None:
    now = [0.0]
    limits = FailureLimits(3, 300.0, clock=lambda: now[0])
    for source in range(12):  # twelve addresses, one wrong password each: the account is past its limit
        assert limits.attempt(f"10.0.0.{source}", "adam")[0] == 0
    assert limits.retry_after("10.0.0.1", "adam") > 0  # an address that failed for it waits
    assert limits.retry_after("10.0.0.99", "adam") == 0  # one that has not, may try
    wait, stamp = limits.attempt("10.0.0.99", "adam")
    assert wait == 0
    limits.succeeded(stamp, "10.0.0.99", "adam")  # the right password: in, and no failure counted
    assert limits.retry_after("10.0.0.99", "adam") == 0
    # an address past its own limit is refused for every account
    for _ in range(3):
        limits.failed("10.0.0.50", "other")
    assert limits.retry_after("10.0.0.50", "someone") > 0 and limits.retry_after("10.0.0.50") > 0
    # an admin clears the account (and every address's failures for it), and an address
    assert limits.unlock(account="adam") and limits.retry_after("10.0.0.1", "adam") == 0
    assert limits.unlock(source="10.0.0.50") and limits.retry_after("10.0.0.50") == 0
    assert not limits.unlock(account="adam")


def test_users_cli_without_a_users_file_says_serve_will_not_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --file and no users_file: the change lands in ./users.yaml, and the command says, with its absolute path,
    that serve stays on the demo token until users_file names it."""
    monkeypatch.delenv("CALLBRIDGE_USERS_FILE", raising=False)
    monkeypatch.delenv("CALLBRIDGE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO("some-password\n"))
    assert users_cli.main(["add", "dana", "--role", "viewer", "--password-stdin"]) == 0
    err = capsys.readouterr().err
    where = (tmp_path / "users.yaml").resolve()
    assert load_users(where).accounts["dana"].role == "viewer"
    assert f"serve does not read {where}" in err and f"CALLBRIDGE_USERS_FILE={where}" in err
    served = tmp_path / "served.yaml"
    monkeypatch.setenv("CALLBRIDGE_USERS_FILE", str(served))
    assert users_cli.main(["token", "dana", "--file", str(where)]) == 0
    assert f"serve reads {served.resolve()} (its users_file), not {where}" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("some-password\n"))
    assert users_cli.main(["add", "sam", "--role", "admin", "--password-stdin"]) == 0
    assert "note:" not in capsys.readouterr().err  # the file serve reads: nothing to say
