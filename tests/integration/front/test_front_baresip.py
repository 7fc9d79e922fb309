"""A caller the project did not write: baresip (libre's SIP, RTP and jitter buffer, its own SDP) calls the one
address of ``serve --front kamailio``, on the options a user keeps. It hears the agent's greeting and reply (the
emulator's 600 Hz voice) for as long as the bridge says it played them, the model hears its 700 Hz "words" at the
level it sent them. baresip then puts the call on hold and takes it off again (re-INVITEs through the front): the
call's timeline says so with the time held, and the console marks the call "held by caller". When baresip hangs up
the call ends as the caller's doing: in the report, in Redis and at the front, which keeps no dialog.

baresip announces the host's default address in its SDP (not the loopback address it calls from, where the host has
another): the bridge must take its media from where its INVITE came (symmetric RTP), and drops none of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis
from _baresip import BARESIP, SKIP_REASON, Baresip
from _front import NODE_A, front_node, heavy, long_test, no_dialog_left, requirements, wait_for
from numpy.typing import NDArray

from bridge.audio.wav import write_wav
from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.store import keys
from bridge.store.read import stream_entry
from bridge.supervisor.flags import call_marks

pytestmark = [
    *requirements,
    heavy,
    pytest.mark.skipif(BARESIP is None, reason=SKIP_REASON),
    pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary"),
]
RATE = 8000
FRAME = RATE // 50  # 20 ms
CALLER_HZ, AGENT_HZ = 700.0, 600.0  # the caller's tone; the emulator's voice (bridge/emulator/faults.py)
CALLER_PEAK = 0.2  # of full scale: -14 dBFS peak, -17 dBFS RMS
SILENCE_S, TONE_S, AFTER_S = 3.0, 1.5, 115.5  # the greeting (about 2 s) heard first, then the caller's turn; baresip
# hangs up when its file ends: the file outlasts the test


def caller_wav(path: Path) -> Path:
    t = np.arange(int(TONE_S * RATE)) / RATE
    tone = CALLER_PEAK * np.sin(2 * np.pi * CALLER_HZ * t)
    ramp = np.linspace(0.0, 1.0, RATE // 100)  # 10 ms in and out: no click
    tone[: len(ramp)] *= ramp
    tone[-len(ramp) :] *= ramp[::-1]
    audio = np.concatenate([np.zeros(int(SILENCE_S * RATE)), tone, np.zeros(int(AFTER_S * RATE))])
    write_wav(path, (audio * 32767).astype("<i2").tobytes())
    return path


def frames_of(pcm: bytes, rate: int, hz: float) -> tuple[int, float]:
    """How many 20 ms frames of ``pcm`` carry the tone ``hz`` (their spectrum's peak within 25 Hz of it, above
    -40 dBFS), and those frames' RMS level in dBFS."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    size = rate // 50
    frames = x[: len(x) // size * size].reshape(-1, size)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    window = np.hanning(size)
    spectra = np.abs(np.fft.rfft(frames * window, n=8 * size, axis=1))
    peaks = np.argmax(spectra, axis=1) * rate / (8 * size)
    hit: NDArray[np.bool_] = (np.abs(peaks - hz) <= 25) & (rms > 10 ** (-40 / 20))
    level = float(20 * np.log10(np.sqrt(np.mean(rms[hit] ** 2)))) if hit.any() else -120.0
    return int(hit.sum()), level


async def bridge_call(redis: aioredis.Redis, sip_call_id: str) -> str:
    async def found() -> str | None:
        async for key in redis.scan_iter(match=keys.call("*")):
            if not key.endswith(":events") and await redis.hget(key, "sip_call_id") == sip_call_id:
                return str(await redis.hget(key, "call_id"))
        return None

    call_id: str = await wait_for(found, f"the bridge's call for Call-ID {sip_call_id} in Redis", 20)
    return call_id


def kind_stored(redis: aioredis.Redis, call_id: str, kind: str) -> Any:
    async def stored() -> bool:
        return any(f.get("kind") == kind for _id, f in await redis.xrange(keys.call_events(call_id)))

    return stored


async def reply_played(redis: aioredis.Redis, call_id: str) -> list[str]:
    """Wait until the agent's reply to the caller's turn has played out; the call's stream summaries until then."""

    async def played() -> list[str] | None:
        entries = await redis.xrange(keys.call_events(call_id))
        said = [f"{fields.get('kind')}: {fields.get('summary', '')}" for _id, fields in entries]
        turn = next((i for i, s in enumerate(said) if s.endswith("-> THINKING: caller stopped speaking")), None)
        if turn is not None and any(s.endswith("-> LISTENING: reply played out") for s in said[turn:]):
            return said
        return None

    summaries: list[str] = await wait_for(played, "the agent's reply to the caller played out", 40)
    return summaries


@long_test
async def test_a_baresip_caller_through_the_front_hears_the_agent_is_heard_and_hangs_up(tmp_path: Path) -> None:
    play = caller_wav(tmp_path / "caller.wav")
    with EmbeddedRedis() as server:
        client = aioredis.from_url(server.url, decode_responses=True)
        try:
            async with front_node(tmp_path, workers=2, config={"redis_url": server.url}) as (node, port, _health):
                assert node.emulator is not None
                async with Baresip(tmp_path, play) as phone:
                    assert (await phone.command("dial", f"sip:1000@{NODE_A}:{port}"))["ok"], phone.log_tail()
                    sip_call_id = str((await phone.event("CALL_ESTABLISHED", 30))["id"])
                    call_id = await bridge_call(client, sip_call_id)
                    said = await reply_played(client, call_id)
                    heard = phone.heard()  # baresip's dump stops at its first re-INVITE: what it heard before the hold
                    # the caller's hold key: a re-INVITE with a=sendonly, then one with a=sendrecv
                    assert (await phone.command("hold"))["ok"]
                    await wait_for(kind_stored(client, call_id, "caller_held"), "the caller's hold on the timeline")
                    assert (await phone.command("resume"))["ok"]
                    await wait_for(kind_stored(client, call_id, "caller_resumed"), "the resume on the timeline")
                    assert (await phone.command("hangup"))["ok"]
                    closed = await phone.event("CALL_CLOSED")

                async def reported() -> dict[str, Any] | None:
                    return next((r for r in node.calls() if r.get("sip_call_id") == sip_call_id), None)

                report = await wait_for(reported, "the call's report", 20)

                async def ended_state() -> dict[str, str] | None:  # the writer's last batch may follow the report
                    state = await client.hgetall(keys.call(call_id))
                    return state if state.get("phase") == "ENDED" else None

                state = await wait_for(ended_state, "the call's end in Redis", 10)
                stream = [stream_entry(i, f) for i, f in await client.xrange(keys.call_events(call_id))]
                (session,) = [s for s in node.emulator.sessions if s.input_audio]
                model_heard, model_rate = session.input_audio, session.input_rate
                await no_dialog_left(node)
        finally:
            await client.aclose()

    # the caller's hang-up ends the call as theirs, everywhere
    assert closed["param"] == "Connection reset by user", closed  # baresip's own words for its hang-up
    assert report["ended_by"] == "caller" and report["end_reason"] == "caller hung up (Normal call clearing)", report
    assert (state.get("phase"), state.get("ended_by")) == ("ENDED", "caller"), state
    # the caller's hold: on the timeline in order, with the time held, and marked for the console
    kinds = [e.kind for e in stream]
    assert kinds.count("caller_held") == kinds.count("caller_resumed") == 1, kinds
    held, resumed = (next(e for e in stream if e.kind == k) for k in ("caller_held", "caller_resumed"))
    assert held.t is not None and resumed.t is not None and held.t < resumed.t
    assert abs(float(resumed.data["held_s"]) - (resumed.t - held.t)) < 0.05, (held, resumed)
    marks = {m["flag"]: m["now"] for m in call_marks(stream)}
    assert marks.get("caller_hold") is False, marks  # raised, and over once the call ended
    # symmetric RTP: every packet baresip sent was taken, whatever its SDP announced
    assert report["media"]["rtp_dropped"] == 0, report["media"]

    # the model heard the caller's turn: its tone, for as long as it lasted, at the level it was sent
    tone_frames, tone_dbfs = frames_of(model_heard, model_rate, CALLER_HZ)
    assert abs(tone_frames * 20 - TONE_S * 1000) <= 120, (tone_frames, said)
    assert abs(tone_dbfs - 20 * np.log10(CALLER_PEAK / np.sqrt(2))) <= 2.0, tone_dbfs

    # the caller heard the agent (greeting and reply) for as long as the bridge says it played it
    agent_frames, agent_dbfs = frames_of(heard, RATE, AGENT_HZ)
    played_ms = report["agent_audio_ms"]
    assert played_ms >= 1000 and len(report["agent_transcript"]) >= 2, report
    assert abs(agent_frames * 20 - played_ms) <= max(200, 0.1 * played_ms), (agent_frames * 20, played_ms, said)
    assert agent_dbfs > -30, agent_dbfs  # a voice, not a trickle (the emulator speaks at -12 dBFS peak)
    # and nothing of its own tone came back to it
    assert frames_of(heard, RATE, CALLER_HZ)[0] == 0
