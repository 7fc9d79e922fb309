"""The records of a dead worker's calls, closed by the pool (bridge/serve/lost.py) against a real Redis: here as at
the next start of `serve` after the whole node was killed (no exit status known), with a recording cut mid-write."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from jsonschema import Draft202012Validator
from pydantic import SecretStr

from bridge.call.recorder import AUDIO_FILE, EVENTS_FILE, read_recording, wav_header
from bridge.config import Settings
from bridge.devkit.redis_server import EmbeddedRedis
from bridge.dialplan import load_dialplans
from bridge.serve.lost import close_lost_calls, worker_id
from bridge.store import keys
from bridge.store.dialogseal import DialogSeal
from bridge.store.record import iso
from bridge.store.reportfile import read_reports

SAFE = "gpt-realtime-2.1"  # the shipped support plan's safe variant (dialplans/support.yaml)

ROOT = Path(__file__).resolve().parents[3]
REPORT = Draft202012Validator(json.loads((ROOT / "docs" / "report.schema.json").read_text()))


async def test_a_previous_runs_calls_get_their_records_closed(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, tmp_path: Path
) -> None:
    settings = Settings(
        sip_port=5070, redis_url=redis_server.url, dialplans=ROOT / "dialplans",
        report_file=tmp_path / "calls.jsonl", recordings_dir=tmp_path / "recordings",
    )  # fmt: skip
    worker = worker_id(settings, 0)
    assert worker == "127.0.0.1:5070"
    call_id = "c-" + "a" * 32
    state = {"call_id": call_id, "worker": worker, "dialplan": "support", "variant": SAFE, "dialect": "ga",
             "phase": "SPEAKING", "started_at": "1000.000", "sip_call_id": "abc@phone"}  # fmt: skip
    await raw.hset(keys.call(call_id), mapping=state)
    await raw.sadd(keys.worker_calls(worker), call_id, "c-ended")
    await raw.hset(keys.call("c-ended"), mapping={"phase": "ENDED", "ended_at": "1.0", "end_reason": "caller hung up"})
    rec = tmp_path / "recordings" / call_id
    rec.mkdir(parents=True)
    (rec / AUDIO_FILE).write_bytes(wav_header(8000 * 4) + bytes(8000 * 4 * 2 + 3))  # 2 s on disk, a write cut short
    (rec / EVENTS_FILE).write_text('{"kind": "recording"}\n{"t_ms": 5, "kind": "ringing", "summary": "x"}\n')

    closed = await close_lost_calls(raw, settings, load_dialplans(settings.dialplans), 0, None)
    assert closed == [call_id]  # the call that had ended already keeps its own end
    got = await raw.hgetall(keys.call(call_id))
    assert (got["phase"], got["end_reason"], got["worker_exit"]) == (
        "ENDED",
        "worker died",
        "a previous run of this node",
    )
    assert (await raw.hgetall(keys.call("c-ended")))["end_reason"] == "caller hung up"
    assert not await raw.smembers(keys.worker_calls(worker))
    (line,) = read_reports(settings.report_file)  # type: ignore[arg-type]  # set above
    assert (line["call_id"], line["end_reason"], line["variant"], line["worker_died"]) == (
        call_id, "worker died", SAFE, True,
    )  # fmt: skip
    assert [e.message for e in REPORT.iter_errors(line)] == []  # typed as docs/report.schema.json says
    assert (line["started_at"], line["answered_at"], line["ended_at"]) == (
        "1970-01-01T00:16:40.000Z", None, iso(float(got["ended_at"])),
    )  # fmt: skip
    assert (line["sip_call_id"], line["outcome"], line["duration_s"]) == ("abc@phone", "failed", 0.0)
    caller, _, _, notes = read_recording(rec)
    assert len(caller) == 8000 * 2 * 2 and notes[-1]["kind"] == "ended" and notes[-1]["t_ms"] == pytest.approx(2000)
    window = [json.loads(m) for m in await raw.zrange(keys.variant_calls("support", SAFE), 0, -1)]
    assert [w["outcome"] for w in window] == ["dropped"]
    assert await close_lost_calls(raw, settings, [], 0, None) == []  # once only


def _ok(request: str) -> bytes:
    """The caller's 200 to ``request``: its Via, From, To, Call-ID and CSeq copied (RFC 3261 §8.2.6.2)."""
    copied = [line for line in request.split("\r\n") if line.split(":")[0] in ("Via", "From", "To", "Call-ID", "CSeq")]
    return ("\r\n".join(["SIP/2.0 200 OK", *copied, "Content-Length: 0"]) + "\r\n\r\n").encode()


async def test_a_lost_calls_caller_gets_a_bye_from_its_sealed_dialog_and_one_sealed_elsewhere_is_a_warning(
    redis_server: EmbeddedRedis, raw: aioredis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(sip_port=5070, redis_url=redis_server.url, listen_key=SecretStr("this node's key"))
    worker = worker_id(settings, 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
        phone.bind(("127.0.0.1", 0))
        phone.setblocking(False)
        dialog = {
            "call_id": "mine@phone",
            "local": "<sip:7200@127.0.0.1>;tag=b1",
            "remote": "<sip:+14155550123@127.0.0.1>;tag=p1",
            "target": f"sip:+14155550123@127.0.0.1:{phone.getsockname()[1]}",
        }
        sealed = {
            "c-mine": DialogSeal.under("this node's key").seal("c-mine", json.dumps(dialog)),
            "c-foreign": DialogSeal.under("another node's key").seal("c-foreign", json.dumps(dialog)),
        }
        for call_id, text in sealed.items():
            await raw.hset(keys.call(call_id), mapping={"call_id": call_id, "phase": "SPEAKING", "sip_dialog": text})
            await raw.sadd(keys.worker_calls(worker), call_id)
        loop = asyncio.get_running_loop()
        with caplog.at_level(logging.WARNING, logger="bridge.store"):
            closing = asyncio.create_task(close_lost_calls(raw, settings, [], 0, None))
            first, sender = await asyncio.wait_for(loop.sock_recvfrom(phone, 4096), 5.0)
            again, _ = await asyncio.wait_for(loop.sock_recvfrom(phone, 4096), 5.0)  # unanswered: sent again
            assert again == first  # the same transaction (its branch), half a second later
            phone.sendto(_ok(again.decode()), sender)
            closed = await asyncio.wait_for(closing, 10.0)  # the 200 ends the transaction: no copy after it
        assert sorted(closed) == ["c-foreign", "c-mine"]  # both records closed, the BYE or not
        with contextlib.suppress(BlockingIOError):  # sent before close_lost_calls returned: all here already
            extra = phone.recv(4096)
            raise AssertionError(f"a BYE after its 200: {extra!r}")
    # the foreign dialog did not open: only this node's caller got its BYE
    bye = first.decode()
    assert bye.startswith("BYE sip:+14155550123@127.0.0.1:") and "Call-ID: mine@phone\r\n" in bye, bye
    warned = [r.getMessage() for r in caplog.records if "does not open with this node's listen_key" in r.getMessage()]
    assert [w.split(":")[0] for w in warned] == ["call c-foreign"], warned
    for call_id in sealed:
        assert (await raw.hgetall(keys.call(call_id)))["end_reason"] == "worker died"
