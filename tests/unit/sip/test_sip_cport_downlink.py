"""The native port's downlink (bridge/native/cport.c, "Downlink"): the model's audio deltas read from a socket,
decoded and downsampled on the clock thread, as ``bench calls --ceiling duplex`` runs it. Driven through the
wheel's own ``pjmedia_port_get_frame``, with a real socket pair carrying WebSocket frames."""

from __future__ import annotations

import base64
import ctypes
import json
import select
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pjsua2 as pj
import pytest

from bridge.audio import Downsampler
from bridge.audio.analysis import peak_frequency, tone
from bridge.audio.frames import FRAME_BYTES, SILENCE
from bridge.sip import cport

DELTA = "response.output_audio.delta"


def ws_text(payload: bytes) -> bytes:
    """A server's WebSocket text frame (unmasked), with the length form RFC 6455 §5.2 requires for its size."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def delta_event(pcm: bytes, spaced: bool = True) -> bytes:
    event = {"type": DELTA, "item_id": "item_1", "content_index": 0, "delta": base64.b64encode(pcm).decode()}
    return json.dumps(event, separators=None if spaced else (",", ":")).encode()


@dataclass
class Bound:
    """A port with its downlink bound to one end of a socket pair; ``model`` is the other end."""

    hub: cport.NativeHub
    port: cport.NativePort
    downlink: cport.NativeDownlink
    model: socket.socket


@pytest.fixture
def bound(native_lib: ctypes.CDLL) -> Iterator[Bound]:
    ours, model = socket.socketpair()
    ours.setblocking(False)
    hub = cport.NativeHub(native_lib, lead=2)
    port = hub.new_port("t-down", conference=False)
    port.attach(None, lambda pcm, t: None)
    downlink = port.downlink(Downsampler(native=True))
    assert downlink.bind(ours.fileno(), DELTA)
    yield Bound(hub, port, downlink, model)
    downlink.unbind()
    port.detach()
    ours.close()
    model.close()


def test_deltas_are_decoded_downsampled_and_played_frame_by_frame_without_the_loop(bound: Bound) -> None:
    hub, port, downlink, model = bound.hub, bound.port, bound.downlink, bound.model
    speech = tone(440.0, 0.6, rate=24000)
    parts = [speech[:9600], speech[9600:19200], speech[19200:]]  # 200 ms each
    # the deltas in both JSON spellings, another event between them, the last frame split across two writes
    wire = ws_text(delta_event(parts[0])) + ws_text(b'{"type": "response.created", "response": {}}')
    wire += ws_text(delta_event(parts[1], spaced=False))
    last = ws_text(delta_event(parts[2]))
    hub.on_readable()  # the process's one eventfd, as other ports left it: read, and re-armed
    model.sendall(wire + last[:1000])
    heard = [cport.get_frame(port.handle) for _ in range(10)]
    model.sendall(last[1000:])
    heard += [cport.get_frame(port.handle) for _ in range(20)]
    assert {kind for kind, _ in heard} == {pj.PJMEDIA_FRAME_TYPE_AUDIO}
    played = b"".join(data for _, data in heard)
    # sample for sample what the Python downsampler (numpy) makes of the same audio
    expected = Downsampler(native=False).process(speech)
    assert played == expected  # 600 ms at 24 kHz: 4800 samples at 8 kHz, 30 frames
    x = np.frombuffer(expected, dtype=np.int16).astype(np.float64)
    assert abs((peak_frequency(x) or 0) - 440.0) < 5
    # the ring ran dry after the last delta: silence, counted; the loop was never woken for any of it
    assert cport.get_frame(port.handle)[1] == SILENCE
    counts = downlink.counters()
    assert (counts.deltas, counts.frames, counts.dropped, counts.bad, counts.errno) == (3, 31, 0, 0, 0)
    assert counts.underruns == 1
    assert not select.select([hub.fd], [], [], 0)[0]


def test_the_model_closing_its_socket_ends_the_downlink_and_the_port_goes_back_to_the_loop(bound: Bound) -> None:
    hub, port, downlink, model = bound.hub, bound.port, bound.downlink, bound.model
    model.sendall(ws_text(delta_event(tone(440.0, 0.04, rate=24000))))
    model.close()
    first, second = cport.get_frame(port.handle)[1], cport.get_frame(port.handle)[1]  # 40 ms: two frames
    assert SILENCE not in (first, second) and len(second) == FRAME_BYTES
    assert downlink.counters().errno != 0  # the end of the stream was seen on the next read: the socket given up
    late = port.counters().late_out
    assert cport.get_frame(port.handle)[1] == SILENCE  # the port is the loop's again: its ring is empty
    assert port.counters().late_out == late + 1 and select.select([hub.fd], [], [], 0)[0]
