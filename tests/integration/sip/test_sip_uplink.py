"""The uplink offload (bridge/native/cport.c, "Uplink"): the caller's frames from pjmedia's clock callback to the
Realtime socket in C, sharing the socket with the client's own frames.

The port is driven through the wheel's own ``pjmedia_port_put_frame`` (what the conference bridge calls each
tick), the socket is a real ``websockets`` connection to the emulator (or one end of a socket pair, where the test
reads the raw bytes itself), and the reference is the numpy upsampler fed the same frames.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import json
import math
import socket
import ssl
import struct
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pjsua2 as pj
import pytest

from bridge import events as ev
from bridge.audio import AppendTemplate, Upsampler
from bridge.audio.echo import EchoGuard
from bridge.audio.echo_native import NativeEchoGuard
from bridge.audio.frames import FRAME_BYTES
from bridge.audio.line import EchoingLine, LineEcho
from bridge.devkit.tlscert import self_signed
from bridge.emulator import EmulatorServer
from bridge.emulator.server import server_tls
from bridge.realtime import tls_native
from bridge.realtime.client import ClientSettings, RealtimeClient
from bridge.realtime.dialects import BETA, GA, Dialect
from bridge.realtime.profile import AgentProfile
from bridge.sip import cport
from tests.unit.audio.test_echo import AGENT, SILENT
from tests.unit.audio.test_echo import frames as echo_frames

RATE = 8000


def tone(hz: float, frames: int, dbfs: float = -10.0, start: int = 0) -> list[bytes]:
    n = np.arange(start * 160, (start + frames) * 160)
    amp = 32767 * 10 ** (dbfs / 20) * math.sqrt(2)
    pcm = (amp * np.sin(2 * np.pi * hz * n / RATE)).astype("<i2").tobytes()
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


def dominant_hz(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, "<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def dbfs(pcm: bytes) -> float:
    x = np.frombuffer(pcm, "<i2").astype(float) / 32768
    return float(20 * np.log10(np.sqrt(np.mean(x**2))))


@pytest.fixture
def port(native_lib: ctypes.CDLL) -> cport.NativePort:
    hub = cport.NativeHub(native_lib, lead=2)
    p = hub.new_port("uplink-test", conference=False)
    p.attach(None, lambda pcm, t: None)
    return p


def parse_frames(raw: bytes) -> list[tuple[int, bytes]]:
    """Client-to-server WebSocket frames (RFC 6455 §5.2): (opcode, unmasked payload); every one must be whole,
    final and masked."""
    out, i = [], 0
    while i < len(raw):
        b0, b1 = raw[i], raw[i + 1]
        assert b0 & 0x80, "not a final frame"
        assert b1 & 0x80, "client frames must be masked"
        length, i = b1 & 0x7F, i + 2
        if length == 126:
            (length,), i = struct.unpack("!H", raw[i : i + 2]), i + 2
        elif length == 127:
            (length,), i = struct.unpack("!Q", raw[i : i + 8]), i + 8
        key, i = raw[i : i + 4], i + 4
        payload = bytes(c ^ key[k % 4] for k, c in enumerate(raw[i : i + length]))
        assert len(payload) == length, "a torn frame"
        out.append((b0 & 0x0F, payload))
        i += length
    return out


def test_each_frame_becomes_one_masked_append_with_the_upsampled_audio(port: cport.NativePort) -> None:
    ours, theirs = socket.socketpair()
    up, ref = Upsampler(native=True), Upsampler(native=False)
    offload = port.uplink(up)
    assert offload.set_append(GA.append) and offload.bind(ours.fileno())
    frames = tone(1020, 25)
    for frame in frames[:10]:
        cport.put_frame(port.handle, frame)
    marker = b"\x81\x85" + bytes(4) + b"hello"  # a frame of the connection's own (mask key 0), in between
    assert offload.write(marker) == 0
    for frame in frames[10:]:
        cport.put_frame(port.handle, frame)
    assert offload.unbind() == b""
    cport.put_frame(port.handle, frames[0])  # unbound: back to the ring, not the socket
    theirs.setblocking(False)
    got = parse_frames(theirs.recv(1 << 20))
    ours.close()
    theirs.close()
    assert [op for op, _ in got] == [1] * 26
    assert got[10] == (1, b"hello")
    appends = [json.loads(p) for _, p in got[:10] + got[11:]]
    assert all(set(a) == {"type", "audio"} and a["type"] == "input_audio_buffer.append" for a in appends)
    audio = b"".join(base64.b64decode(a["audio"], validate=True) for a in appends)
    assert audio == ref.process(b"".join(frames))  # bit for bit the loop's own upsampler
    assert offload.frames_sent == 25 and offload.frames_dropped == 0
    assert port.counters().frames_in == 26  # the port counts every frame the clock gave it, sent or queued
    port.detach()  # the next call on this pooled port counts from zero
    port.attach(None, lambda pcm, t: None)
    again = port.uplink(Upsampler(native=True))
    assert again.frames_sent == 0 and again.last_latency_s() == (0.0, 0.0)


def test_the_mirror_hands_the_loop_a_copy_of_each_frame_sent_with_its_time_negated(native_lib: ctypes.CDLL) -> None:
    hub = cport.NativeHub(native_lib, lead=2)
    port = hub.new_port("mirror-test", conference=False)
    seen: list[tuple[bytes, float]] = []
    port.attach(None, lambda pcm, t: seen.append((pcm, t)))
    ours, theirs = socket.socketpair()
    offload = port.uplink(Upsampler(native=True))
    assert offload.set_append(GA.append) and offload.bind(ours.fileno())
    frames = tone(1020, 6)
    cport.put_frame(port.handle, frames[0])  # no mirror: sent, and the loop gets nothing
    offload.mirror(True)
    for frame in frames[1:4]:
        cport.put_frame(port.handle, frame)
    offload.mirror(False)
    cport.put_frame(port.handle, frames[4])
    hub.drain()
    assert [pcm for pcm, _ in seen] == frames[1:4]  # the copies, in order
    assert all(t < 0 for _, t in seen)  # marked: already sent, never to be sent again
    theirs.setblocking(False)
    assert len(parse_frames(theirs.recv(1 << 20))) == 5  # every frame went to the socket once
    assert offload.frames_sent == 5
    offload.mirror(True)
    port.detach()  # a port goes back to the pool without its mirror
    seen.clear()
    port.attach(None, lambda pcm, t: seen.append((pcm, t)))
    again = port.uplink(Upsampler(native=True))
    assert again.set_append(GA.append) and again.bind(ours.fileno())
    cport.put_frame(port.handle, frames[5])
    hub.drain()
    assert seen == []
    again.unbind()
    ours.close()
    theirs.close()


@pytest.mark.parametrize("temper", [True, False])
def test_the_echo_guard_hears_and_tempers_each_frame_before_it_is_sent(port: cport.NativePort, temper: bool) -> None:
    """The call's C echo guard on the clock thread: each frame is heard by it, and what it gives is what is sent
    (the Python guard's tempering, fed the same frames); frames dropped at the bind are heard all the same."""
    guard = NativeEchoGuard()
    twin = EchoGuard()
    line = EchoingLine(LineEcho(-14, 120, None))
    played = echo_frames(AGENT)[:90]
    back = [line.step(frame, SILENT) for frame in played]
    ours, theirs = socket.socketpair()
    offload = port.uplink(Upsampler(native=True))
    assert offload.set_append(GA.append) and offload.guard_with(guard, temper)
    for i in range(90):
        for g in (guard, twin):
            g.played(played[i])
        if i == 10:
            assert offload.bind(ours.fileno())  # the ten frames queued for the loop are dropped, yet heard
        if i < 10:
            twin.heard(back[i])
        cport.put_frame(port.handle, back[i])
    offload.unbind()
    expected = []
    for frame in back[10:]:
        twin.heard(frame)
        expected.append(twin.temper(frame) if temper else frame)
    theirs.setblocking(False)
    raw = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := theirs.recv(1 << 20):
            raw += chunk
    ours.close()
    theirs.close()
    got = b"".join(base64.b64decode(json.loads(p)["audio"]) for _, p in parse_frames(raw))
    want = Upsampler(native=False).process(b"".join(expected))
    assert len(got) == len(want) == 80 * 3 * FRAME_BYTES
    sent, ref = np.frombuffer(got, "<i2").astype(np.int32), np.frombuffer(want, "<i2")
    assert np.max(np.abs(sent - ref)) <= 2  # the Python guard's output but for the last bit's rounding
    echo_only = got[40 * 3 * FRAME_BYTES :]  # the path held: the echo taken out (tempered) or as it came (not)
    assert (dbfs(echo_only) < -55.0) == temper, dbfs(echo_only)


def test_the_callers_onset_over_the_agent_is_told_to_the_loop_at_its_next_drain(native_lib: ctypes.CDLL) -> None:
    """The C guard on the clock thread hears a caller start over the agent's echo (the call's rule: two frames
    passed whole and loud): the port's ``on_onset`` runs at the hub's next drain, and the loop was woken for it;
    the echo alone tells nothing, and a port back in the pool tells its next call nothing."""
    from bridge.call.echo import PASSED_DB, PASSED_FRAMES

    hub = cport.NativeHub(native_lib, lead=2)
    port = hub.new_port("onset-test", conference=False)
    port.attach(None, lambda pcm, t: None)
    guard, told = NativeEchoGuard(), []
    line = EchoingLine(LineEcho(-10, 120, -55.0))
    played = echo_frames(AGENT)[:120]
    voice = tone(300, 40, dbfs=-12.0)
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    offload = port.uplink(Upsampler(native=True))
    assert offload.set_append(GA.append)
    assert offload.guard_with(guard, True, (PASSED_FRAMES, PASSED_DB), lambda: told.append(guard.judge().echo))
    assert offload.bind(ours.fileno())
    first = None
    for i, frame in enumerate(played):
        guard.played(frame)
        native_lib.cbp_rearm()  # as the loop's reader does (NativeHub.on_readable) before it drains
        wakes = hub.wakes
        cport.put_frame(port.handle, line.step(frame, voice[i - 80] if i >= 80 else SILENT))
        woken = hub.wakes > wakes
        hub.drain()
        with contextlib.suppress(BlockingIOError):
            while theirs.recv(1 << 20):
                pass
        if told and first is None:
            first = i
            assert woken  # the clock thread woke the loop for it
    assert first is not None and 81 <= first <= 85, first  # the voice's second frame, or within 100 ms of it
    assert False in told  # and the loop judged a window of it the caller's
    offload.unbind()
    port.detach()
    assert port.on_onset is None
    ours.close()
    theirs.close()


def test_each_frame_is_framed_by_the_template_it_was_given(port: cport.NativePort) -> None:
    ours, theirs = socket.socketpair()
    offload = port.uplink(Upsampler(native=True))
    assert not offload.bind(ours.fileno())  # no template: the C uplink has no JSON of its own
    assert not offload.set_append(AppendTemplate("x" * 200))  # longer than cport.c's buffer: refused
    assert offload.set_append(AppendTemplate("session.input_audio.append", "pcm")) and offload.bind(ours.fileno())
    for frame in tone(1020, 3):
        cport.put_frame(port.handle, frame)
    assert offload.unbind() == b""
    theirs.setblocking(False)
    got = [json.loads(payload) for _, payload in parse_frames(theirs.recv(1 << 20))]
    ours.close()
    theirs.close()
    assert [(set(e), e["type"]) for e in got] == [({"type", "pcm"}, "session.input_audio.append")] * 3
    assert all(len(base64.b64decode(e["pcm"], validate=True)) == 960 for e in got)  # 20 ms at 24 kHz


def _read_all(ours: socket.socket, theirs: socket.socket, rest: bytes) -> bytes:
    """Everything the pair carries once the uplink is unbound: what the kernel holds, then ``rest`` (the bytes
    the uplink handed back) written after it, as the loop would. Both ends are closed."""
    theirs.setblocking(False)
    ours.setblocking(False)
    raw = b""
    while True:
        try:
            raw += theirs.recv(1 << 20)
        except BlockingIOError:
            if not rest:
                break
        if rest:
            with contextlib.suppress(BlockingIOError):
                rest = rest[ours.send(rest) :]
    ours.close()
    theirs.close()
    return raw


def test_a_socket_that_takes_nothing_keeps_whole_frames_then_drops_and_counts(port: cport.NativePort) -> None:
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    up = Upsampler(native=True)
    offload = port.uplink(up)
    assert offload.set_append(GA.append) and offload.bind(ours.fileno())
    frames = tone(440, 250)  # 5 s: more than the pending buffer holds (about 3 s)
    for frame in frames:
        cport.put_frame(port.handle, frame)
    sent, dropped = offload.frames_sent, offload.frames_dropped
    assert sent + dropped == 250 and dropped > 0
    assert offload.write(b"\x81\x82" + bytes(4) + b"ok") == 0  # the connection's own frame is never dropped
    raw = _read_all(ours, theirs, offload.unbind())  # what the kernel had not taken is handed back in order
    got = parse_frames(raw)
    assert len(got) == sent + 1 and got[-1] == (1, b"ok")
    assert all(json.loads(p)["type"] == "input_audio_buffer.append" for _, p in got[:-1])


def test_an_earlier_calls_uplink_never_writes_to_the_next_calls_socket(port: cport.NativePort) -> None:
    # a call ends (its port detached and pooled) while its session still closes; the port's next call binds its
    # own socket: the first session's late close frame must not go there, nor its unbind take the new call's
    first_ours, first_theirs = socket.socketpair()
    next_ours, next_theirs = socket.socketpair()
    first = port.uplink(Upsampler(native=True))
    assert first.set_append(GA.append) and first.bind(first_ours.fileno())
    port.detach()
    port.attach(None, lambda pcm, t: None)
    following = port.uplink(Upsampler(native=True))
    assert following.set_append(GA.append) and following.bind(next_ours.fileno())
    close = b"\x88\x82" + bytes(4) + b"\x03\xe8"  # close 1000 (mask key 0)
    first.end_data()
    assert first.write(close) == -2  # not bound: the first session writes it to its own socket itself
    assert first.unbind() == b"" and not first.bind(first_ours.fileno())
    first.mirror(True)
    frames = tone(440, 3)
    for frame in frames:
        cport.put_frame(port.handle, frame)
    assert following.unbind() == b""
    next_theirs.setblocking(False)
    first_theirs.setblocking(False)
    got = parse_frames(next_theirs.recv(1 << 20))
    with pytest.raises(BlockingIOError):
        first_theirs.recv(1 << 20)  # nothing went to the first call's socket after its detach
    for sock in (first_ours, first_theirs, next_ours, next_theirs):
        sock.close()
    assert [op for op, _ in got] == [1, 1, 1]  # the next call's three appends, and no close frame among them
    assert following.frames_sent == 3


def test_a_close_frame_behind_a_backlog_goes_out_once_after_it_on_the_next_ticks(port: cport.NativePort) -> None:
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    offload = port.uplink(Upsampler(native=True))
    assert offload.set_append(GA.append) and offload.bind(ours.fileno())
    for frame in tone(440, 40):  # more than the socket holds: a backlog waits in C
        cport.put_frame(port.handle, frame)
    sent = offload.frames_sent
    offload.end_data()
    close = b"\x88\x82" + bytes(4) + b"\x03\xe8"  # close 1000 (mask key 0)
    assert offload.write(close) == 0
    cport.put_frame(port.handle, tone(440, 1)[0])  # after the close: not sent, counted
    assert offload.frames_sent == sent and offload.frames_dropped == 1
    theirs.setblocking(False)
    raw = b""
    for _ in range(400):  # the reader drains while the clock ticks on (empty frames): the ticks flush the rest
        with contextlib.suppress(BlockingIOError):
            raw += theirs.recv(1 << 20)
        cport.put_frame(port.handle, b"", frame_type=pj.PJMEDIA_FRAME_TYPE_NONE)
    assert offload.unbind() == b""  # nothing was left for the loop
    ours.close()
    theirs.close()
    got = parse_frames(raw)
    assert len(got) == sent + 1 and got[-1] == (8, b"\x03\xe8")  # every append once, then the close, last
    assert all(op == 1 for op, _ in got[:-1])


async def _configured(emulator: EmulatorServer, dialect: Dialect) -> RealtimeClient:
    client = RealtimeClient(dialect, emulator.base_url + "?speed=0", "sk-test-uplink", settings=ClientSettings())
    await client.connect()
    client.send(ev.UpdateSession(AgentProfile(turn_detection=None)))
    async with asyncio.timeout(10):
        while not isinstance(await client.next_event(), ev.SessionConfigured):
            pass
    return client


@pytest.fixture
async def model(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[EmulatorServer]:
    """The emulator over ``ws://``, or (``wss``) behind TLS as OpenAI is reached, with a certificate the client
    trusts."""
    tls = None
    if request.param == "wss":
        if tls_native.load() is None:
            pytest.skip(f"no native TLS engine: {tls_native.problem()}")
        cert, key = self_signed(tmp_path / "tls", "127.0.0.1")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        tls = server_tls(cert, key)
    async with EmulatorServer("127.0.0.1", 0, ping_interval_s=0, tls=tls) as emu:
        yield emu


@pytest.mark.parametrize(
    ("dialect", "model"),
    [(BETA, "ws"), (GA, "ws"), (GA, "wss")],
    ids=["beta-ws", "ga-ws", "ga-wss"],
    indirect=["model"],
)
async def test_the_model_hears_the_clock_threads_audio_and_our_events_in_order(
    model: EmulatorServer, port: cport.NativePort, dialect: Dialect
) -> None:
    """Over ``wss://`` the clock thread seals its frames with the connection's TLS engine while the loop seals
    its own: the service opens one stream, every frame once and in order."""
    emulator = model
    client = await _configured(emulator, dialect)
    assert (client._ws is not None and client._ws._tls is not None) == emulator.base_url.startswith("wss://")
    up, ref = Upsampler(native=True), Upsampler(native=False)
    offload = port.uplink(up)
    assert client.offload_writes(offload) and client.offloaded
    frames = tone(1020, 150)
    clock = threading.Thread(target=lambda: [cport.put_frame(port.handle, f) for f in frames[:50]])
    clock.start()  # as pjmedia's clock thread would, while the loop writes its own frames
    for i in range(20):
        client.send(ev.AddText(f"note {i}", ev.Role.SYSTEM))
    clock.join()
    for frame in frames[50:100]:
        cport.put_frame(port.handle, frame)
    client.send(ev.AddText("handover", ev.Role.SYSTEM))
    assert client.offload_writes(None) and not client.offloaded
    for frame in frames[100:]:  # the loop carries the same stream on: _on_frame's path
        client.send(ev.AppendAudio(up.process(frame)))
    await client.close()
    assert client.closed is not None and client.closed.error_class is None  # the close went out in order too
    (record,) = emulator.sessions
    await emulator.wait_closed(record)
    assert record.input_audio == ref.process(b"".join(frames))  # every frame, once, in order, across the handover
    assert abs(dominant_hz(record.input_audio, 24000) - 1020) < 5
    assert abs(dbfs(record.input_audio) - -10.0) < 0.5
    kinds = [e["type"] for e in record.received]
    items = [i for i, k in enumerate(kinds) if k == "conversation.item.create"]
    appends = [i for i, k in enumerate(kinds) if k == "input_audio_buffer.append"]
    assert len(items) == 21 and len(appends) == 150
    notes = [record.received[i]["item"]["content"][0]["text"] for i in items]
    assert notes == [f"note {i}" for i in range(20)] + ["handover"]  # our own frames kept their order
    assert items[-1] > appends[99] and items[-1] < appends[100]  # the handover between frame 100 and 101
    assert offload.frames_sent == 100 and record.errors == []


async def test_a_lost_socket_hands_the_audio_back_to_the_loop(
    emulator: EmulatorServer, native_lib: ctypes.CDLL
) -> None:
    got: list[bytes] = []
    hub = cport.NativeHub(native_lib, lead=2)
    port = hub.new_port("uplink-lost", conference=False)
    port.attach(None, lambda pcm, t: got.append(pcm))
    emulator.queue_next(settings={"drop_after_s": 0.3})
    client = await _configured(emulator, GA)
    offload = port.uplink(Upsampler(native=True))  # the offload keeps the stream's state alive
    assert client.offload_writes(offload)
    async with asyncio.timeout(10):
        while client.closed is None:
            cport.put_frame(port.handle, tone(1020, 1)[0])
            await asyncio.sleep(0.02)
    assert client.closed.retryable and not client.offloaded  # unbound as the connection was lost
    before = offload.frames_sent
    assert before > 0
    frame = tone(1020, 1)[0]
    cport.put_frame(port.handle, frame)
    hub.drain()
    assert got == [frame] and offload.frames_sent == before  # the loop has it again; the socket is not touched
    await client.close()


async def test_a_closing_client_is_not_offloaded(emulator: EmulatorServer, port: cport.NativePort) -> None:
    client = await _configured(emulator, GA)
    offload = port.uplink(Upsampler(native=True))  # the offload keeps the stream's state alive
    await client.close()
    assert not client.offload_writes(offload) and not client.offloaded
    cport.put_frame(port.handle, tone(1020, 1)[0])
    assert offload.frames_sent == 0


def _tls_pair(tmp_path: Path) -> tuple[tls_native.NativeTls, ssl.SSLObject, ssl.MemoryBIO]:
    """A native TLS engine (the client) with its handshake done against a Python ``ssl`` server on memory
    buffers; the server object and the buffer its ciphertext goes into."""
    if tls_native.load() is None:
        pytest.skip(f"no native TLS engine: {tls_native.problem()}")
    cert, key = self_signed(tmp_path / "tls", "127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = context.wrap_bio(incoming, outgoing, server_side=True)
    client = tls_native.NativeTls("127.0.0.1", cafile=str(cert))
    server_done = False
    while not client.handshake() or not server_done:
        incoming.write(client.take())
        try:
            server.do_handshake()
            server_done = True
        except ssl.SSLWantReadError:
            pass
        client.feed(outgoing.read())
    incoming.write(client.take())
    return client, server, incoming


def _opened(server: ssl.SSLObject, incoming: ssl.MemoryBIO, raw: bytes) -> bytes:
    """Everything ``raw`` carries, opened by the server: raises if any record does not open."""
    incoming.write(raw)
    plain = b""
    with contextlib.suppress(ssl.SSLWantReadError):
        while chunk := server.read(1 << 16):
            plain += chunk
    return plain


def test_over_tls_a_backlog_drops_whole_frames_before_they_are_sealed(port: cport.NativePort, tmp_path: Path) -> None:
    """Over TLS the caller's frames the socket cannot take are dropped before they are sealed: every record that was
    sealed goes out, so the stream still opens, whole, in order, after the drops."""
    tls, server, incoming = _tls_pair(tmp_path)
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    offload = port.uplink(Upsampler(native=True))
    assert offload.set_append(GA.append) and offload.bind(ours.fileno(), (tls.seal_fn, tls.handle))
    frames = tone(440, 250)  # 5 s: more than the pending buffer holds (about 3 s)
    for frame in frames:
        cport.put_frame(port.handle, frame)
    sent, dropped = offload.frames_sent, offload.frames_dropped
    assert sent + dropped == 250 and dropped > 0
    assert offload.write(b"\x81\x82" + bytes(4) + b"ok") == 0  # the connection's own frame: sealed, never dropped
    raw = _read_all(ours, theirs, offload.unbind())  # sealed bytes the kernel had not taken, handed back in order
    assert b"input_audio_buffer" not in raw  # nothing went out in the clear
    got = parse_frames(_opened(server, incoming, raw))
    assert len(got) == sent + 1 and got[-1] == (1, b"ok")
    assert all(json.loads(p)["type"] == "input_audio_buffer.append" for _, p in got[:-1])
    tls.close()
