"""Media the call does not admit, end to end through a real ``serve`` (worker, Redis, the emulator, the console API):
dropped below pjmedia, counted in the call's report line, and, when it is all the caller sends, recorded as one
``media_dropped`` entry in the call's event stream in Redis (bridge/sip/rtpguard.py, bridge/sip/callermedia.py,
bridge/events.py ``MediaDropped``).

A call admits media from the offer's ``c=`` host and from the host its INVITE came from (symmetric RTP), any port of
those; so a stranger here sends from another loopback address (127.0.0.3). The caller signals and announces
127.0.0.1 and talks 1 kHz; the stranger sends 1.9 kHz PCMU to the call's media port (taken from the 200 OK's SDP)
while the caller talks; the emulator answers each turn with 600 Hz.

``media_dropped`` says "the caller is heard by nobody" (every packet since the answer dropped): a caller who is heard
while a stranger's packets are dropped beside it gets the count in its report, and no ``media_dropped``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from _edge import (
    Node,
    band_share,
    call_events,
    decoded,
    live_call_id,
    loud_frames,
    serve_node,
    wait_events,
    wait_report,
)

from bridge.devkit.ports import can_bind
from tests.integration.sip._helpers import (
    STRANGER,
    RawSip,
    RtpPeer,
    Stranger,
    in_dialog,
    open_dialog,
    sdp_media_address,
    sdp_offer,
)

NUMBER = "7100"
CALLER_HZ, STRANGER_HZ, AGENT_HZ = 1000.0, 1900.0, 600.0
QUIET_DBFS, TALK_DBFS = -90.0, -12.0
ALL_DROPPED = "no audio from the caller"
PLAN = {
    "name": "edge-media",
    "match": [NUMBER],
    "dialect": "ga",
    "profile": {
        "instructions": "Answer briefly.",
        "audio_format": "pcm16",
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
    },
}

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not can_bind(STRANGER), reason=f"{STRANGER} is not usable here"),
    pytest.mark.asyncio(loop_scope="module"),
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def node(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Node]:
    async with serve_node(tmp_path_factory.mktemp("media"), [PLAN]) as running:
        yield running


async def _ended(node: Node, call_id: str, within_s: float = 10.0) -> list[dict[str, str]]:
    """The call's event stream once its ``ended`` entry is in Redis (the store writes in batches, in order)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        events = await call_events(node, call_id)
        if any(e.get("kind") == "ended" for e in events):
            return events
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no 'ended' entry in the event stream of {call_id}: {await call_events(node, call_id)}")


async def _heard_agent(caller: RtpPeer, since: float, within_s: float) -> list[Any]:
    """Wait until the caller has heard 0.8 s of the agent's audio (frames above -40 dBFS) since ``since``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        packets = caller.received_between(since, time.monotonic())
        if len(loud_frames(decoded(packets))) >= 40 * 160:
            return packets
        await asyncio.sleep(0.1)
    return caller.received_between(since, time.monotonic())


async def test_a_stranger_beside_a_talking_caller_is_dropped_counted_and_the_caller_hears_the_agent(
    node: Node,
) -> None:
    node.emulator.queue_next(settings={"speed": 4.0, "tone_hz": AGENT_HZ, "min_reply_ms": 1500, "max_reply_ms": 1500})
    before = len(node.emulator.sessions)
    with RtpPeer() as caller, RawSip(node.sip_port) as raw:
        caller.tone_hz, caller.tone_dbfs = CALLER_HZ, QUIET_DBFS
        final, dialog = open_dialog(raw, sdp_offer(caller.port, {0: "PCMU/8000"}), user=NUMBER)
        assert final.status == 200, final.raw
        caller.remote = sdp_media_address(final.raw)
        answered = time.monotonic()
        with Stranger([caller.remote], STRANGER_HZ) as stranger:
            await asyncio.sleep(0.4)  # quiet, then one turn of the caller's: 1 kHz for a second
            caller.tone_dbfs = TALK_DBFS
            await asyncio.sleep(1.0)
            caller.tone_dbfs = QUIET_DBFS
            heard = await _heard_agent(caller, answered, within_s=10.0)
            assert in_dialog(raw, dialog, "BYE").status == 200
        assert stranger.sent > 50, stranger.sent
        assert stranger.received == 0, "the stranger was sent the call's audio"
    report = await wait_report(node, dialog.call_id)
    events = await _ended(node, report["call_id"])

    # the caller heard the agent: its 600 Hz, not the stranger's tone
    agent = loud_frames(decoded(heard))
    assert len(agent) >= 40 * 160, f"the caller heard {len(agent) / 8000:.2f} s of the agent"
    assert band_share(agent, AGENT_HZ) > 0.8 and band_share(agent, STRANGER_HZ) < 0.01
    # the model heard the caller, never the stranger
    (record,) = node.emulator.sessions[before:]
    model_heard = np.frombuffer(record.input_audio, dtype="<i2").astype(np.float64)
    assert band_share(model_heard, CALLER_HZ, record.input_rate) > 0.5
    assert band_share(model_heard, STRANGER_HZ, record.input_rate) < 0.001, "the stranger reached the model"
    # counted in the report line; the caller was heard, so no media_dropped (nor its WARNING)
    assert int(report["media"]["rtp_dropped"]) > 50, report["media"]
    kinds = [e.get("kind") for e in events]
    assert "media_dropped" not in kinds, kinds
    assert ALL_DROPPED not in node.log.read_text()


async def test_a_caller_heard_from_no_admitted_host_is_one_media_dropped_entry_in_redis(node: Node) -> None:
    node.emulator.queue_next(settings={"speed": 4.0})
    with RtpPeer(STRANGER) as caller, RawSip(node.sip_port) as raw:  # signals from .1, sends its RTP from .3
        caller.tone_hz, caller.tone_dbfs = CALLER_HZ, TALK_DBFS
        final, dialog = open_dialog(raw, sdp_offer(caller.port, {0: "PCMU/8000"}), user=NUMBER)
        assert final.status == 200, final.raw
        caller.remote = sdp_media_address(final.raw)
        call_id = await live_call_id(node)
        recorded = await wait_events(node, call_id, "media_dropped", 1, within_s=6.0)  # within about 2 s
        assert recorded, f"no media_dropped entry in Redis while the call was up:\n{node.log.read_text()[-2000:]}"
        await asyncio.sleep(0.5)  # the caller goes on sending: a second report would come within the watch's beat
        assert in_dialog(raw, dialog, "BYE").status == 200
    report = await wait_report(node, dialog.call_id)
    events = await _ended(node, report["call_id"])

    dropped = [e for e in events if e.get("kind") == "media_dropped"]
    assert len(dropped) == 1, [e.get("kind") for e in events]
    (entry,) = dropped
    assert entry["source"] == STRANGER and entry["admitted"] == "127.0.0.1", entry
    assert int(entry["dropped"]) >= 10, entry
    assert int(report["media"]["rtp_dropped"]) >= int(entry["dropped"]), (report["media"], entry)
    warnings = [line for line in node.log.read_text().splitlines() if ALL_DROPPED in line]
    assert len(warnings) == 1 and f"sends from {STRANGER}" in warnings[0], warnings
