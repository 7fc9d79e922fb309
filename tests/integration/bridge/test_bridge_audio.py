"""Done-when 1: audio both ways through the whole stack, in both dialects, in PCM 24 kHz and in G.711 passthrough.

A pjsua2 caller (``callbridge call``) plays a 1020 Hz tone, then recorded speech, into a worker of the pool. The
emulator's session recording holds that audio at the session's rate (24 kHz for pcm16, 8 kHz decoded μ-law for
passthrough): the tone is found by FFT at its frequency and level, the speech by correlation with what was sent.
The emulator answers the turn with a 600 Hz tone at -12 dBFS peak; the caller's recording holds it (FFT peak
within one bin of 600 Hz, RMS within 1.5 dB of -15.01 dBFS), for as long as it was sent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _audio import best_correlation
from _bridge_helpers import (
    NUMBER,
    RATE,
    SINE_PEAK_TO_RMS_DB,
    BridgeStack,
    active_regions,
    assert_tone,
    call,
    dbfs,
    one_session,
    pcm,
    read_pcm_wav,
    segment,
    silence,
    speech,
    to_8k,
    tone,
    write_pcm_wav,
)

from bridge.realtime import tls_native

# It measures audio timing to the frame: xdist group "cpu", never next to a CPU-heavy test (tests/conftest.py).
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("cpu")]

CALLER_HZ, CALLER_DBFS = 1020.0, -10.0
TONE_S, GAP_S, SPEECH_S = 0.8, 0.15, 1.6
REPLY_HZ, REPLY_PEAK_DBFS, REPLY_MS = 600.0, -12.0, 1000
HEARS = "A test tone, then: hi, what are your opening hours"


@pytest.mark.parametrize(
    ("dialect", "fmt", "media", "scheme"),
    [
        ("ga", "pcm16", "native", "ws"),
        ("beta", "pcm16", "native", "ws"),
        ("ga", "g711_ulaw", "native", "ws"),
        ("beta", "g711_ulaw", "native", "ws"),
        ("ga", "pcm16", "python", "ws"),  # the fallback media port (a pjsua2 AudioMediaPort), kept working
        ("ga", "pcm16", "native", "wss"),  # the model over TLS, as OpenAI is reached: the clock thread still sends
    ],
)
async def test_caller_audio_reaches_the_model_and_the_reply_reaches_the_caller(
    tmp_path: Path, dialect: str, fmt: str, media: str, scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if scheme == "wss" and tls_native.load() is None:
        pytest.skip(f"no native TLS engine: {tls_native.problem()}")
    monkeypatch.setenv("CALLBRIDGE_MEDIA_PORT", media)  # the workers' SipConfig default
    lead = silence(0.3)
    sent_tone = tone(CALLER_HZ, TONE_S, CALLER_DBFS)
    sent_speech = speech(0.0, SPEECH_S)
    play = tmp_path / "caller.wav"
    write_pcm_wav(play, lead, sent_tone, silence(GAP_S), sent_speech, silence(2.2))
    heard_wav = tmp_path / "heard.wav"

    async with BridgeStack(tmp_path, model_tls=scheme == "wss") as stack:
        emu = stack.emu
        assert emu.base_url.startswith(f"{scheme}://")
        emu.queue_next(
            settings={"speed": 4.0, "tone_hz": REPLY_HZ, "tone_dbfs": REPLY_PEAK_DBFS},
            annotations=[{"hears": HEARS, "reply": {"text": "Okay.", "duration_ms": REPLY_MS}}],
        )
        before = len(emu.sessions)
        done = await call(stack.uri(NUMBER[(dialect, fmt)]), play=play, record=heard_wav, hangup_after=5.0)
        assert done.returncode == 0, done.describe()
        assert done.report is not None
        phone = done.report
        report = await stack.report(phone["call_id"])
        record = one_session(emu, before)
        await emu.wait_closed(record)

    # The call itself.
    assert phone["sip_status"] == 200
    assert report["dialect"] == dialect and report["answered"] is True
    assert record.dialect == dialect
    assert report["errors"] == []
    assert report["media"]["port"] == media
    if media == "native":  # the clock thread asked for SCHED_RR on its first tick: granted as root, else refused
        assert report["media"]["clock"] == "granted" or report["media"]["clock"].startswith("refused: ")
    else:
        assert report["media"]["clock"] == "n/a"
    assert report["media"]["frames_in"] >= 200 and report["media"]["frames_out"] >= 200  # 5 s both ways
    uplink = report["media"]["uplink"]  # PCM on a native port: the clock thread sends; otherwise the loop does
    offloaded = media == "native" and fmt == "pcm16"
    sender, other = ("clock_thread", "loop") if offloaded else ("loop", "clock_thread")
    assert uplink[sender] >= 200 and uplink[other] == 0, uplink
    # The model's audio: every delta decoded by the socket's C downlink (native_downlink, on by default), over ws://
    # and wss:// (the native TLS engine), PCM and G.711 alike; the loop decoded none.
    downlink = report["media"]["downlink"]
    assert downlink["c"] >= 5 and downlink["loop"] == 0, downlink
    assert 0 < downlink["sunk"] < downlink["c"], downlink  # an item's first run the loop's, the rest C's own push
    assert report["caller_transcript"] == [HEARS]
    assert report["agent_transcript"] == ["Okay."]
    assert report["phases"][:5] == ["IDLE", "LISTENING", "THINKING", "SPEAKING", "LISTENING"], report["phases"]
    # Client events in protocol order: configure, stream audio; the server side answered the turn.
    received = record.types_received()
    assert received[0] == "session.update"
    assert set(received[1:]) == {"input_audio_buffer.append"}, set(received[1:])
    sent = record.types_sent()
    started = "input_audio_buffer.speech_started"
    order = [started, "input_audio_buffer.speech_stopped", "input_audio_buffer.committed", "response.created"]
    assert [t for t in sent if t in order][:4] == order
    assert sent.index(started) < sent.index("response.done")

    # 1. The model's recording holds the caller's audio at the session's rate.
    rate = 24000 if fmt == "pcm16" else RATE
    assert record.input_rate == rate
    if fmt == "g711_ulaw":
        assert len(record.input_g711) * 2 == len(record.input_audio)  # one μ-law byte per 8 kHz sample
    heard_by_model = pcm(record.input_audio)
    regions = active_regions(heard_by_model, rate, floor_dbfs=-45.0, bridge_gap_ms=200)
    assert regions, "the model heard nothing"
    onset = regions[0].start_s  # the tone's first sample (the lead-in is digital silence)
    tone_part = segment(heard_by_model, rate, onset + 0.1, onset + TONE_S - 0.1)
    assert_tone(tone_part, rate, CALLER_HZ)
    assert dbfs(tone_part) == pytest.approx(CALLER_DBFS, abs=1.0)
    # The speech that followed: the same waveform (correlation, best 8 kHz phase and lag), over three 0.4 s
    # windows: a frame lost to a loaded machine's jitter buffer spoils one window, not the check.
    speech_part = segment(heard_by_model, rate, onset + TONE_S, onset + TONE_S + GAP_S + SPEECH_S + 0.3)
    needles = [sent_speech[round(a * RATE) : round((a + 0.4) * RATE)] for a in (0.2, 0.6, 1.0)]
    best = max(best_correlation(x, n)[0] for x in to_8k(speech_part, rate) for n in needles)
    assert best > 0.9, best
    assert dbfs(speech_part) > -35.0

    # 2. The caller heard the reply: one stretch, as long as the reply, at 600 Hz and the sent level.
    heard, heard_rate = read_pcm_wav(heard_wav)
    assert heard_rate == RATE
    replies = active_regions(heard, RATE, floor_dbfs=-45.0)
    assert len(replies) == 1, replies
    (reply,) = replies
    assert reply.seconds == pytest.approx(REPLY_MS / 1000, abs=0.06), reply
    body = segment(heard, RATE, reply.start_s + 0.05, reply.end_s - 0.05)
    assert_tone(body, RATE, REPLY_HZ)
    assert dbfs(body) == pytest.approx(REPLY_PEAK_DBFS - SINE_PEAK_TO_RMS_DB, abs=1.5)
    assert report["agent_audio_ms"] == pytest.approx(REPLY_MS, abs=40)
    assert phone["received"]["peak_hz"] == pytest.approx(REPLY_HZ, abs=3)
