"""The front's TCP and TLS connections (bridge/serve/front_conns.py): one address holding many unfinished INVITEs
over TCP and TLS does not shut out anyone else (its connections over ``front_connections_per_source`` are closed, and
the rest once idle ``front_tcp_idle_s`` before a whole request), while the owner's calls over TCP and TLS are answered
and its connection that carried a call is kept; and large INVITEs (16 KB to 64 KB) over UDP, TCP and TLS are answered
or refused 513, never met with silence."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from _bigsip import Call, TcpCaller, large_invite
from _front import CALLER, NODE_A, Answer, front_node, parse_answer, port_block, requirements, wait_for
from test_front_tls import TLS_MODULE

from bridge.devkit.tlscert import self_signed

pytestmark = [
    *requirements,
    pytest.mark.skipif(TLS_MODULE is None, reason="no Kamailio tls.so (apt-get install kamailio-tls-modules)"),
    pytest.mark.timeout(240),
]
ATTACKER = "127.0.0.5"  # a loopback address of its own: another host to the front


def tls_config(tmp_path: Path, **more: Any) -> tuple[dict[str, Any], int, ssl.SSLContext]:
    cert, key = self_signed(tmp_path, NODE_A, also=["127.0.0.1"], key_type="ec")
    tls_port = port_block(2)
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    config = {"sip_tls_port": tls_port, "sip_tls_cert": str(cert), "sip_tls_key": str(key), **more}
    return config, tls_port, context


async def caller(port: int, context: ssl.SSLContext | None = None) -> TcpCaller:
    if context is None:
        return await TcpCaller.connect(CALLER, NODE_A, port)
    reader, writer = await asyncio.open_connection(NODE_A, port, local_addr=(CALLER, 0), ssl=context)
    return TcpCaller(reader, writer)


async def invite(conn: TcpCaller, port: int, size: int, transport: str) -> tuple[int, Answer]:
    """An INVITE of ``size`` bytes on ``conn``: its final answer; a 200 is acknowledged and the call hung up."""
    call = Call(f"sip:1000@{NODE_A}:{port};transport={transport.lower()}", CALLER, conn.lport, transport=transport)
    request = large_invite(call, 40000, size)
    await conn.send(request)
    answer = await conn.final(call.call_id, "INVITE", within_s=20)
    if answer.status == 200:
        call.to_tag = answer.headers["to"].partition(";tag=")[2].split(";")[0]
        await conn.send(call.request("ACK", 1))
        await conn.send(call.request("BYE", 2))
        assert (await conn.final(call.call_id, "BYE")).status == 200
    return len(request), answer


async def udp_invite(port: int, size: int) -> tuple[int, int]:
    """One INVITE datagram of ``size`` bytes: its size and final status (a 200 is acknowledged and hung up)."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((CALLER, 0))
        sock.setblocking(False)
        call = Call(f"sip:1000@{NODE_A}:{port}", CALLER, sock.getsockname()[1], transport="UDP")
        request = large_invite(call, 40000, size)
        await loop.sock_sendto(sock, request, (NODE_A, port))
        while True:
            found = parse_answer(await asyncio.wait_for(loop.sock_recv(sock, 65535), 20))
            if found is not None and found.status >= 200 and "INVITE" in found.headers.get("cseq", ""):
                break
        if found.status == 200:
            call.to_tag = found.headers["to"].partition(";tag=")[2].split(";")[0]
            await loop.sock_sendto(sock, call.request("ACK", 1), (NODE_A, port))
            await loop.sock_sendto(sock, call.request("BYE", 2), (NODE_A, port))
        return len(request), found.status


def half_sent() -> bytes:
    """The first 16 KB of an INVITE whose header block never ends."""
    call = Call(f"sip:1000@{NODE_A}", ATTACKER, 5060)
    return large_invite(call, 40000, 20000)[:16000]


def hold(port: int, count: int, context: ssl.SSLContext | None) -> list[socket.socket]:
    """``count`` connections from the attacker's address, each with a half-sent INVITE (those the front refused at
    once are left out)."""
    held: list[socket.socket] = []
    data = half_sent()
    for _ in range(count):
        try:
            sock = socket.create_connection((NODE_A, port), timeout=5, source_address=(ATTACKER, 0))
            if context is not None:
                sock = context.wrap_socket(sock)
            sock.sendall(data)
            held.append(sock)
        except OSError:  # the front closed it (its connection limits): an SSLError is an OSError
            continue
    return held


def still_open(sock: socket.socket) -> bool:
    """Whether the front has not closed ``sock`` (it never answers a half-sent request)."""
    sock.setblocking(False)
    try:
        sock.recv(1)  # its end, or a TLS alert before it
    except (BlockingIOError, ssl.SSLWantReadError):
        return True
    except OSError:
        pass
    return False


async def test_one_address_cannot_hold_the_fronts_connections(tmp_path: Path) -> None:
    limits = {
        "front_tcp_max_connections": 64,
        "front_tls_max_connections": 32,
        "front_connections_per_source": 8,
        "front_tcp_idle_s": 10,
    }
    config, tls_port, context = tls_config(tmp_path, **limits)
    async with front_node(tmp_path, workers=1, config=config) as (node, port, _health):
        held = await asyncio.to_thread(hold, tls_port, 40, context)  # more than the front takes over TLS ...
        held += await asyncio.to_thread(hold, port, 80, None)  # ... and over TCP
        try:

            async def trimmed() -> int:
                alive = sum(still_open(s) for s in held)
                return alive if 0 < alive <= 8 else 0

            await wait_for(trimmed, "the attacker's connections down to its 8", 10)
            started = time.monotonic()
            kept = await caller(port)  # the owner's TCP connection, kept after its call
            size, answer = await invite(kept, port, 3000, "TCP")
            assert answer.status == 200, ("TCP", size, answer.status, answer.reason)
            tls = await caller(tls_port, context)
            try:
                size, answer = await invite(tls, tls_port, 3000, "TLS")
                assert answer.status == 200, ("TLS", size, answer.status, answer.reason)
            finally:
                await tls.close()

            async def all_closed() -> bool:
                return not any(still_open(s) for s in held)

            await wait_for(all_closed, "the attacker's unfinished connections closed once idle", 30)
            assert time.monotonic() - started >= 5, "closed long before front_tcp_idle_s"
            # the owner's connection that carried a call outlives the idle limit: an OPTIONS on it is answered
            options = Call(f"sip:{NODE_A}:{port};transport=tcp", CALLER, kept.lport)
            await kept.send(options.request("OPTIONS", 1))
            assert (await kept.final(options.call_id, "OPTIONS", within_s=5)).status == 200
            await kept.close()
        finally:
            for sock in held:
                with contextlib.suppress(OSError):
                    sock.close()
        log = node.stderr_tail(20000)
        assert f"front: {ATTACKER} holds over 8 TCP/TLS connections" in log, log


async def test_large_invites_over_every_transport_are_answered(tmp_path: Path) -> None:
    config, tls_port, context = tls_config(tmp_path, sip_allowed_sources=[f"{CALLER}/32"])
    async with front_node(tmp_path, workers=1, config=config) as (_node, port, _health):
        for size in (16_000, 24_000, 32_000, 65_536):
            for conn_port, ctx, transport in ((port, None, "TCP"), (tls_port, context, "TLS")):
                conn = await caller(conn_port, ctx)
                try:
                    sent, answer = await invite(conn, conn_port, size, transport)
                finally:
                    await conn.close()
                assert answer.status in (200, 513), (transport, sent, answer.status)
                if size <= 32_000:
                    assert answer.status == 200, (transport, sent, answer.status, answer.reason)
        for size in (16_000, 24_000, 32_000, 65_000):  # a datagram holds 65,507 bytes
            sent, status = await udp_invite(port, size)
            assert status in (200, 513), ("UDP", sent, status)
