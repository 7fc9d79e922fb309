"""A worker's ready report: what parses, and what each refusal says (the reason the pool logs when it restarts a
worker that cannot report ready)."""

from __future__ import annotations

import asyncio
import os

import pytest

from bridge.serve.ready import READY_REPORT_MAX, ReadyReport, parse_ready, read_report, send_ready


def test_a_report_round_trips() -> None:
    report = ReadyReport(5061, 4, "SCHED_RR 10")
    assert parse_ready(report.to_json(3).encode() + b"\n") == report


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"09:14:34.030 os_core_unix.c !pjlib 2.15.1 for POSIX initialized", "is not JSON: b'09:14:34.030"),
        (b"\xff\xfe", "is not JSON"),
        (b"[5061]", "is not a JSON object"),
        (b'{"sip_port": "5061"}', "no SIP port (sip_port: '5061')"),
        (b'{"sip_port": 0}', "no SIP port"),
        (b'{"sip_port": true}', "no SIP port"),
        (b'{"sip_port": 5061, "max_calls": -1}', "no call cap (max_calls: -1)"),
        (b'{"sip_port": 5061, "scheduling": 7}', "scheduling is not text"),
        (b"{" + b" " * READY_REPORT_MAX + b"}", f"over {READY_REPORT_MAX} bytes"),
    ],
)
def test_what_is_not_a_report_says_why(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match="its ready report") as caught:
        parse_ready(data)
    assert reason in str(caught.value)


async def test_the_channel_carries_one_line_and_its_end() -> None:
    read_end, write_end = os.pipe()
    send_ready(write_end, ReadyReport(5061, 4, "ordinary"), 0)  # and closes it
    assert parse_ready(await read_report(read_end)) == ReadyReport(5061, 4, "ordinary")
    read_end, write_end = os.pipe()
    os.close(write_end)  # closed without a report (the worker died)
    assert await read_report(read_end) == b""
    read_end, write_end = os.pipe()
    os.write(write_end, b"x" * (2 * READY_REPORT_MAX))  # no end in sight: read no further than the cap
    data = await asyncio.wait_for(read_report(read_end), 5)
    os.close(write_end)
    assert len(data) == READY_REPORT_MAX + 1
