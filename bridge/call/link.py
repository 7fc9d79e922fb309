"""The call's link to its current Realtime session: which session it is, how its events reach the call, and the
caller's audio sent to it.

Caller frames arrive on the loop thread (``PhoneLeg.start_media``), go through the uplink converter and are sent at
once as ``AppendAudio`` (the hot path has no queue of its own). Where the leg offers an uplink offload (a native
media port, ``ws://`` or ``wss://`` on the native TLS engine, PCM 24 kHz), the media clock thread does exactly that
itself, in C, with the same upsampler state; the link binds it to each session as sessions come and go. With no
session (recovering), the caller's frames are dropped: audio history is never replayed to a new session.

A dialect with ``continuous_audio`` (the service hears one stream, silence included) gets a frame every 20 ms of
the call's clock from the moment a session first hears the caller: a beat that finds the stream more than
:data:`SLACK_FRAMES` behind fills the gap with silence (the leg's RTP stalled), and frames more than that ahead
(the stalled frames arriving in a burst) are dropped: after a stall the service gets at most twice the slack at
once, never the stall's worth.

While a supervisor has taken the call over (:meth:`Link.mute`), the model hears nothing of the caller: each of the
caller's frames is sent as silence (a continuous stream keeps its clock), and the uplink offload is unbound so
that the caller's frames come back to the loop to be silenced. The echo guard does the same while it judges a
paused agent's barge-in (:meth:`Link.keep_on_loop`); otherwise it hears the caller's frames where the offload
sends them (:mod:`bridge.call.echo`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from bridge import events as ev
from bridge.audio import AudioConverter
from bridge.audio.frames import BYTES_PER_FRAME_PCM16, FRAME_MS
from bridge.audio.playout_native import CSink
from bridge.call.latency import LatencyMeter
from bridge.call.leg import UplinkOffload
from bridge.realtime.client import RealtimeClient
from bridge.realtime.profile import AgentProfile
from bridge.realtime.readset import Beats

SAMPLE_EVERY = 50  # caller frames: the capture and uplink segments are sampled once a second
SLACK_FRAMES = 2  # a continuous stream may be this many frames early or late before it is evened out
_SILENCE = bytes(BYTES_PER_FRAME_PCM16)


async def open_session(
    connect: Callable[[], Awaitable[RealtimeClient]],
    profile: Callable[[], AgentProfile],
    seen: Callable[[ev.Event], object],
    history: tuple[ev.AddText, ...] = (),
) -> RealtimeClient:
    """Connect and run the dialect's handshake (:meth:`RealtimeClient.open`); return once the service confirmed
    the session, so the first caller audio is in the configured format. ``profile`` is read once connected (a
    connector that fell back to another model may have changed the call's voice). ``seen`` gets the session's
    own events on the way; ``history`` is the text the session starts from (a rollover's summary). Raises
    :class:`~bridge.errors.ConnectError` if the service refuses or closes; never leaves the socket open."""
    client = await connect()

    async def on_event(event: ev.Event) -> None:
        seen(event)

    try:
        await client.open(profile(), on_event, history)
    except BaseException:  # refused, or timed out at the answer deadline: never leave the socket open
        await client.close()
        raise
    return client


class Link:
    def __init__(
        self, uplink: AudioConverter, latency: LatencyMeter, clock: Callable[[], float], *, continuous: bool = False
    ) -> None:
        self.continuous = continuous  # the dialect's continuous_audio (see the module doc)
        self.frames_filled = 0  # continuous: silent frames sent where the caller's were missing
        self.frames_dropped_burst = 0  # continuous: frames dropped as too far ahead of the clock
        self._stream: tuple[RealtimeClient, float] | None = None  # continuous: (its session, when it began)
        self._stream_sent = 0
        self.client: RealtimeClient | None = None
        self.uplink = uplink
        self._latency = latency
        self._clock = clock
        self.offload: UplinkOffload | None = None  # the caller's audio sent from the media clock, if the leg can
        self.frames_sent_here = 0  # caller frames this loop sent; the uplink offload counts its own
        self.frames_dropped_offline = 0
        self._sampled_at = 0.0  # when the offload's latency was last sampled
        self.caller_speaking = False  # the current session's VAD heard the caller start; the stop not handled yet
        self._appended_before = 0  # caller frames appended before the current session
        self.muted = False  # taken over by a supervisor: the model hears silence in place of the caller
        self.on_loop = False  # the caller's frames wanted on the loop meanwhile (keep_on_loop)
        self.downlink: AudioConverter | None = None  # the model's audio decoded in C with it (decode_audio)
        self.decoded_in_c = False  # the current session's socket decodes the model's audio in C
        self._deltas_before = (0, 0, 0)  # the model's audio deltas of earlier sessions: (decoded in C, all, sunk)
        self.needs_beat = True  # beat() has work: the socket reads on it, or a continuous stream's silence
        self.beats: Beats | None = None  # the call's metronome: its reader in C reads the sockets (start_beat)

    def read_with(self, beats: Beats) -> None:
        """Have each session's socket read by the reader in C that runs first on ``beats`` (the call's metronome,
        :mod:`bridge.realtime.readset`), from the next session attached on."""
        self.beats = beats

    def decode_audio(self, downlink: AudioConverter | None) -> None:
        """Have each session's socket decode the model's audio deltas in C with ``downlink`` (the call's downlink
        converter, :mod:`bridge.realtime.downlink`) from now on; None: in Python again. Where a socket cannot,
        its deltas come as before."""
        self.downlink = downlink
        if self.client is not None:
            self.decoded_in_c = self.client.decode_audio(downlink) and downlink is not None

    def sink_audio(self, sink: CSink | None) -> bool:
        """Have the current session's socket push the later runs of ``sink``'s item into the call's C ring itself
        (:meth:`RealtimeClient.sink_audio`); None: disarm. Only where its C downlink decodes the model's audio and no
        supervisor has the call (whose chunks are dropped)."""
        client = self.client
        if client is None:
            return sink is None
        if sink is not None and (not self.decoded_in_c or self.muted):
            return False
        return client.sink_audio(sink)

    def mute(self, on: bool) -> None:
        """Take-over (``on``) or hand-back: the caller's audio to the model is silenced, or flows again."""
        self.muted = on
        if on and self.decoded_in_c:
            self.sink_audio(None)  # the model's audio is dropped: every chunk comes to the loop
        self._offload_now()

    def keep_on_loop(self, on: bool) -> None:
        """While ``on``, the caller's frames come to the loop even where the offload could send them (the echo
        guard judging a paused agent's barge-in frame by frame, :mod:`bridge.call.echo`)."""
        self.on_loop = on
        self._offload_now()

    def _offload_now(self) -> None:
        if self.client is not None and self.offload is not None:
            self.client.offload_writes(None if self.muted or self.on_loop else self.offload)

    def swap(self, client: RealtimeClient | None) -> RealtimeClient | None:
        """Make ``client`` the call's session (None: none while recovering); returns the one it replaces."""
        old, self.client = self.client, client
        self._appended_before = self.frames_appended
        if old is not None:
            self._deltas_before = self._deltas(old)
        return old

    def _deltas(self, client: RealtimeClient | None) -> tuple[int, int, int]:
        c, every, sunk = self._deltas_before
        if client is None:
            return c, every, sunk
        client.settle_audio()  # what the C downlink pushed into the playout itself
        return c + client.deltas_in_c, every + client.protocol.counters["audio.delta"], sunk + client.deltas_sunk

    @property
    def media_counts(self) -> dict[str, dict[str, int]]:
        """``uplink``: who sent the caller's frames (:attr:`uplink_counts`); ``downlink``: who decoded the model's
        audio (:attr:`downlink_counts`)."""
        return {"uplink": self.uplink_counts, "downlink": self.downlink_counts}

    @property
    def downlink_counts(self) -> dict[str, int]:
        """The model's audio deltas decoded by the socket's C downlink and by the loop (every session so far); ``sunk``:
        of those decoded in C, the ones it pushed into the playout ring itself (the sink)."""
        c, every, sunk = self._deltas(self.client)
        return {"c": c, "loop": every - c, "sunk": sunk}

    def heard_caller(self, speaking: bool) -> None:
        """The caller started (their stop not handled yet) or stopped speaking, by the session's or our own VAD."""
        self.caller_speaking = speaking

    def attach(self, deliver: Callable[[ev.Event], None]) -> None:
        """Route the current session's events to ``deliver`` as they are decoded (no task in between). A new
        session: its VAD has heard nothing yet."""
        assert self.client is not None
        self.caller_speaking = False
        self.client.deliver_to(deliver)
        in_c = self.client.read_on_beat(True, self.beats)  # read on the beat (its reader: bridge.realtime.readset)
        self.needs_beat = self.continuous or not in_c
        if self.downlink is not None:  # the model's audio decoded from the socket's bytes in C
            self.decoded_in_c = self.client.decode_audio(self.downlink)
        if self.offload is not None and not self.muted and not self.on_loop:
            # the caller's frames go from the media clock thread to this socket; ours join them in order
            self.client.offload_writes(self.offload)

    @staticmethod
    def detach(client: RealtimeClient | None) -> None:
        if client is not None:
            client.deliver_to(None)  # what it still says stays in its own queue, unread
            client.read_on_beat(False)
            client.decode_audio(None)  # what it still says is decoded by the loop (its events stay queued, unread)
            client.offload_writes(None)  # the caller's audio comes back to the loop (and is dropped offline)

    def send(self, command: ev.Command) -> None:
        if self.client is not None:
            self.client.send(command)

    def on_frame(self, pcm: bytes, t_capture: float) -> None:
        """A caller frame on the loop thread: convert and send now (hot path)."""
        client = self.client
        if client is None or client.closed is not None:
            self.frames_dropped_offline += 1  # never replay audio history after a reconnect
            return
        if self.continuous and self._stream_frames(client) > SLACK_FRAMES:
            self.frames_dropped_burst += 1  # the slot of this frame was filled with silence already
            return
        client.send(ev.AppendAudio(self.uplink.process(_SILENCE if self.muted else pcm)))
        self._stream_sent += 1
        self.frames_sent_here += 1
        if self.frames_sent_here % SAMPLE_EVERY == 1:
            self._latency.sample("capture", (time.monotonic() - t_capture) * 1000)
            if client.last_send_latency_s:
                self._latency.sample("uplink", client.last_send_latency_s * 1000)

    def beat(self) -> None:
        """The beat: let the socket be read (a continuous stream's silence first, where the caller's frames
        stalled)."""
        client = self.client
        if client is None:
            return
        if self.continuous and self._stream is not None and client.closed is None:
            while self._stream_frames(client) < -SLACK_FRAMES:  # the caller's frames stalled: silence in their place
                client.send(ev.AppendAudio(self.uplink.process(_SILENCE)))
                self._stream_sent += 1
                self.frames_filled += 1
        client.beat()

    def sample(self) -> None:
        """Once a second (the call's checks ask more often), the offload's capture and uplink segments."""
        client = self.client
        if client is None or self.offload is None:
            return
        now = self._clock()
        if now - self._sampled_at >= 1.0 and client.offloaded:
            self._sampled_at = now
            capture_s, write_s = self.offload.last_latency_s()
            if capture_s or write_s:
                self._latency.sample("capture", capture_s * 1000)
                self._latency.sample("uplink", write_s * 1000)

    def _stream_frames(self, client: RealtimeClient) -> int:
        """How many frames the session's stream is ahead of the clock (negative: behind), counting the next one."""
        now = self._clock()
        if self._stream is None or self._stream[0] is not client:
            self._stream, self._stream_sent = (client, now), 0  # a new session: its stream starts now
        due = int((now - self._stream[1]) * 1000.0 / FRAME_MS) + 1
        return self._stream_sent + 1 - due

    @property
    def uplink_counts(self) -> dict[str, int]:
        """Caller frames sent by the media clock thread (the offload) and by this loop, and those dropped while
        no session could take them."""
        off = self.offload
        return {
            "clock_thread": off.frames_sent if off is not None else 0,
            "loop": self.frames_sent_here,
            "dropped": self.frames_dropped_offline + (off.frames_dropped if off is not None else 0),
        }

    @property
    def session_sent_ms(self) -> float:
        """The caller's audio the current session has been sent, in ms (its VAD's timeline)."""
        return (self.frames_appended - self._appended_before) * FRAME_MS

    @property
    def frames_appended(self) -> int:
        """Caller frames sent to the model, by this loop and by the uplink offload."""
        return self.frames_sent_here + (self.offload.frames_sent if self.offload is not None else 0)
