"""The HTTP door's refusal (bridge/supervisor/gate.py) when the client is gone before the answer: a reset between the
accept and the refusal makes the socket's shutdown fail, which must neither raise out of ``connection_made`` (the loop
would log a traceback per connection) nor leave the refusal counted as lingering."""

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
