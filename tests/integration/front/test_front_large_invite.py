"""INVITEs larger than a worker's SIP packet: pjsip reads every message into one buffer of ``PJSIP_MAX_PKT_LEN``
bytes (4,000 in the pjsua2 build), and carriers send larger ones over TCP (STIR/SHAKEN ``Identity`` headers,
P-headers, long SDP).

Through the real front (Kamailio), INVITEs of about 3, 5, 9 and 16 KB over TCP are answered 200 with an SDP answer,
audio flows both ways (the caller hears the agent, the model hears the caller's tone), and what a worker reads
survived the front's trimming: the front's ``X-Callbridge-Source`` (the worker allows the caller's address only) and
the ``P-Asserted-Identity`` at the end of the header block (the call's caller). Direct to a worker, an INVITE over
its limit gets ``513 Message Too Large`` at once, over TCP (and the connection goes on: an OPTIONS after it is
answered) and over UDP, and no call is recorded."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from _bigsip import ASSERTED, Call, RtpCaller, TcpCaller, cut_in_a_header, large_invite, sdp_media
from _front import CALLER, NODE_A, ROOT, Answer, front_node, parse_answer, requirements, wait_for
from test_front_edge import counters

from bridge.audio.analysis import peak_frequency
from bridge.audio.g711 import ulaw_decode_array
from bridge.sip.oversize import MAX_MESSAGE

pytestmark = [*requirements, pytest.mark.timeout(240)]
CALLER_HZ = 1020.0
SIZES = (2949, 5000, 9000, 16000)


def level_dbfs(payload: bytes) -> float:
    pcm = ulaw_decode_array(np.frombuffer(payload, dtype=np.uint8)).astype(np.float64) / 32768
    return float(20 * np.log10(max(1e-9, float(np.sqrt(np.mean(pcm**2))))))


async def one_call(front: int, size: int) -> tuple[int, int]:
    """One large INVITE over TCP through the front, answered, audio both ways for a while, then BYE; returns the
    INVITE's size and how many loud packets the caller heard."""
    tcp = await TcpCaller.connect(CALLER, NODE_A, front)
    rtp = RtpCaller(CALLER, CALLER_HZ)
    try:
        call = Call(f"sip:1000@{NODE_A}:{front};transport=tcp", CALLER, tcp.lport)
        invite = large_invite(call, rtp.port, size)
        await tcp.send(invite)
        answer = await tcp.final(call.call_id, "INVITE")
        assert answer.status == 200, (len(invite), answer.status, answer.reason)
        host, port = sdp_media(answer.body)
        assert host and port > 0 and "PCMU/8000" in answer.body, answer.body
        call.to_tag = answer.headers["to"].partition(";tag=")[2].split(";")[0]
        await tcp.send(call.request("ACK", 1))
        rtp.start((host, port))

        async def heard() -> int:
            loud = sum(level_dbfs(p) > -40 for p in rtp.received)
            return loud if loud >= 3 else 0  # the agent's greeting (the emulator's is short)

        loud = int(await wait_for(heard, f"the agent's audio at the caller ({len(invite)}-byte INVITE)", 20))
        rtp.speaking = True
        await asyncio.sleep(1.5)  # the caller's tone reaches the model
        await tcp.send(call.request("BYE", 2))
        assert (await tcp.final(call.call_id, "BYE")).status == 200
        return len(invite), loud
    finally:
        await rtp.close()
        await tcp.close()


async def test_large_invites_through_the_front_are_answered_with_audio_both_ways(tmp_path: Path) -> None:
    config = {"sip_allowed_sources": [f"{CALLER}/32"]}  # the caller's address only: the front's header must survive
    async with front_node(tmp_path, workers=1, config=config) as (node, port, _health):
        sizes = [await one_call(port, size) for size in SIZES]
        assert [s for s, _ in sizes] == list(SIZES), sizes
        too_large = await kept_too_large(port)
        assert (too_large.status, too_large.reason) == (513, "Message Too Large"), too_large
        assert counters(node)["refused_too_large"] == 1
        assert node.emulator is not None
        for index in range(len(SIZES)):
            record = await node.emulator.wait_for_session(index)
            heard = np.frombuffer(record.input_audio, dtype="<i2").astype(np.float64)
            assert len(heard) > record.input_rate // 2, index
            assert peak_frequency(heard, record.input_rate) == pytest.approx(CALLER_HZ, abs=15), index

        async def recorded() -> list[dict[str, object]]:
            calls = node.calls()
            return calls if len(calls) == len(SIZES) else []

        calls = await wait_for(recorded, "one record per call", 20)
    for record in calls:
        text = str(record)
        assert ASSERTED[-4:] in text, record  # the caller asserted at the very end of the header block (masked)
        assert record["answered"] and record["media"]["frames_in"] > 50, record
        assert record["ended_by"] == "caller", record


async def kept_too_large(front: int) -> Answer:
    """An INVITE whose bulk is what a worker reads (Diversion entries, RFC 5806): the front trims it of nothing
    that matters and answers 513 itself."""
    tcp = await TcpCaller.connect(CALLER, NODE_A, front)
    try:
        call = Call(f"sip:1000@{NODE_A}:{front};transport=tcp", CALLER, tcp.lport)
        diversions = [f"Diversion: <sip:+1555000{i:04d}@carrier.example>;reason=unconditional" for i in range(90)]
        await tcp.send(call.request("INVITE", 1, diversions, "v=0\r\n"))
        return await tcp.final(call.call_id, "INVITE", within_s=5)
    finally:
        await tcp.close()


async def tcp_refusal(host: str, port: int, size: int) -> tuple[float, int, str]:
    """A large INVITE over one TCP connection: how long its final answer took, its status, and the status of an
    OPTIONS sent after it on the same connection."""
    tcp = await TcpCaller.connect(CALLER, host, port)
    try:
        call = Call(f"sip:2000@{host}:{port};transport=tcp", CALLER, tcp.lport)
        started = time.monotonic()
        await tcp.send(large_invite(call, 40000, size))
        answer = await tcp.final(call.call_id, "INVITE", within_s=5)
        took = time.monotonic() - started
        probe = Call(call.uri, CALLER, tcp.lport)
        await tcp.send(probe.request("OPTIONS", 1))
        after = await tcp.final(probe.call_id, "OPTIONS", within_s=5)
        return took, answer.status, f"{after.status} {answer.reason}"
    finally:
        await tcp.close()


async def udp_refusal(host: str, port: int, size: int, cut: bool = False) -> tuple[float, int, str]:
    """A large INVITE in one datagram (``cut``: one whose first 4,000 bytes do not parse): how long its final
    answer took, its status and reason."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((CALLER, 0))
        sock.setblocking(False)
        call = Call(f"sip:2000@{host}:{port}", CALLER, sock.getsockname()[1], transport="UDP")
        started = time.monotonic()
        datagram = cut_in_a_header(call) if cut else large_invite(call, 40000, size)
        await loop.sock_sendto(sock, datagram, (host, port))
        while True:
            found = parse_answer(await asyncio.wait_for(loop.sock_recv(sock, 65535), 5))
            if found is not None and found.status >= 200:
                return time.monotonic() - started, found.status, found.reason


async def udp_answer(host: str, port: int, datagram: bytes) -> tuple[int, str]:
    """The final answer to one datagram (its Via names another port: the answer goes to the source)."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((CALLER, 0))
        sock.setblocking(False)
        await loop.sock_sendto(sock, datagram, (host, port))
        while True:
            found = parse_answer(await asyncio.wait_for(loop.sock_recv(sock, 65535), 5))
            if found is not None and found.status >= 200:
                return found.status, found.reason


async def test_a_worker_refuses_an_invite_over_its_limit_at_once(tmp_path: Path) -> None:
    async with front_node(tmp_path, workers=1) as (node, _port, health):
        (worker,) = node.worker_addresses(health)
        worker_port = int(worker.rpartition(":")[2])
        for size in (4494, 9129):
            took, status, detail = await tcp_refusal(NODE_A, worker_port, size)
            assert (status, detail.split()[0]) == (513, "200") and took < 2.0, (size, took, status, detail)
            took, status, reason = await udp_refusal(NODE_A, worker_port, size)
            assert status == 513 and took < 2.0, (size, took, status, reason)
        took, status, reason = await udp_refusal(NODE_A, worker_port, 0, cut=True)
        assert status == 513 and took < 2.0, (took, status, reason)
        # cut by someone else: a body shorter than its Content-Length, a header block without its end
        invite = large_invite(Call(f"sip:2000@{NODE_A}:{worker_port}", CALLER, 0, transport="UDP"), 40000, 3000)
        for cut in (invite.replace(b"Content-Length: ", b"Content-Length: 9"), invite.split(b"\r\n\r\n")[0]):
            status, reason = await udp_answer(NODE_A, worker_port, cut)
            assert (status, reason.split(" (")[0]) == (400, "Bad Request"), (status, reason)
    assert node.calls() == []


CFG = (ROOT / "bridge" / "serve" / "kamailio" / "kamailio.cfg").read_text()
GROWTH = [int(n) for n in re.findall(r"#!define FRONT_RELAY_GROWTH (\d+)", CFG)]  # with topoh, without


@pytest.mark.parametrize("topoh", [False, True])
async def test_the_room_kept_for_the_fronts_own_headers_is_enough(tmp_path: Path, topoh: bool) -> None:
    """An INVITE just small enough to be relayed untrimmed (a long From-tag, which the front's two Record-Route
    entries repeat), from TCP to a worker over UDP: what the front adds keeps it within the worker's limit."""
    growth = GROWTH[0] if topoh else GROWTH[1]
    config = {"sip_allowed_sources": [f"{CALLER}/32"], "front_topology_hiding": topoh}
    async with front_node(tmp_path, workers=1, config=config) as (_node, port, _health):
        tcp = await TcpCaller.connect(CALLER, NODE_A, port)
        try:
            call = Call(f"sip:1000@{NODE_A}:{port};transport=tcp", CALLER, tcp.lport, tag="t" * 64)
            invite = large_invite(call, 40000, MAX_MESSAGE - growth - 2 * len(call.tag))
            await tcp.send(invite)
            answer = await tcp.final(call.call_id, "INVITE")
            assert answer.status == 200, (len(invite), answer.status, answer.reason)
            call.to_tag = answer.headers["to"].partition(";tag=")[2].split(";")[0]
            await tcp.send(call.request("ACK", 1))
            await tcp.send(call.request("BYE", 2))
            assert (await tcp.final(call.call_id, "BYE")).status == 200
        finally:
            await tcp.close()


async def test_a_caller_on_the_fronts_own_address_is_trimmed_as_any_other(tmp_path: Path) -> None:
    """A sender sharing the front's address (an SBC on the front's host): its large INVITE is trimmed and answered,
    not relayed whole for the worker to refuse 513."""
    async with front_node(tmp_path, workers=1) as (_node, port, _health):
        tcp = await TcpCaller.connect(NODE_A, NODE_A, port)
        try:
            call = Call(f"sip:1000@{NODE_A}:{port};transport=tcp", NODE_A, tcp.lport)
            invite = large_invite(call, 40000, 9000)
            await tcp.send(invite)
            answer = await tcp.final(call.call_id, "INVITE")
            assert answer.status == 200, (len(invite), answer.status, answer.reason)
            call.to_tag = answer.headers["to"].partition(";tag=")[2].split(";")[0]
            await tcp.send(call.request("ACK", 1))
            await tcp.send(call.request("BYE", 2))
            assert (await tcp.final(call.call_id, "BYE")).status == 200
        finally:
            await tcp.close()
