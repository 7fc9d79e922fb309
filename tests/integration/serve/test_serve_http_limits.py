"""serve's HTTP port stays up under idle connections (bridge/supervisor/gate.py), on a real ``serve`` whose open-file
limit is 1024 (set for its process, so it cannot raise it): a head that never ends is cut at its deadline, a body
that never ends gets 408, one address past its connection cap gets the 503 that says so; then 3,000 half-sent
requests from 30 addresses, held and re-opened whenever the server closes them, while ``/healthz``, the console page
and ``callbridge reload`` answer, serve's open files stay under its limit, and its log stays a few lines long."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from _http_node import Node, serve_node

from bridge.devkit.ports import free_port

ROOT = Path(__file__).resolve().parents[3]
FD_LIMIT = 1024
HEAD_S, BODY_S, PER_SOURCE = 2.0, 2.0, 64
ATTACKERS, PER_ATTACKER = 30, 100  # 3,000 half-sent requests
HALF_SENT = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "
TOKEN = "http-limits-operator-token"


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    settings = {"http_head_timeout_s": HEAD_S, "http_body_timeout_s": BODY_S,
                "http_max_connections_per_source": PER_SOURCE}  # fmt: skip
    settings["http_metrics_port"] = free_port()  # /metrics on its own port, behind the same limits
    async with serve_node(tmp_path, settings, {"CALLBRIDGE_SUPERVISOR_TOKEN": TOKEN}, fd_limit=FD_LIMIT) as node:
        node.metrics_url = f"http://127.0.0.1:{settings['http_metrics_port']}/metrics"
        yield node


async def _half_sent(node: Node, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.http_port, local_addr=(source, 0))
    writer.write(HALF_SENT)
    await writer.drain()
    return reader, writer


@contextlib.contextmanager
def _closing(writers: list[asyncio.StreamWriter]) -> Iterator[None]:
    try:
        yield
    finally:
        for writer in writers:
            writer.close()


async def test_deadlines_and_the_per_source_cap(node: Node) -> None:
    # a head that never ends: closed at its deadline, with nothing said
    reader, writer = await _half_sent(node, "127.0.0.1")
    started = time.monotonic()
    with _closing([writer]):
        assert await asyncio.wait_for(reader.read(), 30) == b""
    assert HEAD_S - 0.5 <= time.monotonic() - started < HEAD_S + 8

    # a body that never ends: 408
    reader, writer = await asyncio.open_connection("127.0.0.1", node.http_port)
    with _closing([writer]):
        writer.write(b"POST /auth/signin HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"name\": ")  # fmt: skip
        answer = await asyncio.wait_for(reader.read(), 30)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"request body not received within 2 s" in answer

    # one address at its cap: the next connection from it gets the 503 that says so; another address gets in
    held = [await _half_sent(node, "127.0.0.40") for _ in range(PER_SOURCE)]
    with _closing([w for _, w in held]):
        reader, writer = await _half_sent(node, "127.0.0.40")
        with _closing([writer]):
            answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"too many connections from this address" in answer, answer
        async with aiohttp.ClientSession() as http, http.get(f"{node.url}/livez") as r:
            assert r.status == 200


async def _attacker(node: Node, source: str, stop: asyncio.Event, opened: list[int], all_open: asyncio.Event) -> None:
    """Holds one half-sent request from ``source``, opening another whenever the server closes it; ``all_open`` is
    set once every attacker has opened one."""
    while not stop.is_set():
        try:
            reader, writer = await _half_sent(node, source)
        except OSError:
            await asyncio.sleep(0.5)  # the server's backlog is full: try again, as an attacker would
            continue
        opened[0] += 1
        if opened[0] >= ATTACKERS * PER_ATTACKER:
            all_open.set()
        try:
            read = asyncio.ensure_future(reader.read())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
            read.cancel()
            stopped.cancel()
        except OSError:
            pass
        finally:
            writer.close()
        await asyncio.sleep(1.0)  # paced: thousands of reconnections a second at most


async def test_health_console_and_reload_answer_through_thousands_of_half_sent_requests(node: Node) -> None:
    lines_before = len(node.log.read_text().splitlines())
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < ATTACKERS * PER_ATTACKER + 500:
        pytest.skip(f"this test's client needs {ATTACKERS * PER_ATTACKER + 500} open files (soft limit {soft})")
    stop, opened, all_open = asyncio.Event(), [0], asyncio.Event()
    attackers = [
        asyncio.create_task(_attacker(node, f"127.0.0.{2 + a}", stop, opened, all_open))
        for a in range(ATTACKERS)
        for _ in range(PER_ATTACKER)
    ]
    most_files = 0
    try:
        await asyncio.wait_for(all_open.wait(), 120)  # every one of them has been opened at least once
        # a connection per request, as a health probe opens: a kept-alive idle one may be the oldest idle connection
        # at the cap, which the gate closes first (a browser asks again on a new one; aiohttp does not)
        once = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), connector=once) as http:
            for _ in range(5):
                most_files = max(most_files, node.open_files())
                async with http.get(f"{node.url}/healthz") as r:
                    assert r.status == 200, await r.text()
                async with http.get(f"{node.url}/") as r:
                    assert r.status == 200 and "<html" in (await r.text()).lower()
                most_files = max(most_files, node.open_files())
            status, said = await node.cli("reload")
            assert status == 0, said
            async with http.get(node.metrics_url) as r:
                exposition = await r.text()
        reopened = opened[0]
    finally:
        stop.set()
        await asyncio.gather(*attackers, return_exceptions=True)
    assert reopened > ATTACKERS * PER_ATTACKER  # the server closed some, and they came back
    assert most_files < FD_LIMIT, most_files
    evicted = [line for line in exposition.splitlines()
               if line.startswith('callbridge_http_connections_refused_total{reason="evicted"}')]  # fmt: skip
    assert evicted and float(evicted[0].split()[-1]) > 0, evicted
    assert node.proc.poll() is None
    log = node.log.read_text()
    assert "Too many open files" not in log
    new_lines = log.splitlines()[lines_before:]
    assert 0 < sum("HTTP connections refused" in line for line in new_lines) <= 10, new_lines[-20:]
    assert len(new_lines) < 60, new_lines[-40:]


OUT_OF_FILES = """
import asyncio, logging, resource, sys
from bridge.supervisor.gate import quiet_accept_errors
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
async def main():
    loop = asyncio.get_running_loop()
    if sys.argv[2] == "quiet":
        quiet_accept_errors(loop)
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)  # holds every connection it accepts
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(float(sys.argv[1]))
asyncio.run(main())
"""


@pytest.mark.parametrize("quiet", [True, False])
async def test_accept_errors_are_one_line_per_interval(quiet: bool) -> None:
    """A real listener out of open files: the loop's accept error comes once a second (it pauses accepting after
    each); quieted, the log has one summary line for the interval instead of a traceback each time."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", OUT_OF_FILES, "4", "quiet" if quiet else "loud",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout is not None
    port = int(await asyncio.wait_for(proc.stdout.readline(), 30))
    clients = []
    for _ in range(100):
        with contextlib.suppress(OSError):
            clients.append(await asyncio.open_connection("127.0.0.1", port))
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    for _, writer in clients:
        writer.close()
    log = err.decode()
    if quiet:
        assert "Traceback" not in log and "Too many open files" not in log, log
        assert log.count("accept errors") == 1 and "EMFILE 1" in log, log
    else:  # what the quieting is for: the loop's own report, a traceback each time
        assert log.count("Too many open files") >= 2, log


async def test_a_stranger_sees_ready_alone_no_server_name_and_malformed_requests_are_one_line(node: Node) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.url}/healthz") as r:
            assert r.status == 200 and await r.json() == {"ready": True}
            assert r.headers["Server"] == "callbridge"
        async with http.get(f"{node.url}/healthz", headers={"Authorization": "Bearer a-guess"}) as r:
            assert await r.json() == {"ready": True}
        async with http.get(f"{node.url}/healthz", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            detail = await r.json()
            assert r.status == 200 and detail["ready"] is True and detail["workers"][0]["pid"] > 0, detail
        async with http.get(f"{node.url}/no-such-page") as r:
            assert r.status == 404 and r.headers["Server"] == "callbridge"
        async with http.get(node.metrics_url) as r:
            assert r.status == 200 and r.headers["Server"] == "callbridge"
    answers = []
    for _ in range(200):  # malformed requests, one a connection, as fast as they are answered
        reader, writer = await asyncio.open_connection("127.0.0.1", node.http_port)
        with _closing([writer]):
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n")
            answers.append(await asyncio.wait_for(reader.read(), 10))
    assert all(a.startswith(b"HTTP/1.0 400 ") for a in answers), answers[0]
    assert b"Server: callbridge\r\n" in answers[0] and b"aiohttp" not in answers[0], answers[0]
    status, said = await node.cli("health")  # callbridge health without a token: ready, and only that
    assert status == 0 and said.startswith("healthy ("), said
    log = node.log.read_text()
    assert "Traceback" not in log and "Content-Length: zz" not in log
    assert 1 <= log.count("a malformed request from 127.0.0.1: 400 BadHttpMessage") <= 3, log[-2000:]
