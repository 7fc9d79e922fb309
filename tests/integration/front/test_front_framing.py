"""Only the front vouches for a caller, however the caller frames its INVITE.

A caller's INVITE goes through the real front (Kamailio) to a real worker as raw UDP SIP, with the front's own headers
(``X-Callbridge-Source``, ``X-Callbridge-Auth``) forged in every framing a SIP parser accepts: CRLF lines, bare LF
lines, a mix, any case of the name, and behind a blank line made of a bare LF (header-like lines Kamailio and pjsip
read as body). A refused address stays refused, an unauthenticated caller stays challenged, and the address the
worker allows is still answered.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from _front import CALLER, NODE_A, Answer, Node, parse_answer, port_block, requirements

from bridge.devkit.ports import can_bind
from bridge.emulator import EmulatorServer

pytestmark = [*requirements, pytest.mark.skipif(not can_bind("127.0.0.4"), reason="127.0.0.4 is not usable here")]
STRANGER = "127.0.0.4"  # an address no worker allows
USER, PASSWORD = "trunk1", "s3cret"


def framed(lines: Sequence[str], smuggled: Sequence[str], body: str, framing: str) -> bytes:
    """An INVITE whose header block is ``lines`` (request line first) and whose forged ``smuggled`` lines are put
    where ``framing`` says: ``crlf``, ``lf`` or ``mixed`` line ends with the forged lines among the headers, or
    ``lf-blank``: CRLF headers ended by a blank line of a bare LF, the forged lines after it (body to every SIP
    parser), then a CRLF blank line; no SDP (an offerless INVITE, so that pjsip does not refuse the body as SDP)."""
    if framing == "lf-blank":
        rest = "".join(f"{line}\r\n" for line in smuggled) + "\r\n"
        head = [*lines, f"Content-Length: {len(rest.encode())}"]
        return ("".join(f"{line}\r\n" for line in head) + "\n" + rest).encode()
    head = [*lines[:3], *smuggled, *lines[3:], "Content-Type: application/sdp", f"Content-Length: {len(body)}"]
    if framing == "crlf":
        return ("\r\n".join(head) + "\r\n\r\n" + body).encode()
    if framing == "lf":
        return ("\n".join(head) + "\n\n" + body).encode()
    return ("".join(line + ("\n" if i % 2 else "\r\n") for i, line in enumerate(head)) + "\r\n" + body).encode()


async def raw_invite(
    host: str, port: int, local_host: str, smuggled: Sequence[str] = (), framing: str = "crlf"
) -> Answer:
    """One raw INVITE over UDP; its final answer (a failure ACKed, a success ACKed and ended with a BYE)."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((local_host, 0))
        sock.setblocking(False)
        lport = sock.getsockname()[1]
        call_id, tag = secrets.token_hex(8), secrets.token_hex(4)
        uri = f"sip:2000@{host}:{port}"

        def lines(method: str, cseq: int, branch: str, to_tag: str = "") -> list[str]:
            return [
                f"{method} {uri} SIP/2.0",
                f"Via: SIP/2.0/UDP {local_host}:{lport};branch={branch};rport",
                "Max-Forwards: 70",
                f"From: <sip:raw@{local_host}>;tag={tag}",
                f"To: <{uri}>" + (f";tag={to_tag}" if to_tag else ""),
                f"Call-ID: {call_id}",
                f"CSeq: {cseq} {method}",
                f"Contact: <sip:raw@{local_host}:{lport}>",
            ]

        sdp = (
            f"v=0\r\no=- 1 1 IN IP4 {local_host}\r\ns=-\r\nc=IN IP4 {local_host}\r\nt=0 0\r\n"
            f"m=audio {lport + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        branch = "z9hG4bK" + secrets.token_hex(6)
        sock.sendto(framed(lines("INVITE", 1, branch), smuggled, sdp, framing), (host, port))
        deadline = time.monotonic() + 15.0
        while True:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65535), max(0.1, deadline - time.monotonic()))
            answer = parse_answer(data)
            if answer is not None and answer.status >= 200 and "INVITE" in answer.headers.get("cseq", ""):
                break
        to_tag = answer.headers.get("to", "").partition(";tag=")[2].split(";")[0]
        if answer.status >= 300:
            ack = lines("ACK", 1, branch, to_tag)
        else:
            ack = lines("ACK", 1, "z9hG4bK" + secrets.token_hex(6), to_tag)
        sock.sendto(("\r\n".join([*ack, "Content-Length: 0"]) + "\r\n\r\n").encode(), (host, port))
        if answer.status < 300:
            bye = lines("BYE", 2, "z9hG4bK" + secrets.token_hex(6), to_tag)
            sock.sendto(("\r\n".join([*bye, "Content-Length: 0"]) + "\r\n\r\n").encode(), (host, port))
        return answer


FRAMINGS = ("crlf", "lf", "mixed", "lf-blank")


async def test_a_forged_source_header_in_any_framing_leaves_a_refused_address_refused(tmp_path: Path) -> None:
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        port = port_block(2)
        node = Node(
            tmp_path, "a", host=NODE_A, sip_port=port, workers=1, realtime_url=emulator.base_url, front=True,
            config={"sip_allowed_sources": [f"{CALLER}/32"], "front_refusal_limit": 1000},  # refused, never banned
        )  # fmt: skip
        try:
            await node.up()
            assert (await raw_invite(NODE_A, port, CALLER)).status == 200  # the allowed caller is answered
            assert (await raw_invite(NODE_A, port, STRANGER)).status == 403
            for name in ("X-Callbridge-Source", "x-callbridge-source", "X-CALLBRIDGE-SOURCE"):
                for framing in FRAMINGS:
                    forged = [f"{name}: {CALLER}:5060"]
                    answer = await raw_invite(NODE_A, port, STRANGER, forged, framing)
                    assert answer.status == 403, (name, framing, answer)
            # two forged copies, one behind the bare-LF blank line
            answer = await raw_invite(NODE_A, port, STRANGER, [f"X-Callbridge-Source: {CALLER}:5060"] * 2, "lf-blank")
            assert answer.status == 403, answer
            assert (await raw_invite(NODE_A, port, CALLER, framing="lf-blank")).status == 200  # still answered
        finally:
            rc = node.stop()
        assert rc == 0, node.stderr_tail()
        assert node.calls() and all(c.get("remote_addr", CALLER).startswith(CALLER) for c in node.calls())


async def test_a_forged_auth_header_in_any_framing_is_challenged(tmp_path: Path) -> None:
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        port = port_block(2)
        node = Node(
            tmp_path, "a", host=NODE_A, sip_port=port, workers=1, realtime_url=emulator.base_url, front=True,
            config={"sip_auth_users": {USER: PASSWORD}, "front_refusal_limit": 1000},
        )  # fmt: skip
        try:
            await node.up()
            assert (await raw_invite(NODE_A, port, STRANGER)).status == 401
            for framing in FRAMINGS:
                answer = await raw_invite(NODE_A, port, STRANGER, [f"X-Callbridge-Auth: {USER}"], framing)
                assert answer.status == 401, (framing, answer)
        finally:
            rc = node.stop()
        assert rc == 0, node.stderr_tail()
        assert node.calls() == []  # no forged header opened a call


async def test_behind_its_front_a_worker_answers_the_front_only(tmp_path: Path) -> None:
    """Nothing configured (closed by default): a local caller reaching a worker's own SIP port is refused, and the
    same caller through the front is answered."""
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        port = port_block(2)
        node = Node(tmp_path, "a", host=NODE_A, sip_port=port, workers=1, realtime_url=emulator.base_url, front=True)
        try:
            (worker,) = node.worker_addresses(await node.up())
            worker_port = int(worker.rpartition(":")[2])
            assert (await raw_invite(NODE_A, worker_port, CALLER)).status == 403
            assert (await raw_invite(NODE_A, port, CALLER)).status == 200
        finally:
            rc = node.stop()
        assert rc == 0, node.stderr_tail()
        assert len(node.calls()) == 1
