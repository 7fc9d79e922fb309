"""An HTTP proxy for the tests: ``CONNECT host:port`` (RFC 9110 §9.3.6) with Basic credentials, then a byte pipe
both ways. It knows nothing of what it carries (plain WebSocket bytes or TLS records)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def connect_proxy(user: str, password: str) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A proxy on a free port of 127.0.0.1 that asks for ``user``/``password`` (407 otherwise): its port, and the
    heads of the CONNECT requests it got, in order."""
    connects: list[bytes] = []
    expected = b"Proxy-Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode())

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        connects.append(head)
        if expected not in head:
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
            writer.close()
            return
        host, port = head.split(b" ")[1].decode().rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], connects
    finally:
        server.close()
