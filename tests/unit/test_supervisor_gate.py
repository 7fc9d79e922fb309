"""The HTTP door (bridge/supervisor/gate.py). Its refusal when the client is gone before the answer: a reset between
the accept and the refusal makes the socket's shutdown fail, which must neither raise out of ``connection_made`` (the
loop would log a traceback per connection) nor leave the refusal counted as lingering. And which connection a new one
takes the place of at the cap."""

from __future__ import annotations

import asyncio
import errno
from typing import Any

from bridge.supervisor.gate import Door, Gate, Limits


class ResetTransport(asyncio.Transport):
    """A transport whose peer has reset: writes are taken, the half-close fails as the kernel's does."""

    def __init__(self, protocol: asyncio.Protocol, fail: str) -> None:
        super().__init__()
        self.protocol, self.fail = protocol, fail
        self.written: list[bytes] = []
        self.aborted = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("203.0.113.9", 5060) if name == "peername" else default

    def write(self, data: Any) -> None:
        if self.fail == "write":
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        self.written.append(bytes(data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")

    def abort(self) -> None:
        if not self.aborted:
            self.aborted = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)


async def _refused_after_reset(fail: str) -> tuple[Gate, ResetTransport]:
    gate = Gate(Limits(per_source=0))  # every connection from a counted source is refused
    door = Door(gate, asyncio.Protocol)
    transport = ResetTransport(door, fail)
    door.connection_made(transport)  # raises nothing
    assert transport.aborted
    await asyncio.sleep(0)  # the loop delivers connection_lost
    return gate, transport


async def test_a_refusal_to_a_client_already_gone_aborts_quietly_and_lingers_no_more() -> None:
    gate, transport = await _refused_after_reset("write_eof")
    assert transport.written and transport.written[0].startswith(b"HTTP/1.1 503")
    assert gate.lingering == 0 and not gate.open


async def test_a_refusal_whose_write_fails_aborts_quietly_too() -> None:
    gate, transport = await _refused_after_reset("write")
    assert not transport.written
    assert gate.lingering == 0 and not gate.open


class HeldTransport(asyncio.Transport):
    """A connection from one address that stays open until the gate closes it."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source
        self.aborted = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.source, 40000) if name == "peername" else default

    def abort(self) -> None:
        self.aborted = True


def _door(gate: Gate, source: str, *said: bytes) -> tuple[Door, HeldTransport]:
    door, transport = Door(gate, asyncio.Protocol), HeldTransport(source)
    door.connection_made(transport)
    for data in said:
        door.data_received(data)
    return door, transport


def test_at_the_cap_a_whole_head_not_yet_dispatched_is_not_the_one_evicted() -> None:
    """A health probe's head has come whole (its end split across two reads) but aiohttp has not dispatched it: the
    next connection at the cap takes the place of the younger half-sent one, not the probe's; empty lines alone are
    no head."""
    gate = Gate(Limits(total=3))
    probe, probe_socket = _door(gate, "198.51.100.1", b"GET /healthz HTTP/1.1\r\nHost: x\r", b"\n\r\n")
    blank, blank_socket = _door(gate, "198.51.100.2", b"\r\n\r\n", b"\r\n")
    half, half_socket = _door(gate, "198.51.100.3", b"GET / HTTP/1.1\r\nX-Slow: ")
    assert probe.asked and not blank.asked and not half.asked

    _door(gate, "198.51.100.4")
    assert blank_socket.aborted and not probe_socket.aborted and not half_socket.aborted
    _door(gate, "198.51.100.5")
    assert half_socket.aborted and not probe_socket.aborted

    probe.answered()  # its answer is out: an idle keep-alive again, the oldest, so the next to go
    _door(gate, "198.51.100.6")
    assert probe_socket.aborted


def test_at_the_cap_a_flood_from_a_few_addresses_gives_up_its_own_connections_first() -> None:
    """A probe's connection, the oldest, has not sent its head yet while two addresses turn their half-sent requests
    over: each new connection at the cap takes the place of the oldest one from an address holding others, never
    the probe's; once no address holds two, the oldest idle goes as before."""
    gate = Gate(Limits(total=4))
    _probe, probe_socket = _door(gate, "198.51.100.1")
    flood = [_door(gate, f"203.0.113.{1 + k % 2}", b"GET / HTTP/1.1\r\nX-Slow: ") for k in range(3)]
    for k in range(6):
        _door(gate, f"203.0.113.{1 + k % 2}", b"GET / HTTP/1.1\r\nX-Slow: ")
    assert not probe_socket.aborted and all(socket.aborted for _, socket in flood)
    assert len(gate.open) == 4 and gate.by_source["198.51.100.1"] == 1

    alone = Gate(Limits(total=2))
    _oldest, oldest_socket = _door(alone, "198.51.100.1")
    _door(alone, "198.51.100.2")
    _door(alone, "198.51.100.3")
    assert oldest_socket.aborted
