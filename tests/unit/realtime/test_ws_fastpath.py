"""The Realtime socket (``bridge/realtime/ws_fastpath.py``): ``websockets``' public sans-I/O client over the bridge's
own transport. With the installed ``websockets`` the API is complete and a live connection takes the fast paths;
fragments, keepalive, backpressure, a failing handler and an HTTP proxy behave as ``websockets.connect`` would; a
``websockets`` without the API runs on ``websockets``' own client, and says so."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable

import pytest
from _proxy import connect_proxy
from websockets.asyncio.server import ServerConnection, serve
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from bridge import events as ev
from bridge.emulator import EmulatorServer
from bridge.errors import ConnectError
from bridge.realtime import ws_fastpath, ws_plain
from bridge.realtime.client import ClientSettings, RealtimeClient
from bridge.realtime.dialects import GA
from bridge.realtime.profile import AgentProfile
from bridge.realtime.ws_fastpath import RealtimeSocket


def test_the_installed_websockets_has_the_sans_io_api_the_socket_uses() -> None:
    assert ws_fastpath.missing_api() == [], "websockets' sans-I/O API changed: update bridge/realtime/ws_fastpath.py"
    assert ws_fastpath.MISSING == () and ws_fastpath.fast_path_problems() == []
    assert ws_fastpath.fast_path_problems(secure=True) == [], "wss:// would run without the fast paths"


def test_a_missing_part_of_the_api_is_named() -> None:
    class NoText(ClientProtocol):
        send_text = None  # type: ignore[assignment]

    class Changed(ClientProtocol):
        def __init__(self, uri: object, **kw: object) -> None:
            raise TypeError("max_size")

    assert ws_fastpath.missing_api(NoText) == ["ClientProtocol.send_text()"]
    assert ws_fastpath.missing_api(Changed) == ["ClientProtocol(uri, max_size=...) raised TypeError('max_size')"]


async def _configured(emulator: EmulatorServer) -> RealtimeClient:
    client = RealtimeClient(GA, f"{emulator.base_url}?speed=0", "sk-test-client")
    await client.connect()
    client.send(ev.UpdateSession(AgentProfile()))
    async with asyncio.timeout(10):
        while not isinstance(await client.next_event(), ev.SessionConfigured):
            pass
    return client


async def test_a_live_connection_takes_the_fast_paths(emulator: EmulatorServer) -> None:
    client = await _configured(emulator)
    try:
        assert isinstance(client._ws, RealtimeSocket) and client._ws.fast
        assert client.direct_sends == 1  # session.update, written on the caller's stack
        client.read_on_beat(True)
        assert client._ws.gated
    finally:
        await client.close()
    assert client.closed is not None and client.closed.error_class is None


async def test_without_the_api_it_runs_on_websockets_own_client_and_says_so(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ws_fastpath, "MISSING", ("ClientProtocol.send_text()",))
    (problem,) = ws_fastpath.fast_path_problems()
    assert "lacks ClientProtocol.send_text()" in problem and "own asyncio client" in problem
    client = await _configured(emulator)  # the session opens all the same
    try:
        assert isinstance(client._ws, ws_plain.PlainSocket) and not client._ws.fast
        assert client.direct_sends == 0  # the send task wrote it
        client.read_on_beat(True)
        assert not client._ws.gated and not client.offload_writes(_NeverBound())
        client.send(ev.CreateResponse(instructions='say "hello"'))
        async with asyncio.timeout(10):
            while not isinstance(await client.next_event(), ev.ResponseDone):
                pass
    finally:
        await client.close()
    assert client.closed is not None and client.closed.error_class is None


class _NeverBound:
    def bind(self, fd: int, seal: tuple[int, int] | None = None) -> bool:
        raise AssertionError("an offload must not be bound without the fast path")

    def write(self, data: bytes) -> int:
        return -2

    def end_data(self) -> None: ...

    def unbind(self) -> bytes:
        return b""


# -- against websockets' own server, and a raw one built on its sans-I/O server


@contextlib.asynccontextmanager
async def _server(handler: Callable[[ServerConnection], object]) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:  # type: ignore[arg-type]
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1"


async def _open(
    url: str, on_message: ws_fastpath.OnMessage, ping_interval: float | None = None, ping_timeout: float | None = None
) -> RealtimeSocket:
    options = ws_fastpath.SocketOptions(5, 1 << 24, ping_interval, ping_timeout)
    return await ws_fastpath.connect(url, {}, on_message, options)


async def test_fragmented_messages_are_joined_in_order_and_the_close_frame_is_kept() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(['{"part":', '"one"}'])  # two frames: TEXT without FIN, then CONT
        await ws.send('{"whole":2}')
        await ws.close(4000, "bye")

    got: list[bytes] = []
    async with _server(handler) as url:
        sock = await _open(url, lambda data: got.append(bytes(data)))
        await asyncio.wait_for(asyncio.shield(sock.lost), 5)
    assert got == [b'{"part":"one"}', b'{"whole":2}']
    assert sock.close_rcvd is not None and (sock.close_rcvd.code, sock.close_rcvd.reason) == (4000, "bye")


async def test_a_handler_that_raises_fails_the_connection_with_1011() -> None:
    seen: list[int] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send("boom")
        with contextlib.suppress(Exception):
            await ws.recv()
        seen.append(ws.close_code or 0)

    def on_message(data: bytes | bytearray | memoryview) -> None:
        raise ValueError("a bug in the handler")

    async with _server(handler) as url:
        sock = await _open(url, on_message)
        await asyncio.wait_for(asyncio.shield(sock.lost), 5)
    assert isinstance(sock.failure, ValueError) and seen == [1011]


class _RawServer(asyncio.Protocol):
    """A WebSocket server on websockets' sans-I/O ``ServerProtocol`` that can stop answering (``silent``) or stop
    reading (``transport.pause_reading``); it records the frames it parsed."""

    def __init__(self) -> None:
        self.protocol = ServerProtocol(max_size=None)
        self.frames: list[Frame] = []
        self.silent = False
        self.changed = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Request):
                self.protocol.send_response(self.protocol.accept(event))
            elif isinstance(event, Frame):
                self.frames.append(event)
        self.changed.set()
        assert self.transport is not None
        for out in self.protocol.data_to_send():
            if self.silent:
                continue
            if out:
                self.transport.write(out)
            else:  # the end of the stream: a server closes the TCP connection
                self.transport.close()


@contextlib.asynccontextmanager
async def _raw_server() -> AsyncIterator[tuple[str, list[_RawServer]]]:
    peers: list[_RawServer] = []

    def factory() -> _RawServer:
        peers.append(_RawServer())
        return peers[-1]

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", peers
    finally:
        for peer in peers:
            if peer.transport is not None:
                peer.transport.abort()
        server.close()


async def _until(peer: _RawServer, test: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not test():
            peer.changed.clear()
            await peer.changed.wait()


async def test_keepalive_pings_and_a_missing_pong_is_a_retryable_network_close() -> None:
    async with _raw_server() as (url, peers):
        settings = ClientSettings(ping_interval_s=0.2, ping_timeout_s=0.3)
        client = RealtimeClient(GA, url, "sk-x", settings=settings)
        await client.connect()
        (peer,) = peers
        await _until(peer, lambda: any(f.opcode is Opcode.PING for f in peer.frames))  # answered: pong
        assert isinstance(client._ws, RealtimeSocket)
        ws = client._ws
        async with asyncio.timeout(5):
            while ws.latency == 0.0:  # noqa: ASYNC110  # the socket signals no pong (the keepalive is its own)
                await asyncio.sleep(0.05)
        peer.silent = True  # the next ping goes unanswered, and the close frame too: aborted after 10 s
        async with asyncio.timeout(30):
            closed = await client.next_event()
        assert isinstance(closed, ev.Closed)
        assert (closed.error_class, closed.retryable, closed.code) == (ev.ErrorClass.NETWORK, True, None)
        closes = [f for f in peer.frames if f.opcode is Opcode.CLOSE]
        assert closes and closes[-1].data[:2] == (1011).to_bytes(2, "big") and b"keepalive" in closes[-1].data
        await client.close()


async def test_a_peer_that_stops_reading_holds_sends_back_until_it_reads_again() -> None:
    async with _raw_server() as (url, peers):
        sock = await _open(url, lambda data: None)
        (peer,) = peers
        assert peer.transport is not None
        peer.transport.pause_reading()
        chunk = b'{"type":"x","pad":"' + b"a" * (1 << 18) + b'"}'
        sent = 0
        while sock.write_now(chunk):  # written at once until the kernel's buffers are full and asyncio holds
            sent += 1
        assert sock.transport.get_write_buffer_size() > ws_fastpath.WRITE_LIMIT
        held = asyncio.create_task(sock.send(chunk))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not held.done()  # waits for the drain
        peer.transport.resume_reading()
        await asyncio.wait_for(held, 20)
        await _until(peer, lambda: sum(f.opcode is Opcode.TEXT for f in peer.frames) == sent + 1)
        assert all(f.data == chunk for f in peer.frames)
        await asyncio.wait_for(sock.close(), 10)


async def test_through_an_http_proxy_with_credentials(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("no_proxy", "NO_PROXY", "https_proxy", "HTTPS_PROXY", "ws_proxy", "socks_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with connect_proxy("user", "s3cret") as (port, connects):
        monkeypatch.setenv("http_proxy", f"http://user:wrong@127.0.0.1:{port}")
        refused = RealtimeClient(GA, emulator.base_url, "sk-test-client")
        with pytest.raises(ConnectError) as info:
            await refused.connect()
        assert "407" in str(info.value) and "wrong" not in str(info.value)
        monkeypatch.setenv("http_proxy", f"http://user:s3cret@127.0.0.1:{port}")
        client = await _configured(emulator)
        await client.close()
    target = emulator.base_url.split("//")[1].split("/")[0].encode()
    assert len(connects) == 2 and connects[-1].startswith(b"CONNECT " + target + b" HTTP/1.1\r\n")
    assert client.closed is not None and client.closed.error_class is None


def test_a_socks_proxy_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ws_proxy", "socks5://me:pw@proxy.example:1080")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    from websockets.exceptions import InvalidProxy
    from websockets.uri import parse_uri

    with pytest.raises(InvalidProxy) as info:
        ws_fastpath.proxy_for(parse_uri("ws://example.com/v1"))
    assert "socks5://proxy.example:1080" in str(info.value) and "pw" not in str(info.value)


def test_no_proxy_in_the_environment_is_a_direct_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    from websockets.uri import parse_uri

    for name in [n for n in os.environ if n.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)
    assert ws_fastpath.proxy_for(parse_uri("wss://api.openai.com/v1/realtime")) is None
    logging.getLogger(__name__).debug("no proxy")
