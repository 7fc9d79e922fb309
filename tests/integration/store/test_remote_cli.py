"""``callbridge rollout ... --api URL`` and ``callbridge calls --api URL``: through a real supervisor HTTP API (its
roles, its audit) over a real redis-server, from a "laptop" that has neither Redis access nor the dialplan files."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from bridge import cli
from bridge import events as ev
from bridge.devkit.redis_server import EmbeddedRedis
from bridge.dialplan import load_dialplans, rollout_specs
from bridge.rollout.store import RolloutStore
from bridge.store.calls import CallStore, StoreTuning
from bridge.store.connection import connect
from bridge.supervisor.accounts import Users, add_token, add_user
from bridge.supervisor.api import ConsoleOptions, create_app

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
ADMIN, SUPERVISOR, VIEWER = "ana", "sid", "vic"  # the accounts of the users file the API signs in against


def _accounts() -> tuple[Users, dict[str, str]]:
    """A users file's accounts (an admin, a supervisor and a viewer), each with an API token: the users and the
    tokens by name."""
    users, tokens = Users(), {}
    for name, role in ((ADMIN, "admin"), (SUPERVISOR, "supervisor"), (VIEWER, "viewer")):
        users = add_user(users, name, role, f"a long password for {name}")
        users, tokens[name] = add_token(users, name)
    return users, tokens


NEW, SAFE = "gpt-realtime-2.1-mini", "gpt-realtime-2.1"  # the shipped support plan's variants


class ApiServer:
    """The supervisor app of a node (as `serve` builds it) on its own event loop, in a thread."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.url = ""
        self.users, self.tokens = _accounts()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        plans = load_dialplans(ROOT / "dialplans")
        redis = connect(self.redis_url)
        app = create_app(
            token=None, redis=redis, dialplans=plans, options=ConsoleOptions(users=self.users, refused_delay_s=0.0),
            rollouts=RolloutStore(client=redis, specs=rollout_specs(plans)),
        )  # fmt: skip
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()
        await redis.aclose()

    def __enter__(self) -> ApiServer:
        self._thread.start()
        assert self._ready.wait(10), "the API did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def api(redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ApiServer]:
    monkeypatch.chdir(tmp_path)  # no ./dialplans here
    for var in ("REDIS_URL", "CALLBRIDGE_API_TOKEN", "CALLBRIDGE_API_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    with ApiServer(redis_server.url) as server:
        yield server


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_rollout_through_the_api_with_its_roles_and_audit(
    api: ApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    admin, viewer = tmp_path / "admin.token", tmp_path / "viewer.token"
    admin.write_text(api.tokens[ADMIN] + "\n")
    viewer.write_text(api.tokens[VIEWER])
    code, out, err = run(["rollout", "show", "support", "--api", api.url, "--token-file", str(admin)], capsys)
    assert code == 0, err
    assert "dialplan      support  (no stored flag: the dialplan's defaults)" in out
    assert f"  * {SAFE:<20}    100 100.00% ga      {SAFE}" in out

    change = ["rollout", "set", "support", "--weights", f"{SAFE}=3,{NEW}=1", "--allow", f"{NEW}:+1 555 0100"]
    code, out, err = run([*change, "--reason", "canary", "--api", api.url, "--token-file", str(viewer)], capsys)
    assert code == 1 and "403" in err, (out, err)  # a viewer may look, not change

    monkeypatch.setenv("CALLBRIDGE_API_TOKEN_FILE", str(admin))  # the token from the environment's file this time
    code, out, err = run([*change, "--reason", "canary", "--api", api.url], capsys)
    assert code == 0, err
    assert "recorded in the audit" in out

    code, out, err = run(["rollout", "show", "support", "--json", "--api", api.url], capsys)
    assert code == 0, err
    (shown,) = json.loads(out)["dialplans"]
    assert shown["flag"]["weights"] == {SAFE: 3.0, NEW: 1.0} and shown["flag"]["allow"] == {NEW: ["+15550100"]}
    (entry,) = shown["audit"]
    assert (entry["who"], entry["reason"]) == (ADMIN, "canary")  # the API names the token's account, not the CLI

    code, out, err = run(
        ["rollout", "set", "support", "--weights", "nosuch=1", "--reason", "x", "--api", api.url], capsys
    )
    assert code == 2 and "weights.nosuch" in err, err  # the API's refusal names the field
    monkeypatch.setenv("CALLBRIDGE_API_TOKEN_FILE", str(tmp_path / "missing"))
    code, _, err = run(["rollout", "show", "--api", api.url], capsys)
    assert code == 2 and "CALLBRIDGE_API_TOKEN_FILE" in err
    monkeypatch.delenv("CALLBRIDGE_API_TOKEN_FILE")
    monkeypatch.setenv("CALLBRIDGE_API_TOKEN", "not-a-token")
    code, _, err = run(["rollout", "show", "--api", api.url], capsys)
    assert code == 1 and "401" in err and "not-a-token" not in err


def test_the_kill_switch_through_the_api_is_turned_off_only_by_its_holder_or_a_role_as_high(
    api: ApiServer, redis_server: EmbeddedRedis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = {}
    for name in (ADMIN, SUPERVISOR):
        tokens[name] = tmp_path / f"{name}.token"
        tokens[name].write_text(api.tokens[name])

    def as_(name: str, *argv: str) -> list[str]:
        return ["rollout", *argv, "--api", api.url, "--token-file", str(tokens[name])]

    # the admin's kill switch: a supervisor's token goes to the kill switch's route, and is refused it by name
    code, out, err = run(as_(ADMIN, "set", "support", "--kill", "--reason", "mini misreads numbers"), capsys)
    assert code == 0 and "support: kill off -> on" in out and "kill_by" not in out, (out, err)
    code, out, err = run(as_(SUPERVISOR, "set", "support", "--unkill", "--reason", "looks fine"), capsys)
    assert code == 1 and f"PUT {api.url}/api/rollout/support/kill: 403" in err, (out, err)
    assert f"the kill switch of support is held by {ADMIN} (admin, since 20" in err
    assert f"needs the admin role or {ADMIN}, who turned it on (you are signed in as a supervisor)" in err
    code, out, err = run(as_(SUPERVISOR, "show", "support"), capsys)
    assert code == 0 and f"  held by {ADMIN} (admin, since 20" in out, (out, err)
    assert f"turning it off needs the admin role or {ADMIN}, who turned it on" in out

    # the supervisor's: theirs to turn off; and the command line on the node, as admin, turns off anyone's
    code, out, err = run(as_(ADMIN, "set", "support", "--unkill", "--reason", "fixed"), capsys)
    assert code == 0, err
    local = ["--dialplans", str(ROOT / "dialplans"), "--redis-url", redis_server.url, "--who", "ops"]
    for lifter in ("api", "cli"):
        code, _, err = run(as_(SUPERVISOR, "set", "support", "--kill", "--reason", "mini loops"), capsys)
        assert code == 0, err
        if lifter == "api":
            code, out, err = run(as_(SUPERVISOR, "set", "support", "--unkill", "--reason", "ok"), capsys)
        else:
            code, out, err = run(["rollout", "set", "support", "--unkill", "--reason", "ok", *local], capsys)
        assert code == 0 and "support: kill on -> off" in out, (lifter, out, err)

    # the command line's --kill on a supervisor's switch takes it over, as admin
    run(as_(SUPERVISOR, "set", "support", "--kill", "--reason", "mini loops"), capsys)
    code, out, err = run(["rollout", "set", "support", "--kill", "--reason", "keep it", *local], capsys)
    assert code == 0 and "support: the kill switch is held by cli:ops (admin, since 20" in out, (out, err)
    code, out, err = run(as_(SUPERVISOR, "set", "support", "--unkill", "--reason", "ok"), capsys)
    assert code == 1 and "held by cli:ops (admin" in err, (out, err)


def test_calls_through_the_api(
    api: ApiServer, redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CALLBRIDGE_API_TOKEN", api.tokens[VIEWER])  # watching needs no more than a viewer
    code, out, err = run(["calls", "--api", api.url], capsys)
    assert code == 0 and "no live calls" in out, err

    async def populate() -> None:
        store = CallStore(redis_server.url, worker="w0", tuning=StoreTuning(reap_interval_s=None))
        await store.start()
        listen = store.listener_for("c-a", caller="+1555", called="100", dialplan="support", dialect="ga")
        listen(ev.PhaseChanged("IDLE", "LISTENING", "session ready"))
        listen(ev.CallerSaid("hello from c-a", "i1"))
        assert await store.flush()
        await store.close()

    asyncio.run(populate())
    code, out, err = run(["calls", "--json", "--api", api.url], capsys)
    assert code == 0, err
    assert [(c["call_id"], c["phase"], c["last_transcript"]) for c in json.loads(out)["calls"]] == [
        ("c-a", "LISTENING", "Caller: hello from c-a")
    ]
    code, out, err = run(["calls", "c-a", "--api", api.url], capsys)
    assert code == 0 and "hello from c-a" in out, err
    code, _, err = run(["calls", "c-nope", "--api", api.url], capsys)
    assert code == 1 and "no call 'c-nope'" in err
