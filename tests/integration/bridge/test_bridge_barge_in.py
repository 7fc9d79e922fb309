"""Done-when 2: barge-in. The caller speaks over the agent's reply; the agent's audio stops at the caller at once,
and the emulator gets a ``conversation.item.truncate`` whose ``audio_end_ms`` is what the caller actually heard.

The emulator paces its replies at real time (``speed`` 1) so the reply is still being generated and played when
the caller speaks again. The first reply is a 6 s, 600 Hz tone; the turn after the barge-in is answered with a
short 900 Hz tone, so the two replies are told apart by frequency in the caller's recording.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _bridge_helpers import (
    NUMBER,
    RATE,
    BridgeStack,
    Region,
    active_regions,
    assert_tone,
    call,
    one_session,
    read_pcm_wav,
    segment,
    silence,
    speech,
    timeline,
    write_pcm_wav,
)
from numpy.typing import NDArray

# It measures audio timing to the frame: xdist group "cpu", never next to a CPU-heavy test (tests/conftest.py).
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("cpu")]

FIRST_HZ, FIRST_MS = 600.0, 6000
SECOND_HZ, SECOND_MS = 900.0, 500
LEAD_S, SPEECH1_S, SPEECH2_AT_S, SPEECH2_S = 0.3, 1.0, 3.6, 1.0
FRAME_MS = 20
REPLY_GAP_MS = 400.0


def audio_s(heard: NDArray[np.float64], region: Region) -> float:
    """Seconds of sound inside ``region``: its active stretches, split at any gap of 5 ms or more."""
    inside = segment(heard, RATE, region.start_s, region.end_s)
    return sum(r.seconds for r in active_regions(inside, RATE, floor_dbfs=-45.0, bridge_gap_ms=5.0))


@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_barge_in_stops_the_agent_and_truncates_to_what_was_heard(tmp_path: Path, dialect: str) -> None:
    play = tmp_path / "caller.wav"
    first = speech(0.0, SPEECH1_S)
    second = speech(1.3, SPEECH2_S)
    write_pcm_wav(
        play,
        silence(LEAD_S),
        first,
        silence(SPEECH2_AT_S - LEAD_S - SPEECH1_S),
        second,
        silence(1.6),
    )
    heard_wav = tmp_path / "heard.wav"
    async with BridgeStack(tmp_path) as stack:
        emu = stack.emu
        emu.queue_next(
            settings={"speed": 1.0, "delta_ms": 100},
            annotations=[
                {"hears": "first question", "reply": {"text": "Long.", "tone_hz": FIRST_HZ, "duration_ms": FIRST_MS}},
                {"hears": "wait, stop", "reply": {"text": "Sure.", "tone_hz": SECOND_HZ, "duration_ms": SECOND_MS}},
            ],
        )
        before = len(emu.sessions)
        # The second reply ends about 5.5 s into the call: the hang-up leaves it 1.5 s of slack on a loaded machine.
        # no_plc: a frame late under load must not come out of the caller's concealment as more of the reply
        done = await call(
            stack.uri(NUMBER[(dialect, "pcm16")]), play=play, record=heard_wav, hangup_after=7.0, no_plc=True
        )
        assert done.returncode == 0, done.describe()
        assert done.report is not None
        report = await stack.report(done.report["call_id"])
        record = one_session(emu, before)
        await emu.wait_closed(record)

    # The caller's recording: the first reply cut short at 600 Hz, then the short second reply at 900 Hz.
    # A reply the model paces at real time can leave frames of dead air inside it on a busy machine (the playout's
    # underruns, and with no concealment a frame late at the phone): gaps of up to REPLY_GAP_MS stay inside one
    # reply. The two replies are over a second apart (the caller's second question and its end of turn).
    heard, _ = read_pcm_wav(heard_wav)
    regions = active_regions(heard, RATE, floor_dbfs=-45.0, bridge_gap_ms=REPLY_GAP_MS)
    assert len(regions) == 2, regions
    cut, after = regions
    cut_audio = segment(heard, RATE, cut.start_s + 0.05, cut.end_s - 0.05)
    assert_tone(cut_audio, RATE, FIRST_HZ)
    after_audio = segment(heard, RATE, after.start_s + 0.05, after.end_s - 0.05)
    assert_tone(after_audio, RATE, SECOND_HZ)
    # What the caller got of each reply: its audio, without the dead air inside it (the regions above span it).
    assert audio_s(heard, after) == pytest.approx(SECOND_MS / 1000, abs=0.06)
    heard_ms = audio_s(heard, cut) * 1000
    assert 1000 < heard_ms < FIRST_MS / 2, cut  # really interrupted, after playing a while

    # The bridge: one barge-in, SPEAKING -> CANCELLING -> LISTENING, one truncate of the playing item. The model's
    # audio came through the socket's C downlink (native_downlink, the default): the truncate is still what was heard.
    downlink = report["media"]["downlink"]
    assert downlink["c"] > 0 and downlink["loop"] == 0, downlink
    assert 0 < downlink["sunk"] < downlink["c"], downlink  # an item's first run the loop's, the rest C's own push
    assert report["barge_ins"] == 1
    phases = report["phases"]
    i = phases.index("CANCELLING")
    assert phases[i - 1 : i + 2] == ["SPEAKING", "CANCELLING", "LISTENING"], phases
    (truncate,) = report["truncates"]
    audio_end_ms = truncate["audio_end_ms"]
    assert audio_end_ms % FRAME_MS == 0

    # Done-when: the truncate's audio_end_ms is within 40 ms of the audio the caller actually got.
    assert abs(audio_end_ms - heard_ms) <= 40, (audio_end_ms, heard_ms)

    # The agent audio stopped within a few frames of the barge-in: the bridge had played (barge-in time - first
    # frame handed to RTP) of the reply when it saw speech_started, and the caller heard no more than that.
    (speaking_at, _), *_ = [(t, s) for t, s in timeline(report, "phase") if s.endswith("SPEAKING: model audio")]
    playback_ms = report["latency_ms"]["playback"][0]
    (barge_at, _), *_ = timeline(report, "barge_in")
    started_at = [t for t, _ in timeline(report, "speech_started")]
    assert any(0 <= barge_at - t <= FRAME_MS for t in started_at), (barge_at, started_at)
    played_until_barge = barge_at - (speaking_at + playback_ms)  # by the clock: dead air inside it included
    assert abs(cut.seconds * 1000 - played_until_barge) <= 3 * FRAME_MS, (cut, played_until_barge)

    # The emulator: speech_started of the second turn, then the bridge's truncate of the reply item, accepted.
    (emu_truncate,) = record.truncates
    assert emu_truncate["ok"] is True
    assert emu_truncate["audio_end_ms"] == audio_end_ms
    truncates = [e for e in record.received if e.get("type") == "conversation.item.truncate"]
    assert len(truncates) == 1
    assert truncates[0]["audio_end_ms"] == audio_end_ms and truncates[0]["content_index"] == 0
    reply_items = {
        e["item"]["id"]
        for e in record.sent
        if e.get("type") == "response.output_item.added" and e["item"].get("type") == "message"
    }
    assert truncates[0]["item_id"] in reply_items
    assert truncates[0]["item_id"] == truncate["item_id"]
    kinds = [k for _t, direction, k in record.timeline if (direction, k) != ("in", "input_audio_buffer.append")]
    second_start = [i for i, k in enumerate(kinds) if k == "input_audio_buffer.speech_started"][1]
    assert kinds.index("conversation.item.truncate") > second_start
    # The reply was still being generated: the emulator cancelled it on the turn (interrupt_response).
    assert any(c["by"] == "turn_detected" and c["ok"] for c in record.cancels), record.cancels
    assert report["caller_transcript"] == ["first question", "wait, stop"]
    assert [e["code"] for e in report["errors"]] == []
