"""A log only the product writes: an attacker's oversized TCP INVITE whose body is made of fake log lines, and a
header without a colon followed by fake lines, sent to a worker (serve without a front) and to the front. Neither
serve's log nor Kamailio's gets a line of the attacker's: what they quote of a packet is escaped (``\\n``), cut to
a bounded length with a marker, and the caller's number in it masked.

The attacker is a raw socket on its own loopback address."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from _front import NODE_A, Node, front_node, invite, port_block, requirements, wait_for

from bridge.emulator import EmulatorServer
from bridge.runtime.logs import MAX_MESSAGE_CHARS
from bridge.serve.front_process import LOG_LINE_CHARS

pytestmark = requirements
ATTACKER = "127.0.0.9"
FORGED = "2026-11-26 00:00:00,000 INFO bridge.supervisor: console: adam signed in (admin)"
NUMBER = "+15551234567"
MASKED = "+*******4567"
PREFIX_CHARS = 120  # a line's own head: the time, level and logger of serve's, or Kamailio's process and place


def attack(
    host: str, port: int, *, header: str = "", early: str = "", body: str = "", call_id: str = "forged-1"
) -> bytes:
    """An INVITE from the caller NUMBER: ``header`` as one more header line at the end (``early``: before From, so
    that what quotes it from there on quotes the number too), ``body`` as its body."""
    lines = [
        f"INVITE sip:2000@{host}:{port} SIP/2.0",
        f"Via: SIP/2.0/TCP {ATTACKER}:5999;branch=z9hG4bK{call_id}",
        *([early] if early else []),
        "Max-Forwards: 70",
        f'From: "{NUMBER}" <sip:{NUMBER}@{ATTACKER}>;tag=1',
        f"To: <sip:2000@{host}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:{NUMBER}@{ATTACKER}:5999>",
        "Content-Type: application/sdp",
        *([header] if header else []),
        f"Content-Length: {len(body.encode())}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


async def send_attacks(host: str, port: int) -> None:
    """The 400 kB TCP INVITE of fake lines; over TCP and UDP, a header without a colon followed by fake lines; a
    Call-ID folded onto a fake line."""
    big = attack(host, port, body="\n".join([FORGED] * 5000), call_id="forged-big")
    assert len(big) > 400_000
    colonless = "NoColonHere\r\n" + "\n".join([FORGED] * 3)
    loop = asyncio.get_running_loop()
    for message in (big, attack(host, port, header=colonless, call_id="forged-tcp")):
        with socket.socket() as tcp:
            tcp.bind((ATTACKER, 0))
            tcp.setblocking(False)
            await loop.sock_connect(tcp, (host, port))
            await loop.sock_sendall(tcp, message)
            await asyncio.sleep(1.0)  # the peer reads what it will of it before the connection closes
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((ATTACKER, 0))
        udp.sendto(attack(host, port, header=colonless, call_id="forged-udp"), (host, port))
        udp.sendto(attack(host, port, call_id="forged-fold\r\n " + FORGED), (host, port))
        udp.sendto(attack(host, port, early=colonless, call_id="forged-early"), (host, port))


def check_log(text: str, limit: int, where: str) -> list[str]:
    """No line of ``text`` is the attacker's, none is longer than ``limit`` plus its head, and the caller's number
    is masked; returns the lines that quote the attack."""
    lines = text.splitlines()
    forged = [line for line in lines if line.lstrip().startswith(FORGED[:20])]
    assert forged == [], f"{where}: {len(forged)} lines of the attacker's"
    long = [len(line) for line in lines if len(line) > limit + PREFIX_CHARS]
    assert long == [], f"{where}: lines of {long} chars"
    assert NUMBER not in text, f"{where}: the caller's number unmasked"
    return [line for line in lines if "adam signed in" in line]


async def test_serve_logs_no_line_of_a_packets_and_masks_the_number_in_what_it_quotes(tmp_path: Path) -> None:
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        port = port_block(1)
        node = Node(tmp_path, "w", host=NODE_A, sip_port=port, workers=1, realtime_url=emulator.base_url)
        try:
            await node.up()
            await send_attacks(NODE_A, port)
            # the worker refused the 400 kB INVITE at once (513, naming its masked caller), so the log was written
            await wait_for(_quoted(node), "the worker's log refusing the attack", 15)
            assert (await invite(NODE_A, port)).status == 200  # and it goes on answering calls
        finally:
            node.stop()
    quoted = check_log(node.stderr_tail(10_000_000), MAX_MESSAGE_CHARS, "serve's log")
    # what quotes the attack (pjsip's parse errors, where a packet reaches the parser) quotes it escaped and cut
    assert all("\\n" + FORGED[:20] in line and "more chars]" in line for line in quoted), quoted[:3]
    assert MASKED in node.stderr_tail(10_000_000)


def _quoted(node: Node) -> object:
    async def check() -> bool:
        return "refused INVITE forged-big from " + MASKED in node.stderr_tail(10_000_000)

    return check


async def test_the_fronts_log_and_serves_get_no_line_of_a_packets(tmp_path: Path) -> None:
    async with front_node(tmp_path, workers=1) as (node, port, _):
        await send_attacks(NODE_A, port)
        kamailio_log = node.front_dir / "kamailio.log"

        async def quoted() -> bool:
            return "invalid header name" in kamailio_log.read_text(errors="replace")

        await wait_for(quoted, "Kamailio's log quoting the header without a colon", 15)
        assert (await invite(NODE_A, port)).status == 200  # the front goes on relaying calls
    text = kamailio_log.read_text(errors="replace")
    lines = check_log(text, LOG_LINE_CHARS, "Kamailio's log")
    assert any("invalid header name for [NoColonHere\\r\\n" + FORGED[:20] in line for line in lines), lines[:3]
    assert "buffer overrun, dropping" in text  # the 400 kB INVITE: read no further than Kamailio's buffer
    assert MASKED in text  # Kamailio quoted the From header after the colonless one: its number masked
    check_log(node.stderr_tail(10_000_000), MAX_MESSAGE_CHARS, "serve's log")
