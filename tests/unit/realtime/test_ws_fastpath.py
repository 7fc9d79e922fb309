"""The seam into ``websockets``' internals (``bridge/realtime/ws_fastpath.py``): with the pinned ``websockets`` every
internal it relies on is there and a live connection takes the fast paths; when one differs, the check names it and
a connection takes ``websockets``' own paths, saying so once."""

from __future__ import annotations

import asyncio
import logging

import pytest
from websockets.asyncio.connection import Connection
from websockets.asyncio.messages import Assembler

from bridge import events as ev
from bridge.emulator import EmulatorServer
from bridge.realtime import ws_fastpath
from bridge.realtime.client import RealtimeClient
from bridge.realtime.dialects import GA
from bridge.realtime.profile import AgentProfile


def test_the_installed_websockets_has_every_internal_the_fast_paths_use() -> None:
    assert ws_fastpath.missing_internals() == [], "websockets' internals changed: update bridge/realtime/ws_fastpath.py"
    assert ws_fastpath.MISSING == () and ws_fastpath.fast_path_active()


def test_a_changed_internal_is_named() -> None:
    class Reader(Connection):
        def data_received(self, data: bytes) -> None:  # parses, but never calls process_event
            self.protocol.receive_data(data)

    class NoPause(Assembler):
        def __init__(self) -> None:
            self.frames = []

    assert ws_fastpath.missing_internals(connection=Reader) == [
        "Connection.data_received no longer hands each event to Connection.process_event"
    ]
    assert ws_fastpath.missing_internals(assembler=NoPause) == [
        "Assembler (recv_messages) has no frames queue or paused flag"
    ]
    assert ws_fastpath.missing_internals(frame=dict) == ["Frame has no opcode, data and fin fields"]


async def _configured(emulator: EmulatorServer) -> tuple[RealtimeClient, list[int]]:
    """A client whose session is configured, and the sizes of the messages that went the direct way meanwhile."""
    client = RealtimeClient(GA, f"{emulator.base_url}?speed=0", "sk-test-client")
    await client.connect()
    ws = client._ws
    assert ws is not None and ws.direct is not None
    direct, seen = ws.direct, []

    def spy(data: bytes | bytearray | memoryview) -> None:
        seen.append(len(data))
        direct(data)

    ws.direct = spy
    client.send(ev.UpdateSession(AgentProfile()))
    async with asyncio.timeout(10):
        while not isinstance(await client.next_event(), ev.SessionConfigured):
            pass
    return client, seen


async def test_a_live_connection_takes_the_fast_paths(emulator: EmulatorServer) -> None:
    client, direct_reads = await _configured(emulator)
    try:
        assert direct_reads, "no server message was read on the spot"
        assert client.direct_sends == 1  # session.update, written on the caller's stack
        client.read_on_beat(True)
        assert client._ws is not None and client._ws.gated
    finally:
        await client.close()


async def test_without_the_internals_it_falls_back_and_warns_once(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ws_fastpath, "MISSING", ("Connection.process_event is gone",))
    monkeypatch.setattr(ws_fastpath, "_warned", False)
    caplog.set_level(logging.WARNING, "bridge.realtime")
    clients = []
    try:
        for _ in range(2):
            client, direct_reads = await _configured(emulator)
            clients.append(client)
            assert direct_reads == [] and client.direct_sends == 0  # the receive task and the send task
            client.read_on_beat(True)
            assert client._ws is not None and not client._ws.gated
            assert not client.offload_writes(_NeverBound())
    finally:
        for client in clients:
            await client.close()
    warnings = [r.getMessage() for r in caplog.records if r.name == "bridge.realtime"]
    assert len(warnings) == 1 and "Connection.process_event is gone" in warnings[0], warnings


class _NeverBound:
    def bind(self, fd: int) -> bool:
        raise AssertionError("an offload must not be bound without the internals")

    def write(self, data: bytes) -> int:
        return -2

    def end_data(self) -> None: ...

    def unbind(self) -> bytes:
        return b""
