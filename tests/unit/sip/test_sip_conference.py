"""A caller's conference without an endpoint: who hears whom on hold, in the briefing and joined, a re-INVITE on
hold, and a transfer leg's media sockets, which the next call cannot take while the leg lasts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.audio.frames import FrameSink, FrameSource
from bridge.sip.conference import Conference
from bridge.sip.crossing import PortCounters
from bridge.sip.endpoint import CallGone
from bridge.sip.rtpguard import MediaClaims

Edge = tuple[str, str]


class _Bridge:
    """Stands for pjsua2's conference bridge: which slot transmits to which."""

    def __init__(self) -> None:
        self.edges: set[Edge] = set()

    def hears(self, sink: str) -> set[str]:
        return {source for source, to in self.edges if to == sink}


class _Slot:
    """An ``AudioMedia`` (or a player) in the bridge."""

    def __init__(self, bridge: _Bridge, name: str) -> None:
        self.bridge, self.name = bridge, name

    def startTransmit(self, sink: _Slot) -> None:
        self.bridge.edges.add((self.name, sink.name))

    def stopTransmit(self, sink: _Slot) -> None:
        self.bridge.edges.discard((self.name, sink.name))


class _Port:
    """The session's media port: ``route`` and ``connect`` as the native and Python ports do them."""

    def __init__(self, bridge: _Bridge) -> None:
        self.bridge = bridge
        self.attached = True

    def counters(self) -> PortCounters:
        return PortCounters()

    def attach(self, source: FrameSource | None, sink: FrameSink | None) -> None:
        self.attached = True

    def connect(self, audio: Any) -> None:
        self.route(audio, send=True, receive=True)

    def route(self, audio: Any, *, send: bool, receive: bool) -> None:
        for edge, on in ((("port", audio.name), send), ((audio.name, "port"), receive)):
            if on:
                self.bridge.edges.add(edge)
            else:
                self.bridge.edges.discard(edge)

    def detach(self) -> None:
        self.attached = False
        self.bridge.edges = {e for e in self.bridge.edges if "port" not in e}


class _Caller:
    def __init__(self, bridge: _Bridge) -> None:
        self.call_id = "c-1"
        self.disconnected = asyncio.Event()
        self.audio: _Slot | None = _Slot(bridge, "caller")
        self.port = _Port(bridge)

    def audio_media(self) -> Any:
        return self.audio

    def stop_media(self) -> None:
        self.port.detach()


def _conference() -> tuple[Conference, _Caller, _Bridge, list[str]]:
    bridge = _Bridge()
    caller = _Caller(bridge)
    played: list[str] = []

    def player(wav: str) -> _Slot:
        played.append(wav)
        return _Slot(bridge, "hold")

    conference = Conference(caller, None, player)
    conference.port = caller.port
    assert caller.audio is not None
    conference.caller_media(caller.audio)
    return conference, caller, bridge, played


def test_on_hold_the_caller_hears_the_hold_audio_and_the_session_is_out_of_the_call_both_ways() -> None:
    conference, _caller, bridge, played = _conference()
    assert bridge.edges == {("port", "caller"), ("caller", "port")}
    conference.hold("hold.wav")
    conference.hold("hold.wav")  # a second hold keeps the one player
    assert played == ["hold.wav"] and conference.held
    assert bridge.edges == {("hold", "caller")}
    conference.unhold()
    assert not conference.held
    assert bridge.edges == {("port", "caller"), ("caller", "port")}


def test_a_re_invite_on_hold_brings_the_hold_audio_to_the_new_stream_not_the_session() -> None:
    conference, caller, bridge, _ = _conference()
    conference.hold("hold.wav")
    caller.audio = _Slot(bridge, "caller-2")
    conference.caller_media(caller.audio)
    assert bridge.hears("caller-2") == {"hold"} and bridge.hears("port") == set()
    conference.unhold()
    assert bridge.hears("caller-2") == {"port"} and bridge.hears("port") == {"caller-2"}


def test_the_human_hears_the_briefing_then_caller_and_human_hear_only_each_other() -> None:
    conference, caller, bridge, _ = _conference()
    human = _Slot(bridge, "human")
    conference.hold("hold.wav")
    conference.route_agent(human, True)
    assert bridge.hears("human") == {"port"} and bridge.hears("caller") == {"hold"}
    assert bridge.hears("port") == set()  # the session hears neither side
    conference.join(human)
    assert bridge.edges == {("caller", "human"), ("human", "caller")}
    assert not conference.held and not caller.port.attached


def test_a_join_or_a_hold_without_the_callers_audio_raises_call_gone() -> None:
    conference, caller, bridge, _ = _conference()
    caller.audio = None
    with pytest.raises(CallGone):
        conference.join(_Slot(bridge, "human"))
    with pytest.raises(CallGone):
        conference.hold("hold.wav")


@pytest.fixture
def media_socket() -> Iterator[socket.socket]:
    """An unconnected UDP socket, as pjsua opens for a leg's RTP."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock
    finally:
        sock.close()


def test_a_legs_media_sockets_are_the_conferences_until_the_leg_leaves(media_socket: socket.socket) -> None:
    port = media_socket.getsockname()[1]
    claims = MediaClaims(sip_port=port + 1, ports=range(port, port + 1))
    conference = Conference(_Caller(_Bridge()), claims)
    leg = object()
    conference.admit(leg, "c-1/human")
    assert set(claims.owners.values()) == {"c-1/human"}
    assert claims.take("c-2") == {}  # the next call's INVITE: the transfer's socket is not free
    conference.leave(leg)
    conference.leave(leg)  # idempotent
    assert claims.owners == {}
    taken = claims.take("c-3")
    assert len(taken) == 1
    for sock in taken.values():
        sock.close()
