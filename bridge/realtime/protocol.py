"""The Realtime protocol core: wire text in, bridge events out; bridge commands in, wire text out. No I/O.

Like python-websockets' ``protocol.py`` or h11's ``Connection``, this object never touches a socket or an event loop:
``client.py`` pumps it. Everything about the wire comes from one :class:`~bridge.realtime.dialects.Dialect` table
(its encoders, its event names and its decoders); this module holds no branch on the dialect.

Bad input never raises: malformed JSON, a non-object, an event without a type, a field of the wrong shape or invalid
base64 become an :class:`~bridge.events.ErrorEvent` of class PROTOCOL; an unknown type becomes an
:class:`~bridge.events.UnknownEvent`. Both are logged and counted in :attr:`RealtimeProtocol.counters`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import orjson

from bridge import events as ev
from bridge.realtime.dialects import Dialect, UnsupportedCommand

log = logging.getLogger("bridge.realtime")

OVERSIZED_DELTA_BYTES = 96_000  # 2 s of 24 kHz PCM16 in one delta (the service sends ~50-200 ms); downlink.c: DELTA_MAX


class RealtimeProtocol:
    """Sans-I/O Realtime protocol for one session in one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.counters: Counter[str] = Counter()
        self.last_event_id: str | None = None
        self.usage_seconds: float | None = None  # the session's audio time so far, where the dialect reports it
        self.ended: ev.Closed | None = None  # the service said the session is over (Live ``session.closed``)
        self._encoders = dialect.encoders
        self._events = dialect.server_events
        self._decoders = {**dialect.decoders, **dialect.session_decoders()}

    # -- commands -> wire
    def encode(self, command: ev.Command) -> Sequence[str]:
        """Wire text frames for one command (a function output with ``respond`` is two frames).

        Raises :class:`~bridge.realtime.dialects.UnsupportedCommand` for a command the dialect does not have
        (its table's ``refused`` says why): the caller should have read the dialect's capabilities."""
        encoder = self._encoders.get(type(command))
        if encoder is None:
            reason = self.dialect.refused.get(type(command), "no encoder for it")
            raise UnsupportedCommand(self.dialect.name, command.kind, reason)
        return encoder(command)

    # -- wire -> events
    def decode(self, text: str | bytes | bytearray | memoryview) -> Sequence[ev.Event]:
        """One server frame to the bridge events it means: usually one, none for known events the bridge does not
        surface, several where the dialect's decoder splits one wire event."""
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            return (self._fault("malformed_json", "server frame is not valid JSON"),)
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            return (self._fault("malformed_event", "server event has no string 'type'"),)
        wire_type: str = obj["type"]
        event_id = obj.get("event_id")
        if isinstance(event_id, str):
            self.last_event_id = event_id
        canonical = self._events.get(wire_type)
        if canonical is None:
            self.counters["unknown"] += 1
            log.warning("unknown %s event type %r (ignored)", self.dialect.name, wire_type[:80])
            return (ev.UnknownEvent(type=wire_type[:120]),)
        try:
            events = self._decoders[canonical](obj)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            return (self._fault("malformed_event", f"{wire_type}: {exc}"),)
        self.counters[canonical] += 1
        for event in events:
            if isinstance(event, ev.AudioChunk) and len(event.audio) > OVERSIZED_DELTA_BYTES:
                self.counters["oversized_delta"] += 1  # played all the same; a sign of a misbehaving server
                log.warning("%s realtime: oversized audio delta of %d bytes", self.dialect.name, len(event.audio))
            elif isinstance(event, ev.UsageUpdated):
                self.usage_seconds = event.seconds
            elif isinstance(event, ev.Closed) and self.ended is None:
                self.ended = event
        return events

    def decoded_audio(self, deltas: int, event_id: str | None) -> None:
        """Audio deltas the C downlink decoded (:mod:`bridge.realtime.downlink`): counted as :meth:`decode` counts
        them, the last one's id kept."""
        self.counters["audio.delta"] += deltas
        if event_id is not None:
            self.last_event_id = event_id

    def _fault(self, code: str, message: str) -> ev.ErrorEvent:
        self.counters[code] += 1
        log.warning("%s realtime: %s", self.dialect.name, message)
        return ev.ErrorEvent(error_class=ev.ErrorClass.PROTOCOL, code=code, message=message, retryable=False)
