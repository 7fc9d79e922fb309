"""Several sources together cannot take the slots a listed trunk needs (issue 62, item 18), at a real `callbridge
serve` (one worker: 4 calls), real SIP peers on loopback addresses of their own, the emulator as the model.

* Where trunks are listed (``sip_trunk_sources``), the sources outside the list together hold at most
  ``sip_unlisted_share`` of a worker's calls (half: 2 of 4). Two unlisted addresses hold a call each; a third
  unlisted address is refused, twice, with ``486 Busy Here (room kept for listed trunks)`` (counted in
  ``callbridge_sip_slot_refusals_total{reason="unlisted_share"}``, named in one WARNING with the setting); the listed
  trunk (SIPp) then gets both of its calls at once: the room was kept for it.
* With digest at the worker, a burst of guessed passwords takes no call slot: every guess is answered 403 before
  pjsua makes it a call (none gets pjsua's 486 of a full worker), and the trunk (SIPp, challenged and authenticated
  meanwhile) is answered.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import threading
import time
from pathlib import Path

import pytest
from _serve_start import ROOT, Started, clean_env, port_block
from _sipp import SIPP, metrics_text, run_sipp, sample, sipp_work

from bridge.devkit.ports import free_port, free_port_block
from bridge.emulator import EmulatorServer
from tests.integration.sip._helpers import Dialog, RawSip, SipResponse, in_dialog, open_dialog, sdp_offer

TRUNK, FIRST, SECOND, THIRD, GUESSER = "127.0.0.5", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.6"
USER, PASSWORD = "trunk", "trunk-password-123456"
PCMU = {0: "PCMU/8000"}
ROOM_KEPT = (486, "Busy Here (room kept for listed trunks)")

pytestmark = [pytest.mark.integration, pytest.mark.skipif(SIPP is None, reason="sipp is not installed (sip-tester)")]


async def started(tmp: Path, name: str, emulator: EmulatorServer, **settings: str) -> tuple[Started, int, int]:
    sip_port, http_port = port_block(1, (TRUNK, FIRST, SECOND, THIRD, GUESSER, "127.0.0.1")), free_port()
    args = [
        "--workers", "1", "--sip-port", str(sip_port), "--realtime-url", emulator.base_url,
        "--http-port", str(http_port), "--dialplans", str(ROOT / "dialplans"),
    ]  # fmt: skip
    env = clean_env(OPENAI_API_KEY="sk-test", XDG_STATE_HOME=str(tmp / "state"), **settings)
    serve = Started(tmp, name, args, env, ROOT)
    await serve.ready("127.0.0.1", http_port, workers=1)
    return serve, sip_port, http_port


async def trunk_calls(target: str, work: Path, calls: int) -> tuple[int, int, str]:
    """``calls`` calls of SIPp's built-in uac from the trunk's address, all at once, each held a second: (successful,
    failed, SIPp's output)."""
    assert SIPP is not None
    proc = await asyncio.create_subprocess_exec(
        SIPP, "-sn", "uac", "-m", str(calls), "-l", str(calls), "-r", "50", "-d", "1000", "-s", "1000",
        "-i", TRUNK, "-mi", TRUNK, "-p", str(free_port()), "-mp", str(free_port_block(4 * calls + 4)),
        "-timeout", "60", "-nostdin", "-trace_err", "-error_file", str(work / "trunk-errors.log"), target,
        cwd=work, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out = (await asyncio.wait_for(proc.communicate(), 90))[0].decode(errors="replace")

    def counter(name: str) -> int:
        found = re.search(rf"{name}\s*\|\s*\d+\s*\|\s*(\d+)", out)
        return int(found.group(1)) if found else -1

    return counter("Successful call"), counter("Failed call"), out


def unlisted_call(raw: RawSip) -> tuple[SipResponse, Dialog]:
    """A call from an unlisted address, left up if answered (ended with :func:`in_dialog` BYE)."""
    return open_dialog(raw, sdp_offer(free_port(), PCMU), "1000", 15.0)


async def test_unlisted_sources_hold_their_share_and_the_trunk_finds_room(tmp_path: Path) -> None:
    work = sipp_work(tmp_path)
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        serve, sip_port, http_port = await started(
            tmp_path, "trunk-room", emulator, CALLBRIDGE_SIP_TRUNK_SOURCES=f"{TRUNK}/32"
        )
        callers = {host: RawSip(sip_port, local_host=host) for host in (FIRST, SECOND, THIRD)}
        try:
            held = []
            for host in (FIRST, SECOND):  # one call each: no source is over sip_calls_per_source
                final, dialog = await asyncio.to_thread(unlisted_call, callers[host])
                assert final.status == 200, final.raw
                held.append((callers[host], dialog))
            third = [await asyncio.to_thread(unlisted_call, callers[THIRD]) for _ in range(2)]
            held += [(callers[THIRD], dialog) for final, dialog in third if final.status == 200]  # none, unless broken
            trunk = await trunk_calls(f"127.0.0.1:{sip_port}", work, calls=2)
            for raw, dialog in held:
                assert (await asyncio.to_thread(in_dialog, raw, dialog, "BYE")).status == 200
            text = await metrics_text(http_port)
        finally:
            for raw in callers.values():
                raw.close()
            assert serve.stop() == 0, serve.stderr()
    log = serve.stderr(300_000)
    assert [(r.status, r.reason) for r, _ in third] == [ROOM_KEPT] * 2, [r.raw for r, _ in third]
    assert trunk[:2] == (2, 0), trunk[2][-2000:]  # both of the listed trunk's calls answered: 4 calls up at once
    assert sample(text, "callbridge_sip_slot_refusals_total", reason="unlisted_share") == 2
    assert sample(text, "callbridge_sip_rejected_total", code="486") == 2
    warnings = [line for line in log.splitlines() if " WARNING " in line and "sip_unlisted_share" in line]
    assert len(warnings) == 1, warnings  # once per source per interval, however many calls it refuses
    assert f"{THIRD}: " in warnings[0] and "hold 2 of this worker's 4 calls" in warnings[0], warnings


class Guesser(threading.Thread):
    """INVITEs with a guessed password (Authorization with a wrong response), from its own address, in bursts of
    ``burst`` every 50 ms until stopped: the final status of each, by Call-ID."""

    def __init__(self, port: int, burst: int = 10) -> None:
        super().__init__(name="guesser", daemon=True)
        self.port, self.burst = port, burst
        self.finals: dict[str, int] = {}
        self.stop = threading.Event()
        self.going = threading.Event()  # its first bursts are out
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((GUESSER, 0))
        self.sock.settimeout(0.05)

    def _invite(self, call_id: str) -> bytes:
        local = self.sock.getsockname()[1]
        uri = f"sip:1000@127.0.0.1:{self.port}"
        sdp = sdp_offer(40000, PCMU)
        head = (
            f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {GUESSER}:{local};branch=z9hG4bK{secrets.token_hex(5)};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:guess@{GUESSER}>;tag={secrets.token_hex(3)}\r\nTo: <{uri}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:guess@{GUESSER}:{local}>\r\n"
            f'Authorization: Digest username="{USER}", realm="callbridge", nonce="{"ab" * 36}", uri="{uri}", '
            f'response="{secrets.token_hex(16)}", algorithm=MD5\r\n'
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n"
        )
        return (head + sdp).encode()

    def run(self) -> None:
        while not self.stop.is_set():
            for _ in range(self.burst):
                call_id = secrets.token_hex(6)
                self.finals[call_id] = 0
                self.sock.sendto(self._invite(call_id), ("127.0.0.1", self.port))
            self._read()
            if len(self.finals) >= 4 * self.burst:
                self.going.set()
        deadline = time.monotonic() + 20.0
        while not all(self.finals.values()) and time.monotonic() < deadline:  # the last answers
            self._read()

    def _read(self) -> None:
        """Note the final answers that come within 50 ms."""
        try:
            while True:
                data = self.sock.recv(65535).decode(errors="replace")
                status = int(data.split(" ", 2)[1])
                heads = dict(line.partition(": ")[::2] for line in data.split("\r\n"))
                if status >= 200 and heads.get("Call-ID") in self.finals:
                    self.finals[heads["Call-ID"]] = status
        except OSError:
            return


async def test_a_guessing_burst_takes_no_slot_from_the_trunk(tmp_path: Path) -> None:
    work = sipp_work(tmp_path)
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        serve, sip_port, http_port = await started(
            tmp_path, "guessing", emulator, CALLBRIDGE_SIP_AUTH_USERS=f'{{"{USER}": "{PASSWORD}"}}'
        )
        guesser = Guesser(sip_port)
        try:
            guesser.start()
            assert await asyncio.to_thread(guesser.going.wait, 10.0)  # the burst is on before the trunk calls
            failed = await run_sipp(
                "uac_digest_auth.xml", f"127.0.0.1:{sip_port}", work, "-au", USER, "-ap", PASSWORD, service="1000"
            )
            guesser.stop.set()
            await asyncio.to_thread(guesser.join, 30)
            text = await metrics_text(http_port)
        finally:
            guesser.stop.set()
            guesser.sock.close()
            assert serve.stop() == 0, serve.stderr()
    statuses = set(guesser.finals.values())
    assert not failed, failed  # the trunk's challenge, then its authenticated call answered, during the burst
    assert statuses == {403}, {s: list(guesser.finals.values()).count(s) for s in statuses}  # never pjsua's 486
    assert sample(text, "callbridge_sip_rejected_total", code="486") == 0
    assert sample(text, "callbridge_sip_rejected_total", code="403") == len(guesser.finals)
