"""Card digits and the caller's number stay masked everywhere, end to end through a real ``serve`` (worker, Redis,
the emulator, the console API): a caller from ``+14155550123`` keys a test card number (RFC 4733) on a plan with the
default privacy (``dtmf_visible_digits`` 1, ``caller_visible_digits`` 4: bridge/dialplan.py ``Privacy``,
bridge/call/privacy.py, bridge/privacy/masking.py). After the call, neither the card number (nor any 6-digit window
of it) nor the caller's full number is in the node's log, in any Redis key or value, in the report file or in the
console's JSON of the call; the masked forms are. And an INVITE the worker refuses logs its caller masked.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from _edge import Node, NumberedSip, api, call_events, dump_redis, live_call_id, serve_node, wait_events, wait_report

from bridge.privacy.masking import mask_number
from tests.integration.sip._helpers import RtpPeer, in_dialog, open_dialog, sdp_media_address, sdp_offer

NUMBER, CLOSED_NUMBER = "7200", "7201"
CALLER = "+14155550123"
CARD = "4111111111111111"  # a test PAN (Visa's)
CALLER_FORMS = (CALLER[1:], CALLER[2:])  # E.164 digits with and without the country code
CARD_WINDOWS = tuple(sorted({CARD[i : i + 6] for i in range(len(CARD) - 5)}))  # "111111", "411111"
PLACES = ("log", "redis", "report file", "console")
PCMU_TE = {0: "PCMU/8000", 101: "telephone-event/8000"}
PROFILE = {
    "instructions": "Answer briefly.",
    "audio_format": "pcm16",
    "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
}
PLANS = [
    {"name": "edge-pci", "match": [NUMBER], "dialect": "ga", "profile": PROFILE},
    # every caller of this one is refused (403, counted and logged by the SIP endpoint)
    {"name": "edge-closed", "match": [CLOSED_NUMBER], "dialect": "ga", "allowed_sources": ["192.0.2.0/24"],
     "profile": PROFILE},
]  # fmt: skip
# a run of digits standing alone (a space or a dash between two digits keeps it going), not part of a hex id
DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z])\d(?:[ -]?\d)*(?![0-9A-Za-z])")

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def node(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Node]:
    async with serve_node(tmp_path_factory.mktemp("pci"), PLANS) as running:
        yield running


def _keys(entries: list[dict[str, Any]]) -> str:
    """The summaries of the ``dtmf`` entries of a call's events (the keys as stored), joined."""
    return "".join(str(e.get("summary", "")) for e in entries if e.get("kind") == "dtmf")


def _leaks(text: str, forms: tuple[str, ...]) -> list[str]:
    """The lines of ``text`` with one of ``forms`` in a run of digits (cut to 300 characters around it)."""
    found = []
    for line in text.splitlines():
        runs = [re.sub(r"[ -]", "", run) for run in DIGIT_RUN.findall(line)]
        hits = [form for form in forms if any(form in run for run in runs)]
        if hits:
            at = max(0, min(line.find(hit[:4]) for hit in hits) - 150)
            found.append(f"{hits}: ...{line[at : at + 300]}...")
    return found


async def _ended_in_redis(node: Node, call_id: str, within_s: float = 10.0) -> None:
    """Wait until the call's hash in Redis says it ended (the store writes in batches, in order)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if "ended_at" in (await api(node, f"/api/calls/{call_id}")).get("call", {}):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"call {call_id} never ended in Redis")


@dataclass
class KeyedCall:
    """What the node keeps of one call whose caller keyed the card: the report line, and each place's text."""

    report: dict[str, Any]
    scanned: dict[str, str]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def keyed_call(node: Node) -> KeyedCall:
    node.emulator.queue_next(settings={"speed": 4.0})
    with RtpPeer() as phone, NumberedSip(node.sip_port, CALLER) as raw:
        phone.tone_hz, phone.tone_dbfs = 1000.0, -90.0  # a quiet line
        final, dialog = open_dialog(raw, sdp_offer(phone.port, PCMU_TE), user=NUMBER)
        assert final.status == 200, final.raw
        phone.remote = sdp_media_address(final.raw)
        call_id = await live_call_id(node)
        for digit in CARD:
            phone.send_digit(digit)  # 160 ms each (RFC 4733 §2.5), one run of keys
        keyed = await wait_events(node, call_id, "dtmf", len(CARD), within_s=10.0)
        assert len(keyed) == len(CARD), keyed
        assert in_dialog(raw, dialog, "BYE").status == 200
    report = await wait_report(node, dialog.call_id)
    assert report["call_id"] == call_id
    await _ended_in_redis(node, call_id)
    detail = await api(node, f"/api/calls/{call_id}")
    # each place keeps one entry per key: the keys it holds, in order, are scanned as one run too
    held = {
        "log": "",
        "redis": _keys(await call_events(node, call_id)),
        "report file": "".join(report["dtmf"]) + " " + "".join(s for _t, k, s in report["timeline"] if k == "dtmf"),
        "console": _keys(detail["events"]),
    }
    scanned = {
        "log": node.log.read_text(),
        "redis": await dump_redis(node.redis.url),
        "report file": node.reports.read_text(),
        "console": json.dumps(detail) + "\n" + json.dumps(await api(node, "/api/calls")),
    }
    scanned = {place: f"{text}\nthe keys as held: {held[place]}" for place, text in scanned.items()}
    return KeyedCall(report, scanned)


async def test_the_bridge_got_every_key_and_the_number_and_keeps_their_masked_forms(keyed_call: KeyedCall) -> None:
    assert "".join(keyed_call.report["dtmf"]) == "4" + "*" * 15, keyed_call.report["dtmf"]
    masked = mask_number(CALLER, 4)
    assert masked == "+*******0123"
    assert masked in keyed_call.scanned["redis"] and masked in keyed_call.scanned["console"]


@pytest.mark.parametrize("place", PLACES)
async def test_no_card_digits(keyed_call: KeyedCall, place: str) -> None:
    leaks = _leaks(keyed_call.scanned[place], CARD_WINDOWS)
    assert not leaks, "\n".join(leaks)


@pytest.mark.parametrize("place", PLACES)  # Redis: the call hash's sip_dialog is sealed (bridge/store/dialogseal.py)
async def test_no_full_caller_number(keyed_call: KeyedCall, place: str) -> None:
    leaks = _leaks(keyed_call.scanned[place], CALLER_FORMS)
    assert not leaks, "\n".join(leaks)


async def test_a_refused_invite_logs_its_caller_masked(node: Node) -> None:
    with NumberedSip(node.sip_port, CALLER) as raw:
        final, _seen = raw.invite(sdp_offer(raw.port + 2, PCMU_TE), user=CLOSED_NUMBER)
    assert final.status == 403, final.raw
    deadline = time.monotonic() + 5.0
    lines: list[str] = []
    while not lines and time.monotonic() < deadline:
        lines = [line for line in node.log.read_text().splitlines() if "refused INVITE" in line]
        await asyncio.sleep(0.05)
    (line,) = lines  # the one INVITE this node refuses
    assert f"to {CLOSED_NUMBER}: 403" in line, line
    assert f"from {mask_number(CALLER, 4)} " in line, line
    assert not _leaks(line, CALLER_FORMS + CARD_WINDOWS), line
