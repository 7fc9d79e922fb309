"""A card number the caller says, put by the model into a post-call field of type ``integer`` (issue 62, item 15),
through a real ``serve`` (one worker, Redis, the emulator, the pjsua2 softphone) and a real webhook endpoint (aiohttp,
every signature checked with ``standardwebhooks``): the report line, every Redis key, the console's view of the call
and the ``call.ended`` webhook all hold it masked as the plan's transcripts are, never the number."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from _webhooks import Receiver

from bridge.audio.wav import write_wav
from bridge.devkit.redis_server import redis_server_binary
from bridge.privacy.masking import HIDDEN
from bridge.webhooks.signing import new_secret
from tests.integration.edge._edge import Node, api, dump_redis, serve_node, softphone_call, wait_report

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary")
NUMBER, RATE = "7300", 8000
CARD = "4111111111111111"
SECRET = new_secret()
PLAN = {
    "name": "cards",
    "match": [NUMBER],
    "dialect": "ga",
    "greeting": "Greet the caller.",
    "profile": {
        "instructions": "Answer briefly.",
        "audio_format": "pcm16",
        "input_transcription": {"model": "whisper-1"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
    },
    "post_call": {
        "summary": False,
        "fields": {"type": "object", "properties": {"card": {"type": "integer"}}, "required": ["card"]},
    },
    "webhooks": [{"url": "", "secret": {"env": "CARDS_WEBHOOK_SECRET"}, "events": ["call.ended"], "name": "crm"}],
}


@pytest_asyncio.fixture
async def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Node, Receiver]]:
    hook = await Receiver(SECRET).start()
    monkeypatch.setenv("CARDS_WEBHOOK_SECRET", SECRET)
    plan = PLAN | {"webhooks": [PLAN["webhooks"][0] | {"url": hook.url}]}  # type: ignore[index]
    try:
        async with serve_node(tmp_path, [plan]) as edge:
            yield edge, hook
    finally:
        await hook.stop()


def _speech(path: Path) -> Path:
    """4 s of quiet (the greeting), 1.5 s of tone (the caller's turn), then quiet."""
    t = np.arange(int(1.5 * RATE)) / RATE
    samples = np.concatenate([np.zeros(4 * RATE), np.sin(2 * np.pi * 300 * t) * 0.2, np.zeros(RATE)])
    write_wav(path, (samples * 32767).astype("<i2").tobytes())
    return path


@pytest.mark.timeout(120)
async def test_a_card_number_in_an_integer_field_is_masked_in_the_report_redis_the_console_and_the_webhook(
    node: tuple[Node, Receiver], tmp_path: Path
) -> None:
    edge, hook = node
    edge.emulator.queue_next(
        settings={"speed": 4.0},
        annotations={"turns": [{"hears": f"My card number is {CARD}.", "reply": {"text": "Thank you."}}]},
    )
    phone = await softphone_call(
        edge.sip_port, NUMBER, "--play", str(_speech(tmp_path / "turn.wav")), "--hangup-after", "10"
    )
    assert phone["answered"], phone
    report = await wait_report(edge, phone["call_id"], within_s=30)
    post = report["post_call"]
    assert post["status"] == "ok", post
    assert post["fields"] == {"card": HIDDEN}  # the emulator filled the integer field with the number said
    (ended,) = (await hook.wait_for(lambda r: len(r) >= 1, 30))[:1]
    assert ended.verified and ended.body["type"] == "call.ended"
    assert ended.body["data"]["fields"] == {"card": HIDDEN}
    shown = await api(edge, f"/api/calls/{report['call_id']}")
    exported = await api(edge, f"/api/calls/{report['call_id']}/export")
    stored = await dump_redis(edge.redis.url)
    for where, text in [("report", str(report)), ("webhook", str(ended.body)), ("console", str(shown)),
                        ("export", str(exported)), ("redis", stored), ("log", edge.log.read_text())]:  # fmt: skip
        assert CARD not in text, where
