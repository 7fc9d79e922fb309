"""One caller's conference: which audio in pjsua2's conference bridge reaches which, for the caller's call and the
legs of its warm transfers.

::

    caller's audio ◄──► media port (the session: the model hears the caller, the caller hears the agent)
    hold:      hold player ──► caller's audio        media port out of the call both ways
    briefing:  media port ──► human's audio          (the human hears the agent's voice)
    joined:    caller's audio ◄──► human's audio     media port out of both calls, no Python on the media path

Each caller's call (:class:`bridge.sip.gateway.IncomingCall`) has one :class:`Conference`; the human's legs it places
(:class:`bridge.sip.outbound.HumanCall`) route through it. The conference also holds each leg's media sockets (its
claim in :class:`~bridge.sip.rtpguard.MediaClaims`, taken when the leg's INVITE is sent) until the leg is gone, so
that the gateway's next call cannot take a transfer's sockets. The gateway keeps admission and the registry of calls.
Everything here runs on the loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

import pjsua2 as pj

from bridge.sip.crossing import MediaPort
from bridge.sip.endpoint import CallGone, sip_error
from bridge.sip.rtpguard import MediaClaims, MediaGuard

_LOG = logging.getLogger("bridge.sip")


class ConferenceCaller(Protocol):
    """What the conference uses of the caller's call (:class:`bridge.sip.gateway.IncomingCall` is one)."""

    call_id: str
    disconnected: asyncio.Event

    def audio_media(self) -> Any:
        """The caller's audio in the conference bridge (an ``AudioMedia``), or None."""

    def stop_media(self) -> None:
        """The caller's media port leaves the call both ways (the session hears and says nothing more)."""


class Player(Protocol):
    """A hold audio source in the conference bridge (pjsua2's ``AudioMediaPlayer``)."""

    def startTransmit(self, sink: Any) -> None: ...

    def stopTransmit(self, sink: Any) -> None: ...


def file_player(wav: str) -> Player:
    """pjsua2's file player, playing ``wav`` in a loop."""
    player = pj.AudioMediaPlayer()
    player.createPlayer(wav, 0)  # 0: loop
    return player  # type: ignore[no-any-return]  # pjsua2 has no stubs


class Conference:
    """Hold, routing and joining for one caller's call and its transfer legs (see the module doc)."""

    def __init__(
        self, caller: ConferenceCaller, claims: MediaClaims | None, player: Callable[[str], Player] = file_player
    ) -> None:
        self.caller = caller
        self.port: MediaPort | None = None  # the session's media port (pooled by the endpoint), once media starts
        self._claims = claims
        self._make_player = player
        self._player: Player | None = None  # the hold audio, while it plays
        self._legs: dict[int, MediaGuard] = {}  # id(leg) -> the leg's media sockets, while the leg lasts

    @property
    def call_id(self) -> str:
        return self.caller.call_id

    @property
    def held(self) -> bool:
        """The caller hears the hold audio."""
        return self._player is not None

    # -- the caller's call -------------------------------------------------------------------------------------

    def caller_media(self, audio: Any, hear_caller: bool = True) -> None:
        """The caller's stream is (re)built (an SDP negotiated, a re-INVITE): the hold audio or the media port to it,
        and the caller to the port too if ``hear_caller`` (not before the caller's ACK: :meth:`hear_caller`). A
        failure to connect the port raises ``pj.Error``."""
        if self._player is not None:  # a re-INVITE on hold may bring new media
            with contextlib.suppress(pj.Error):
                self._player.startTransmit(audio)
        elif self.port is not None:
            self.port.route(audio, send=True, receive=hear_caller)

    def hear_caller(self, audio: Any) -> None:
        """The caller's ACK came: the media port hears the caller's ``audio`` too (unless the caller is on hold)."""
        if self._player is None and self.port is not None:
            self.port.route(audio, send=True, receive=True)

    def hold(self, wav: str) -> None:
        """The caller hears ``wav`` in a loop and the media port is out of the call both ways: the session neither
        hears the caller nor is heard by them, and its voice is free for a leg (:meth:`route_agent`)."""
        audio = self.caller.audio_media()
        if audio is None:
            raise CallGone("hold", "the caller's leg has no audio")
        if self._player is None:
            try:
                self._player = self._make_player(wav)
            except pj.Error as exc:
                raise sip_error("hold", exc) from None
        if self.port is not None:
            self.port.route(audio, send=False, receive=False)
        self._player.startTransmit(audio)

    def unhold(self) -> None:
        """The hold ends: the player stops, and the media port is back in the call both ways (if attached)."""
        player, self._player = self._player, None
        audio = self.caller.audio_media()
        if player is not None and audio is not None:
            with contextlib.suppress(pj.Error):
                player.stopTransmit(audio)
        if audio is not None and self.port is not None and self.port.attached:
            self.port.route(audio, send=True, receive=True)

    # -- the legs ----------------------------------------------------------------------------------------------

    def admit(self, leg: object, call_id: str) -> None:
        """A leg placed for this call, its INVITE just sent: the sockets pjsua opened for it are the conference's
        (in ``call_id``'s name) until :meth:`leave`."""
        if self._claims is not None:
            self._legs[id(leg)] = MediaGuard(self._claims.take(call_id))

    def leave(self, leg: object) -> None:
        """The leg is gone: its sockets go back."""
        guard = self._legs.pop(id(leg), None)
        if guard is not None and self._claims is not None:
            self._claims.release(guard.sockets)
            guard.close()

    def route_agent(self, audio: Any, on: bool) -> None:
        """The session's voice (the media port) -> a leg's ``audio``, on or off: the briefing."""
        if self.port is None:
            return
        try:
            self.port.route(audio, send=on, receive=False)
        except pj.Error as exc:
            raise sip_error("brief", exc) from None

    def join(self, audio: Any) -> None:
        """The caller and a leg's ``audio`` hear each other directly; the hold ends and the media port leaves both
        calls."""
        caller_audio = self.caller.audio_media()
        if caller_audio is None:
            raise CallGone("join", "the caller's leg has no audio")
        self.route_agent(audio, False)
        self.unhold()
        self.caller.stop_media()
        try:
            caller_audio.startTransmit(audio)
            audio.startTransmit(caller_audio)
        except pj.Error as exc:
            raise sip_error("join", exc) from None

    def close(self) -> None:
        """The caller's call is gone: the hold player goes (the legs' sockets stay theirs until each leaves)."""
        self._player = None
        self.port = None
