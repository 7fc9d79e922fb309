"""The Realtime socket over TLS (``wss://``), as OpenAI is reached: the emulator serves TLS with a certificate of its
own, a client that trusts it talks to it, and one that does not is refused, naming the certificate. On the native
TLS engine (``bridge/realtime/tls_native.py``) the socket keeps its fast paths (reading on the beat); without it
(``CALLBRIDGE_NATIVE_TLS=0``) asyncio's TLS carries the same conversation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from _proxy import connect_proxy

from bridge import events as ev
from bridge.devkit.tlscert import self_signed
from bridge.emulator import EmulatorServer
from bridge.emulator.server import main as emulator_main
from bridge.emulator.server import server_tls
from bridge.errors import ConnectError
from bridge.realtime import tls_native
from bridge.realtime.client import RealtimeClient
from bridge.realtime.dialects import GA
from bridge.realtime.profile import AgentProfile
from bridge.realtime.ws_fastpath import RealtimeSocket
from bridge.runtime import metronome


@pytest.fixture(params=["native", "asyncio"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Which TLS carries the socket: the native engine, or asyncio's (the engine turned off)."""
    if request.param == "asyncio":
        monkeypatch.setenv(tls_native.ENV, "0")
    elif tls_native.load() is None:
        pytest.skip(f"no native TLS engine: {tls_native.problem()}")
    tls_native._reset_for_tests()
    yield request.param
    monkeypatch.delenv(tls_native.ENV, raising=False)
    tls_native._reset_for_tests()


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path / "tls", "127.0.0.1", also=("localhost",))


@pytest.fixture
async def tls_emulator(cert: tuple[Path, Path]) -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer("127.0.0.1", 0, ping_interval_s=0, tls=server_tls(*cert)) as emu:
        yield emu


async def _configured(client: RealtimeClient) -> list[ev.Event]:
    await client.connect()
    client.send(ev.UpdateSession(AgentProfile()))
    seen: list[ev.Event] = []
    async with asyncio.timeout(10):
        while not isinstance(seen[-1] if seen else None, ev.SessionConfigured):
            seen.append(await client.next_event())
    return seen


async def test_a_client_that_trusts_the_certificate_talks_over_wss(
    tls_emulator: EmulatorServer, cert: tuple[Path, Path], engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tls_emulator.base_url.startswith("wss://") and tls_emulator.http_url.startswith("https://")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
    client = RealtimeClient(GA, f"{tls_emulator.base_url}?speed=0", "sk-test-client")
    try:
        seen = await _configured(client)
        ws = client._ws
        assert isinstance(ws, RealtimeSocket)
        assert (ws._tls is not None) == (engine == "native")
        client.read_on_beat(True, metronome.for_loop())  # the loop's reader in C reads it with every other
        assert ws.gated == (engine == "native")  # asyncio's TLS transport reads the socket itself
        assert ws.read_in_c == (engine == "native")  # the loop's reader in C opens its TLS records
        client.send(ev.AddText("hello", ev.Role.USER))
        client.send(ev.CreateResponse())
        async with asyncio.timeout(10):  # gated: the events come as the beat reads them
            while not isinstance(seen[-1], ev.ResponseDone):
                client.beat()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.06):
                        seen.append(await client.next_event())
    finally:
        await client.close()
    assert any(isinstance(e, ev.AudioChunk) for e in seen)
    assert client.closed is not None and client.closed.error_class is None  # the close went out sealed too
    (record,) = tls_emulator.sessions
    await tls_emulator.wait_closed(record)
    assert "conversation.item.create" in [e["type"] for e in record.received] and record.errors == []


async def test_a_client_that_does_not_trust_it_is_refused_naming_the_certificate(
    tls_emulator: EmulatorServer, engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other, _ = self_signed(tmp_path / "other", "127.0.0.1")
    monkeypatch.setenv("SSL_CERT_FILE", str(other))
    client = RealtimeClient(GA, f"{tls_emulator.base_url}?speed=0", "sk-test-client")
    with pytest.raises(ConnectError) as refused:
        await client.connect()
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value) or "certificate verify failed" in str(refused.value)
    assert "sk-test-client" not in str(refused.value)
    assert tls_emulator.sessions == []


def test_the_emulator_cli_needs_both_halves_of_a_certificate(
    cert: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert emulator_main(["--port", "0", "--tls-cert", str(cert[0])]) == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().out
    missing = tmp_path / "missing.pem"
    assert emulator_main(["--port", "0", "--tls-cert", str(missing), "--tls-key", str(cert[1])]) == 2
    assert "No such file" in capsys.readouterr().out


async def test_through_an_http_proxy_tls_runs_inside_the_tunnel(
    tls_emulator: EmulatorServer, cert: tuple[Path, Path], engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``wss://`` behind a corporate proxy: ``CONNECT`` to the service, then TLS end to end through the tunnel (the
    proxy sees records, never the key or the messages)."""
    for name in ("no_proxy", "NO_PROXY", "http_proxy", "HTTPS_PROXY", "ws_proxy", "socks_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
    async with connect_proxy("user", "s3cret") as (port, connects):
        monkeypatch.setenv("https_proxy", f"http://user:s3cret@127.0.0.1:{port}")
        client = RealtimeClient(GA, f"{tls_emulator.base_url}?speed=0", "sk-test-client")
        try:
            seen = await _configured(client)
            ws = client._ws
            assert isinstance(ws, RealtimeSocket) and (ws._tls is not None) == (engine == "native")
        finally:
            await client.close()
    assert isinstance(seen[-1], ev.SessionConfigured)
    target = tls_emulator.base_url.split("//")[1].split("/")[0].encode()
    assert len(connects) == 1 and connects[0].startswith(b"CONNECT " + target + b" HTTP/1.1\r\n")
    assert client.closed is not None and client.closed.error_class is None
