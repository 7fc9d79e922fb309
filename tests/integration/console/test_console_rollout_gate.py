"""The console's rollout card names the replay gate, in a real Chromium over a real Redis: whether the plan requires
it, each candidate's configuration digest, and the green replay report (``callbridge rollout attest``) that attests
it, by its path; a candidate nothing attests says so."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _console_helpers import CHROMIUM, sign_in
from aiohttp.test_utils import TestClient, TestServer
from redis import asyncio as aioredis

from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.dialplan import load_dialplans, rollout_specs
from bridge.replay.cli import main as replay_main
from bridge.rollout import arming, attest
from bridge.rollout.store import RolloutStore
from bridge.supervisor.accounts import Users, add_user
from bridge.supervisor.api import ConsoleOptions, create_app

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
SAFE, CAND = "gpt-realtime-2.1", "gpt-realtime-2.1-mini"  # the shipped support plan's variants
KEY = (b"a rollout key of 32 bytes, test!",)

Console = tuple[TestClient[Any, Any], RolloutStore, Path, Path]


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    """The console's app on a real Redis with the shipped plans, the support plan gated (an admin, ada, signs in);
    the store, the plans' folder and a green replay report of the support plan's variants."""
    if redis_server_binary() is None:
        pytest.skip("needs a redis-server binary")
    plans_dir = tmp_path / "dialplans"
    plans_dir.mkdir()
    for plan in (ROOT / "dialplans").glob("*.yaml"):
        text = plan.read_text()
        if plan.name == "support.yaml":
            text = text.replace(f"  safe: {SAFE}", f"  safe: {SAFE}\n  require_gate: true", 1)
        (plans_dir / plan.name).write_text(text)
    script = str(ROOT / "call_scripts" / "question_answer")
    out = tmp_path / "report"
    argv = [script, "--variants", "support", "--dialplans", str(plans_dir), "--report", str(out)]
    assert await asyncio.to_thread(replay_main, argv) == 0
    plans = load_dialplans(plans_dir)
    with EmbeddedRedis() as server:
        users = add_user(Users(), "ada", "admin", "a long password for ada")
        client = aioredis.from_url(server.url, decode_responses=True)
        rollouts = RolloutStore(client=client, specs=rollout_specs(plans), rollout_keys=KEY)
        app = create_app(token=None, redis=client, rollouts=rollouts, dialplans=plans,
                         options=ConsoleOptions(users=users))  # fmt: skip
        async with TestClient(TestServer(app)) as http:
            yield http, rollouts, plans_dir, out / "report.json"
        await client.aclose()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
async def test_the_rollout_card_names_the_report_that_attests_each_candidate(console: Console) -> None:
    from _cdp import Browser

    http, rollouts, plans_dir, report = console
    [support] = [p for p in load_dialplans(plans_dir) if p.name == "support"]
    digests = attest.plan_digests(support)
    gate = "article[data-dialplan=support] dd[data-setting=gate]"
    async with Browser() as browser:
        page = await browser.page()
        await sign_in(page, str(http.make_url("/")), "a long password for ada", name="ada")
        await page.wait_for(f"document.querySelector('{gate}') !== null", 20)
        assert await page.text(gate) == f"required; {CAND} #{digests[CAND]}: no green report"

        data = json.loads(report.read_text())
        await arming.register(rollouts, "support", data, str(report), digests, "ada")
        await page.goto(str(http.make_url("/")))
        await page.wait_for(f"(document.querySelector('{gate}') || {{}}).textContent?.includes('{report}')", 20)
        text = await page.text(gate)
        assert text.startswith(f"required; {CAND} #{digests[CAND]}: green report {report} (ada, ")
