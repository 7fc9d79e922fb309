"""The front follows every call's dialog to its end (kamailio.cfg, route[WITHINDLG]): a caller that sends its ACK
and BYE to the address it called, without the Record-Route set (SIPp's stock uac), reaches the worker holding
its call as one that echoes Record-Route (the pjsua2 softphone) does; Kamailio's dialog module sees every ACK and
BYE, so no dialog outlives its call. An in-dialog request from another address than the call's caller is refused.

The callers speak from the workers' own address (NODE_A) too: one machine running the front, its workers and the
test tool is the ordinary first setup, and the caller's requests must not be taken for a worker's there."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from _front import (
    CALLER,
    NODE_A,
    ROOT,
    Answer,
    dialogs,
    front_node,
    heavy,
    long_test,
    no_dialog_left,
    parse_answer,
    requirements,
    sipp,
    sipp_dir,
    wait_for,
)

from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.serve.front_rpc import edge_counts, rpc_call
from bridge.store import keys

pytestmark = [*requirements, heavy, pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary")]
STRANGER = "127.0.0.4"
CALLER_WAV = ROOT / "bridge" / "assets" / "caller_hours.wav"


async def softphone(port: int, seconds: float) -> dict[str, Any]:
    """A pjsua2 caller (``callbridge call``, which follows the Record-Route set) that hangs up after ``seconds``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "call", f"sip:1000@{NODE_A}:{port}", "--play", str(CALLER_WAV), "--loop",
        "--hangup-after", str(seconds), "--json", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


@long_test
async def test_callers_without_a_route_set_complete_and_the_front_forgets_every_dialog(tmp_path: Path) -> None:
    work = sipp_dir(tmp_path)
    with EmbeddedRedis() as redis:
        config = {"redis_url": redis.url}
        async with front_node(tmp_path, workers=2, config=config) as (node, port, health):
            workers = node.worker_addresses(health)
            # SIPp's stock uac: ACK and BYE to the front's address, no Route; 3 s calls overlap over both workers
            runs = [
                await sipp(work, f"{NODE_A}:{port}", calls=6, rate=6, scenario="uac", local_host=host,
                           extra=["-d", "3000"])
                for host in (NODE_A, CALLER)
            ]  # fmt: skip
            for run in runs:
                assert (run.returncode, run.successful, run.failed) == (0, 6, 0), run.output[-3000:]
            phone = await softphone(port, 2.0)
            assert phone["answered"] and phone["hangup_by"] == "local", phone

            async def all_reported() -> list[dict[str, Any]] | None:
                calls = node.calls()
                return calls if len(calls) == 13 else None

            reports = await wait_for(all_reported, "13 calls reported by the workers", 30)
            reported = {r["sip_call_id"] for r in reports}
            assert len(reported) == 13 and set(runs[0].call_ids + runs[1].call_ids) < reported, reported
            # each call ended on the caller's BYE, on both workers
            assert {r["end_reason"] for r in reports} == {"caller hung up (Normal call clearing)"}, reports
            assert {r["worker"] for r in reports} == {0, 1}

            client = aioredis.from_url(redis.url, decode_responses=True)
            try:
                for worker in workers:
                    assert await client.smembers(keys.worker_calls(worker)) == set(), worker
                for report in reports:
                    state = await client.hgetall(keys.call(report["call_id"]))
                    assert state.get("end_reason") == report["end_reason"], state
            finally:
                await client.aclose()

            await no_dialog_left(node)
            assert {a: d.load for a, d in node.states().items()} == dict.fromkeys(workers, 0)


class RawCall:
    """One call over UDP from ``host``, by hand: INVITE and ACK (no Route, as SIPp), then in-dialog requests."""

    def __init__(self, host: str, front: tuple[str, int]) -> None:
        self.host, self.front = host, front
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.call_id, self.tag, self.to_tag = secrets.token_hex(8), secrets.token_hex(4), ""
        self.uri = f"sip:2000@{front[0]}:{front[1]}"
        self.cseq = 1

    def close(self) -> None:
        self.sock.close()

    def request(
        self, method: str, *, from_tag: str = "", to_tag: str = "", body: str = "", via: tuple[str, int] | None = None
    ) -> bytes:
        """One request of this call; ``via``: the (host, port) it is sent from, when not this call's socket."""
        host, port = via or (self.host, self.port)
        lines = [
            f"{method} {self.uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(6)};rport",
            "Max-Forwards: 70",
            f"From: <sip:raw@{self.host}>;tag={from_tag or self.tag}",
            f"To: <{self.uri}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} {method}",
            f"Contact: <sip:raw@{self.host}:{self.port}>",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    async def answer(self, method: str, sock: socket.socket | None = None, within_s: float = 15.0) -> Answer:
        """The final answer to this call's last ``method`` on ``sock`` (this call's socket by default)."""
        sock = sock or self.sock
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + within_s
        while (left := deadline - time.monotonic()) > 0:
            found = parse_answer(await asyncio.wait_for(loop.sock_recv(sock, 65535), left))
            if found is not None and found.status >= 200 and found.headers.get("cseq") == f"{self.cseq} {method}":
                return found
        raise TimeoutError(f"no answer to {method} {self.call_id}")

    async def start(self) -> Answer:
        sdp = (
            f"v=0\r\no=- 1 1 IN IP4 {self.host}\r\ns=-\r\nc=IN IP4 {self.host}\r\nt=0 0\r\n"
            f"m=audio {self.port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        self.sock.sendto(self.request("INVITE", body=sdp), self.front)
        answer = await self.answer("INVITE")
        self.to_tag = answer.headers.get("to", "").partition(";tag=")[2].split(";")[0]
        self.sock.sendto(self.request("ACK", to_tag=self.to_tag), self.front)
        return answer

    async def send_from(self, host: str, method: str, *, from_tag: str = "", to_tag: str = "") -> Answer:
        """``method`` of this dialog (its tags unless given) sent from another socket on ``host``."""
        self.cseq += 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind((host, 0))
            other.setblocking(False)
            via = (host, other.getsockname()[1])
            other.sendto(self.request(method, from_tag=from_tag, to_tag=to_tag or self.to_tag, via=via), self.front)
            return await self.answer(method, other)

    async def send(self, method: str) -> Answer:
        self.cseq += 1
        self.sock.sendto(self.request(method, to_tag=self.to_tag), self.front)
        return await self.answer(method)


async def test_an_in_dialog_request_from_another_address_gets_403_and_the_call_goes_on(tmp_path: Path) -> None:
    async with front_node(tmp_path, workers=1) as (node, port, _health):
        call = RawCall(NODE_A, (NODE_A, port))  # the caller on the workers' own host
        try:
            assert (await call.start()).status == 200

            async def confirmed() -> bool:  # the ACK reached the dialog module: answered and acknowledged
                return [d["state"] for d in dialogs(node)] == [4]

            await wait_for(confirmed, "the call's dialog confirmed at the front", 15)

            # the caller's BYE from another address, and one naming the worker's side, are refused there
            stranger = await call.send_from(STRANGER, "BYE")
            assert (stranger.status, stranger.reason) == (403, "Forbidden (not the caller's address)")
            as_worker = await call.send_from(STRANGER, "BYE", from_tag=call.to_tag, to_tag=call.tag)
            assert (as_worker.status, as_worker.reason) == (403, "Forbidden (not a worker's address)")
            # a BYE of no dialog the front knows: 404
            assert (await call.send_from(CALLER, "BYE", to_tag=secrets.token_hex(4))).status == 404

            assert node.calls() == [] and [d["state"] for d in dialogs(node)] == [4]
            # the call went on: its caller's own BYE (no Route) reaches the worker, which still holds the call
            assert (await call.send("BYE")).status == 200
        finally:
            call.close()

        async def reported() -> list[dict[str, Any]]:
            return node.calls()

        (report,) = await wait_for(reported, "the call's report", 15)
        assert report["sip_call_id"] == call.call_id and report["end_reason"].startswith("caller hung up"), report
        counts = edge_counts(rpc_call(node.front_dir / "rpc.sock", "cnt.grp_get_all", ["front"]))
        assert (counts["refused_dialog_source"], counts["refused_dialog"]) == (2, 1), counts
        await no_dialog_left(node)
