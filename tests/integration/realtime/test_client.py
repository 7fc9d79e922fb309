"""The thin client against the emulator: a real WebSocket, both dialects, every way a session can end."""

from __future__ import annotations

import asyncio
import base64
import math
import struct
from collections.abc import Callable

import numpy as np
import pytest

from bridge import events as ev
from bridge.emulator import EmulatorServer
from bridge.emulator.session import SessionRecord
from bridge.errors import ConnectError
from bridge.realtime import downlink, ws_fastpath
from bridge.realtime.client import ClientSettings, RealtimeClient
from bridge.realtime.dialects import BETA, GA, Dialect
from bridge.realtime.profile import AgentProfile

DIALECTS = [BETA, GA]


def speech_24k(seconds: float, level: float = 0.1) -> bytes:
    """Voiced-speech-like signal: 150 Hz fundamental with harmonics, amplitude-modulated at 4 Hz."""
    t = np.arange(int(24000 * seconds)) / 24000
    x = sum(np.sin(2 * math.pi * 150 * k * t) / k for k in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * math.pi * 4 * t))
    return (x / np.max(np.abs(x)) * level * 32767).astype("<i2").tobytes()


def dominant_hz(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, "<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


async def collect(client: RealtimeClient, until: type[ev.Event], limit_s: float = 10.0) -> list[ev.Event]:
    out: list[ev.Event] = []
    async with asyncio.timeout(limit_s):
        while True:
            event = await client.next_event()
            out.append(event)
            if isinstance(event, until | ev.Closed):
                return out


async def open_client(emulator: EmulatorServer, dialect: Dialect, query: str = "") -> RealtimeClient:
    base = emulator.base_url + (f"?{query}" if query else "")
    client = RealtimeClient(dialect, base, "sk-test-client", settings=ClientSettings(ping_interval_s=5))
    await client.connect()
    return client


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
async def test_a_turn_through_the_client(emulator: EmulatorServer, dialect: Dialect) -> None:
    emulator.queue_next(annotations=[{"hears": "what time do you open", "reply": {"text": "At nine.", "tone_hz": 700}}])
    client = await open_client(emulator, dialect, "speed=0")
    client.send(ev.UpdateSession(AgentProfile()))
    first = await collect(client, ev.SessionConfigured)
    assert isinstance(first[0], ev.SessionReady) and isinstance(first[-1], ev.SessionConfigured)
    audio = speech_24k(1.5) + bytes(2 * 24000)
    for i in range(0, len(audio), 960):  # 20 ms appends, as the call session sends them
        client.send(ev.AppendAudio(audio[i : i + 960]))
    events = await collect(client, ev.ResponseDone)
    kinds = [e.kind for e in events]
    assert kinds.index("SpeechStarted") < kinds.index("SpeechStopped") < kinds.index("ResponseStarted")
    assert kinds.index("ResponseStarted") < kinds.index("AudioChunk") < kinds.index("ResponseDone")
    reply = b"".join(e.audio for e in events if isinstance(e, ev.AudioChunk))
    assert abs(dominant_hz(reply, 24000) - 700) < 5
    done = events[-1]
    assert isinstance(done, ev.ResponseDone) and done.status == "completed" and done.usage is not None
    await client.close()
    assert client.closed is not None and client.closed.error_class is None
    # what reached the model is what we sent
    (record,) = emulator.sessions
    await emulator.wait_closed(record)
    assert record.dialect == dialect.name
    assert record.input_audio == audio  # every frame, in order, whether written at once or queued
    assert client.direct_sends > 0 and client.dropped_sends == 0


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
async def test_open_performs_the_dialects_handshake(emulator: EmulatorServer, dialect: Dialect) -> None:
    client = await open_client(emulator, dialect, "speed=0")
    seen: list[ev.Event] = []

    async def on_event(event: ev.Event) -> None:
        seen.append(event)

    await client.open(AgentProfile(voice="verse", audio_format="g711_ulaw"), on_event)
    assert [e.kind for e in seen] == ["SessionReady", "SessionConfigured"]
    configured = seen[-1]
    assert isinstance(configured, ev.SessionConfigured)
    assert (configured.voice, configured.audio_format) == ("verse", "g711_ulaw")  # the update was applied first
    (record,) = emulator.sessions
    assert record.types_received() == [dialect.client_events["session.update"]]
    await client.close()


async def test_open_raises_when_the_service_refuses_the_configuration(emulator: EmulatorServer) -> None:
    client = await open_client(emulator, BETA, "speed=0")
    with pytest.raises(ConnectError) as info:
        await client.open(AgentProfile(voice="marin"))  # marin needs a gpt-realtime model; beta's default is not
    assert "invalid_value" in str(info.value) and not info.value.retryable
    await client.close()


async def test_open_raises_when_the_connection_ends_first(emulator: EmulatorServer) -> None:
    client = await open_client(emulator, GA, "drop_after_s=0")
    with pytest.raises(ConnectError) as info:
        await client.open(AgentProfile())
    assert info.value.retryable and info.value.error_class is ev.ErrorClass.NETWORK
    await client.close()


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
async def test_socket_drop_is_a_retryable_network_close(emulator: EmulatorServer, dialect: Dialect) -> None:
    client = await open_client(emulator, dialect, "drop_after_s=0.3")
    events = await collect(client, ev.Closed, limit_s=5)
    closed = events[-1]
    assert isinstance(closed, ev.Closed)
    assert (closed.error_class, closed.retryable) == (ev.ErrorClass.NETWORK, True)
    client.send(ev.CommitAudio())  # sending after the close is a no-op, not an exception
    await client.close()


async def test_error_unknown_and_malformed_events_are_classified_and_not_fatal(emulator: EmulatorServer) -> None:
    client = await open_client(emulator, GA, "speed=0&error_mid_response=1&unknown_event=1&malformed_json=1")
    client.send(ev.UpdateSession(AgentProfile(turn_detection=None)))
    await collect(client, ev.SessionConfigured)
    client.send(ev.CreateResponse(instructions='say "hello there"'))
    events = await collect(client, ev.ResponseDone)
    errors = [e for e in events if isinstance(e, ev.ErrorEvent)]
    assert {e.code for e in errors} >= {"malformed_json", "server_error"}
    assert any(isinstance(e, ev.UnknownEvent) for e in events)
    assert client.protocol.counters["unknown"] == 1 and client.protocol.counters["malformed_json"] == 1
    assert isinstance(events[-1], ev.ResponseDone) and client.closed is None  # the session went on
    await client.close()


async def test_session_cap_is_a_retryable_server_close(emulator: EmulatorServer) -> None:
    client = await open_client(emulator, BETA, "session_max_s=0.3")
    events = await collect(client, ev.Closed, limit_s=5)
    assert any(isinstance(e, ev.ErrorEvent) and e.code == "session_expired" for e in events)
    closed = events[-1]
    assert isinstance(closed, ev.Closed) and (closed.code, closed.error_class, closed.retryable) == (
        1001,
        ev.ErrorClass.SERVER,
        True,
    )


async def test_bad_key_is_an_auth_failure_and_never_echoed() -> None:
    async with EmulatorServer("127.0.0.1", 0, api_key="sk-the-real-one") as server:
        client = RealtimeClient(GA, server.base_url, "sk-wrong-key-123456")
        await client.connect()
        events = await collect(client, ev.Closed, limit_s=5)
        closed = events[-1]
        assert isinstance(closed, ev.Closed) and (closed.code, closed.error_class) == (3000, ev.ErrorClass.AUTH)
        assert all("sk-wrong-key-123456" not in repr(e) for e in events)


async def test_nothing_listening_is_a_retryable_connect_error() -> None:
    client = RealtimeClient(GA, "ws://127.0.0.1:9/v1", "sk-x", settings=ClientSettings(connect_timeout_s=2))
    with pytest.raises(ConnectError) as info:
        await client.connect()
    assert info.value.error_class is ev.ErrorClass.NETWORK and info.value.retryable


async def test_idle_timeout_closes_a_silent_socket(emulator: EmulatorServer) -> None:
    client = RealtimeClient(GA, emulator.base_url, "sk-x", settings=ClientSettings(idle_timeout_s=0.3))
    await client.connect()
    events = await collect(client, ev.Closed, limit_s=5)
    closed = events[-1]
    assert isinstance(closed, ev.Closed) and "idle" in closed.reason and closed.retryable


@pytest.mark.parametrize("fast", [True, False], ids=["sans-io socket", "websockets' client"])
async def test_an_idle_session_whose_server_answers_pings_stays_open(
    fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session with nothing to say (the caller holds, or says nothing; the server sends no message and no ping of
    its own) is alive while the server answers our pings: the idle timeout is for a silent socket, not a quiet
    session. Four idle timeouts pass with no message; then a turn still works on the same socket."""
    if not fast:
        monkeypatch.setattr(ws_fastpath, "MISSING", ("ClientProtocol.send_text()",))
    async with EmulatorServer("127.0.0.1", 0, ping_interval_s=0) as server:  # the server never pings
        settings = ClientSettings(idle_timeout_s=0.4, ping_interval_s=0.1, ping_timeout_s=1.0)
        client = RealtimeClient(GA, server.base_url, "sk-x", settings=settings)
        await client.connect()
        try:
            with pytest.raises(TimeoutError):  # no Closed within four idle timeouts
                await collect(client, ev.Closed, limit_s=1.6)
            assert client.closed is None
            client.send(ev.CreateResponse(instructions='say "still here"'))
            events = await collect(client, ev.ResponseDone, limit_s=10)
            assert isinstance(events[-1], ev.ResponseDone), events[-3:]
        finally:
            await client.close()


def test_pcm_helper_is_sane() -> None:
    pcm = speech_24k(0.5)
    assert len(pcm) == 24000 and max(struct.unpack("<12000h", pcm)) > 3000


async def test_deliver_to_hands_events_over_in_order_queued_ones_first(emulator: EmulatorServer) -> None:
    client = await open_client(emulator, GA, "speed=0")
    client.send(ev.UpdateSession(AgentProfile()))
    async with asyncio.timeout(5):
        # session.created and session.updated, queued before any sink (the client signals no count to wait on)
        while client.pending_events() < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    seen: list[ev.Event] = []
    two = asyncio.Event()

    def sink(event: ev.Event) -> None:
        if isinstance(event, ev.SessionReady):
            raise RuntimeError("a buggy sink")  # logged and counted; the session goes on
        seen.append(event)
        if len(seen) >= 2:
            two.set()

    client.deliver_to(sink)
    assert client.pending_events() == 0 and client.sink_errors == 1
    assert [type(e) for e in seen] == [ev.SessionConfigured]
    client.send(ev.AddText("hello", ev.Role.USER))
    await asyncio.wait_for(two.wait(), 5)
    assert client.closed is None  # the raising sink did not end the session
    client.deliver_to(None)  # queue again
    await client.close()
    tail = await collect(client, ev.Closed)
    assert isinstance(tail[-1], ev.Closed) and tail[-1].error_class is None
    assert len(seen) >= 2 and not any(isinstance(e, ev.Closed) for e in seen)


class _ByHand:
    """A metronome beaten by the test: the loop's reader (:mod:`bridge.realtime.readset`) reads when it beats."""

    def __init__(self) -> None:
        self.chores: list[Callable[[], None]] = []

    def add(self, chore: Callable[[], None], first: bool = False) -> Callable[[], None]:
        self.chores.insert(0 if first else len(self.chores), chore)
        return lambda: self.chores.remove(chore) if chore in self.chores else None


class Beat:
    """One beat of the loop: every gated socket read by the loop's reader in C (one call for all), or by its own
    beat in Python (where the downlink's library does not load). The tests below run on both."""

    def __init__(self, in_c: bool) -> None:
        self.beats = _ByHand() if in_c else None

    def __call__(self, client: RealtimeClient) -> None:
        client.beat()  # nothing when the reader reads it
        for chore in tuple(self.beats.chores if self.beats is not None else ()):
            chore()


@pytest.fixture(params=["reader in C", "socket by socket"])
def beat(request: pytest.FixtureRequest) -> Beat:
    if request.param == "reader in C" and downlink.load() is None:
        pytest.skip("no C compiler")
    return Beat(request.param == "reader in C")


async def a_response_unread(emulator: EmulatorServer, beat: Beat) -> tuple[RealtimeClient, SessionRecord]:
    """A gated client (reading on the beat) whose server has sent a whole response that nothing has read yet."""
    client = await open_client(emulator, GA, "speed=0")
    client.send(ev.UpdateSession(AgentProfile()))
    await collect(client, ev.SessionConfigured)  # read as frames land (not gated)
    (record,) = emulator.sessions
    assert client.read_on_beat(True, beat.beats) is (beat.beats is not None)
    client.send(ev.CreateResponse(instructions="Say hello."))
    async with asyncio.timeout(5):
        while not any(e.get("type") == "response.done" for e in record.sent):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert client.pending_events() == 0  # the whole response is on the socket, unread: no beat yet
    return client, record


async def test_read_on_beat_holds_server_frames_until_the_beat_and_loses_none(
    emulator: EmulatorServer, beat: Beat
) -> None:
    client, record = await a_response_unread(emulator, beat)
    events: list[ev.Event] = []
    async with asyncio.timeout(5):
        while not any(isinstance(e, ev.ResponseDone) for e in events):
            beat(client)  # a tick: the next pass of the loop reads what arrived
            await asyncio.sleep(0.02)
            while client.pending_events():
                events.append(await client.next_event())
    kinds = [e.kind for e in events]
    assert kinds[0] == "ResponseStarted" and kinds.index("AudioChunk") < kinds.index("ResponseDone")
    sent = b"".join(base64.b64decode(e["delta"]) for e in record.sent if e["type"] == "response.output_audio.delta")
    heard = b"".join(e.audio for e in events if isinstance(e, ev.AudioChunk))
    assert sent and heard == sent  # every delta, in order, none lost to the gate
    client.read_on_beat(False)  # as frames land again
    client.send(ev.AddText("hello", ev.Role.USER))
    client.send(ev.CreateResponse(instructions="Again."))
    again = await collect(client, ev.ResponseDone)  # no beat needed
    assert isinstance(again[-1], ev.ResponseDone)
    client.read_on_beat(True)
    await client.close()  # the close handshake is read although the gate was on
    assert client.closed is not None and client.closed.error_class is None


async def test_the_beat_decodes_what_it_reads_on_its_own_wake_up(emulator: EmulatorServer, beat: Beat) -> None:
    """Whole text messages go from the beat's read to the events at once: no hop through ``websockets``' queue and
    the receive task (which would leave nothing decoded until the loop runs again)."""
    client, record = await a_response_unread(emulator, beat)
    beat(client)  # one read (up to 256 KiB), and nothing awaited after it
    events = [client._events.get_nowait() for _ in range(client.pending_events())]
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["ResponseStarted", "OutputItemAdded"] and "AudioChunk" in kinds, kinds
    async with asyncio.timeout(5):
        while not any(isinstance(e, ev.ResponseDone) for e in events):  # the rest, beat by beat
            await asyncio.sleep(0.02)
            beat(client)
            events += [client._events.get_nowait() for _ in range(client.pending_events())]
    sent = b"".join(base64.b64decode(e["delta"]) for e in record.sent if e["type"] == "response.output_audio.delta")
    assert sent and b"".join(e.audio for e in events if isinstance(e, ev.AudioChunk)) == sent
    await client.close()


async def test_read_on_beat_meets_the_servers_end_of_stream(emulator: EmulatorServer, beat: Beat) -> None:
    client = await open_client(emulator, GA, "speed=0&drop_after_s=0.3")
    client.send(ev.UpdateSession(AgentProfile()))
    await collect(client, ev.SessionConfigured)
    assert client.read_on_beat(True, beat.beats) is (beat.beats is not None)
    await asyncio.sleep(0.6)  # the server has dropped the connection; nothing read it yet
    assert client.closed is None
    async with asyncio.timeout(5):
        while client.closed is None:
            beat(client)  # the beat finds the end of stream and leaves it to the transport
            await asyncio.sleep(0.02)
    assert client.closed.retryable and client.closed.error_class is ev.ErrorClass.NETWORK
