"""Done-when 5, through the real CLI: ``callbridge serve`` (``python -m bridge serve``) in a subprocess, pointed at
the in-process emulator.

* SIPp's built-in ``-sn uac_pcap`` scenario (Debian ``sip-tester``) completes a call: it plays the G.711 A-law
  pcap and an RFC 4733 digit; the pcap's audio reaches the emulator (correlation with the decoded pcap payload).
* An offer of no codec of ours (G.729 only) gets 488 from the same worker.
* A full worker refuses: five concurrent softphone calls to one worker (4 calls per process) leave the fifth with
  486 Busy Here or 503; the other four are answered and bridged.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _audio import pieces_heard
from _bridge_helpers import (
    LOCALHOST,
    RATE,
    active_regions,
    finish,
    free_port,
    one_session,
    pcm,
    read_reports,
    run,
    silence,
    softphone_args,
    speech,
    start,
    stop,
    to_8k,
    wait_report,
    wait_reports,
    wait_sip_ready,
    write_dialplans,
    write_pcm_wav,
)

from bridge.audio.wav import alaw_decode
from bridge.emulator import EmulatorServer

pytestmark = pytest.mark.integration

SIPP = shutil.which("sipp")
PCAP_DIRS = [Path("/usr/share/sip-tester"), Path("/usr/share/doc/sip-tester/examples/pcap")]
G729_SCENARIO = Path(__file__).resolve().parents[1] / "sip" / "scenarios" / "uac_g729_only.xml"
PCAP_DIR = next((d for d in PCAP_DIRS if (d / "g711a.pcap").exists()), None)


class Serve:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, reports: Path) -> None:
        self.proc, self.port, self.reports = proc, port, reports


@contextlib.asynccontextmanager
async def serve(tmp: Path, emulator: EmulatorServer) -> AsyncIterator[Serve]:
    """``callbridge serve --workers 1`` on a free port, ready when it answers SIP OPTIONS."""
    port = free_port()
    reports = tmp / "calls.jsonl"
    dialplans = write_dialplans(tmp / "dialplans")
    proc = await start(
        sys.executable, "-m", "bridge", "serve", "--workers", "1", "--sip-port", str(port),
        "--realtime-url", emulator.base_url, "--dialplans", str(dialplans), "--report-file", str(reports),
    )  # fmt: skip
    try:
        await wait_sip_ready(port, timeout=30, proc=proc)
        yield Serve(proc, port, reports)
    finally:
        done = await stop(proc)
        assert done.returncode == 0, done.describe()


def pcap_rtp_payloads(path: Path) -> list[tuple[int, bytes]]:
    """(payload type, payload) of each RTP packet in a classic libpcap file of Ethernet/IPv4/UDP frames."""
    import struct

    data = path.read_bytes()
    endian = "<" if struct.unpack_from("<I", data)[0] in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    packets: list[tuple[int, bytes]] = []
    offset = 24
    while offset + 16 <= len(data):
        incl = struct.unpack_from(endian + "IIII", data, offset)[2]
        frame = data[offset + 16 : offset + 16 + incl]
        offset += 16 + incl
        if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue
        rtp = frame[14 + (frame[14] & 0x0F) * 4 + 8 :]
        if len(rtp) >= 12 and rtp[0] >> 6 == 2:
            packets.append((rtp[1] & 0x7F, rtp[12 + (rtp[0] & 0x0F) * 4 :]))
    return packets


@pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)")
@pytest.mark.skipif(PCAP_DIR is None, reason="the sip-tester pcaps are not installed")
async def test_sipp_uac_pcap_call_through_callbridge_serve(tmp_path: Path) -> None:
    assert SIPP is not None and PCAP_DIR is not None
    # -sn uac_pcap plays pcap/g711a.pcap then pcap/dtmf_2833_1.pcap, relative to the working directory.
    (tmp_path / "pcap").mkdir()
    for name in ("g711a.pcap", "dtmf_2833_1.pcap"):
        shutil.copy(PCAP_DIR / name, tmp_path / "pcap" / name)
    async with EmulatorServer(LOCALHOST, 0, speed=4.0, ping_interval_s=0) as emulator, serve(tmp_path, emulator) as srv:
        before = len(emulator.sessions)
        sipp = await run(
            SIPP, "-sn", "uac_pcap", "-m", "1", "-i", LOCALHOST, "-mi", LOCALHOST,
            "-p", str(free_port()), "-mp", str(free_port()), "-timeout", "30", "-timeout_error",
            "-nostdin", "-trace_err", "-s", "3101", f"{LOCALHOST}:{srv.port}",
            timeout=45, cwd=tmp_path,
        )  # fmt: skip
        assert sipp.returncode == 0, sipp.stdout[-2000:] + sipp.stderr[-2000:]
        record = one_session(emulator, before)
        await emulator.wait_closed(record)
        (report,) = await wait_reports(srv.reports, 1)
        # The same worker refuses an offer of no codec of ours (the SIP tests' G729-only scenario).
        g729 = await run(
            SIPP, "-sf", str(G729_SCENARIO), "-m", "1", "-i", LOCALHOST, "-p", str(free_port()),
            "-timeout", "10", "-timeout_error", "-nostdin", "-s", "3101", f"{LOCALHOST}:{srv.port}",
            timeout=20, cwd=tmp_path,
        )  # fmt: skip
        assert g729.returncode == 0, g729.stdout[-2000:] + g729.stderr[-2000:]  # the scenario waits for a 488
        assert len(emulator.sessions) == before + 1  # no Realtime session was opened for it

    assert report["answered"] is True and report["dialect"] == "ga"
    assert report["dtmf"] == ["1"]  # the RFC 4733 event of dtmf_2833_1.pcap
    assert report["end_reason"].startswith("caller hung up")
    # The pcap's audio reached the model: 24 kHz, energy for most of the 8 s, and the same waveform.
    assert record.input_rate == 24000
    heard = pcm(record.input_audio)
    active = sum(r.seconds for r in active_regions(heard, 24000, floor_dbfs=-50.0, bridge_gap_ms=300))
    assert active >= 5.0, active
    sent = pcm(alaw_decode(b"".join(p for pt, p in pcap_rtp_payloads(tmp_path / "pcap" / "g711a.pcap") if pt == 8)))
    # 1 s to 3 s of the pcap in eight quarter-seconds, each found on its own (at the best decimation phase), so that
    # a frame the jitter buffer drops or conceals on a busy host costs the piece it falls in, not the comparison.
    phases = [pieces_heard(x, sent[RATE : 3 * RATE], RATE // 4) for x in to_8k(heard, 24000)]
    scores = [max(phase[i][0] for phase in phases) for i in range(8)]
    assert sum(score > 0.9 for score in scores) >= 6, scores


async def test_full_worker_refuses_the_fifth_concurrent_call(tmp_path: Path) -> None:
    play = tmp_path / "caller.wav"
    write_pcm_wav(play, silence(0.3), speech(0.0, 1.0), silence(8.0))
    async with EmulatorServer(LOCALHOST, 0, speed=4.0, ping_interval_s=0) as emulator, serve(tmp_path, emulator) as srv:
        uri = f"sip:3101@{LOCALHOST}:{srv.port}"
        phones = [await start(*_call_args(uri, play, hangup_after=7.0)) for _ in range(5)]
        results = [await finish(p, timeout=40) for p in phones]
        answered = [r.report for r in results if r.report is not None and r.report["answered"]]
        refused = [r.report for r in results if r.report is not None and not r.report["answered"]]
        for r in answered:
            await wait_report(srv.reports, r["call_id"])
        reports = read_reports(srv.reports)

    assert all(r.report is not None for r in results), [r.describe() for r in results]
    assert len(answered) == 4, [r.report for r in results]
    assert [r["sip_status"] for r in answered] == [200] * 4
    assert len(refused) == 1 and refused[0]["sip_status"] in (486, 503), refused
    # The four answered calls were real bridged calls (each its own Realtime session), the refused one never was.
    assert len(reports) == 4
    assert all(r["answered"] and r["caller_transcript"] for r in reports), reports


def _call_args(uri: str, play: Path, hangup_after: float) -> list[str]:
    return softphone_args(uri, play=play, hangup_after=hangup_after, timeout=20)
