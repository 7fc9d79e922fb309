"""Listen-in's tap around a phone leg: idle it copies nothing; listening, both sides come out mixed frame by frame
(sum, clipped), a side that is missing lets the other through alone, and the wrapped playout buffer keeps every
attribute the media port looks up."""

from __future__ import annotations

import asyncio

import numpy as np

from bridge import events as ev
from bridge.audio.analysis import peak_frequency, tone
from bridge.audio.frames import FRAME_BYTES, FrameSink, FrameSource, StreamKernel, deliver_block
from bridge.call.tap import AGENT, CALLER, CALLER_OFFLOADED, SKEW_FRAMES, ListenTap, mix


class Playout:
    """A frame source with the extra method the native port looks for."""

    def __init__(self, pcm: bytes) -> None:
        self.pcm = pcm
        self.downstream: object = None

    def pop_frame(self) -> bytes:
        frame, self.pcm = self.pcm[:FRAME_BYTES], self.pcm[FRAME_BYTES:]
        return frame.ljust(FRAME_BYTES, b"\0")

    def set_downstream(self, port: object) -> None:
        self.downstream = port


class Leg:
    """Just enough of a PhoneLeg: what start_media was given, and an uplink offload on request."""

    def __init__(self, offload: object = None) -> None:
        self.call_id, self.caller, self.called = "c1", "+15550100", "100"
        self.events: asyncio.Queue[ev.Event] = asyncio.Queue()
        self.disconnected = asyncio.Event()
        self.offload = offload
        self.source: FrameSource | None = None
        self.sink: FrameSink | None = None

    def start_media(self, outbound: FrameSource, on_frame: FrameSink) -> None:
        self.source, self.sink = outbound, on_frame

    def uplink_offload(self, upsampler: StreamKernel) -> object:
        return self.offload


def tapped(agent: bytes, offload: object = None) -> tuple[ListenTap, Leg, Playout, list[bytes]]:
    leg, playout, sent = Leg(offload), Playout(agent), []
    tap = ListenTap(leg)  # type: ignore[arg-type]  # Leg has only what the tap uses of a PhoneLeg
    tap.start_media(playout, lambda pcm, t: sent.append(pcm))
    return tap, leg, playout, sent


def frames(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


def run(leg: Leg, caller: list[bytes], agent_frames: int) -> list[bytes]:
    """The media clock: the agent's frames taken, the caller's delivered; returns what the agent side gave."""
    assert leg.source is not None and leg.sink is not None
    out = [leg.source.pop_frame() for _ in range(agent_frames)]
    for frame in caller:
        leg.sink(frame, 0.0)
    return out


def test_idle_the_tap_copies_nothing_and_passes_everything_on() -> None:
    agent = tone(700, 0.2)
    tap, leg, playout, sent = tapped(agent)
    caller = frames(tone(1300, 0.2))
    assert b"".join(run(leg, caller, 10)) == agent  # the caller hears the playout as it was
    assert sent == caller  # the session gets every caller frame
    assert not tap.caller_frames and not tap.agent
    assert tap.take() == (0, b"")
    assert leg.source is not None
    leg.source.set_downstream("port")  # type: ignore[attr-defined]  # the native port looks it up by name
    assert playout.downstream == "port"


def test_listening_both_sides_come_out_mixed() -> None:
    tap, leg, _, sent = tapped(tone(700, 0.4, dbfs=-12))
    tap.start()
    caller = frames(tone(1300, 0.4, dbfs=-30))
    run(leg, caller, 20)
    flags, pcm = tap.take()
    assert flags == CALLER | AGENT and len(pcm) == 20 * FRAME_BYTES
    assert pcm == mix(b"".join(caller), tone(700, 0.4, dbfs=-12))
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    assert abs((peak_frequency(samples) or 0) - 700) < 5
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    assert spectrum[round(1300 * len(samples) / 8000)] > 20 * spectrum[round(1900 * len(samples) / 8000)]
    assert sent == caller  # listening takes nothing from the session
    assert tap.take() == (0, b"")  # taken once


def test_mix_clips_instead_of_wrapping() -> None:
    loud = np.full(160, 30000, dtype="<i2").tobytes()
    assert set(np.frombuffer(mix(loud, loud), dtype="<i2")) == {32767}
    low = np.full(160, -30000, dtype="<i2").tobytes()
    assert set(np.frombuffer(mix(low, low), dtype="<i2")) == {-32768}


def test_a_missing_side_lets_the_other_through_alone_after_a_few_frames() -> None:
    tap, leg, _, _ = tapped(tone(700, 1.0))
    tap.start()
    run(leg, [], SKEW_FRAMES)
    assert tap.take() == (0, b"")  # the caller's frames may still come
    run(leg, [], 1)
    flags, pcm = tap.take()
    assert flags == AGENT and pcm == tone(700, 1.0)[: (SKEW_FRAMES + 1) * FRAME_BYTES]
    run(leg, frames(tone(1300, 0.2))[: SKEW_FRAMES + 2], 0)
    flags, pcm = tap.take()
    assert flags == CALLER and len(pcm) == (SKEW_FRAMES + 2) * FRAME_BYTES


def test_with_the_uplink_offloaded_the_flags_say_the_caller_is_not_heard() -> None:
    tap, leg, _, _ = tapped(tone(700, 1.0), offload=object())
    assert tap.uplink_offload(object()) is leg.offload  # type: ignore[arg-type]  # any kernel: the leg's answer
    tap.start()
    run(leg, [], SKEW_FRAMES + 1)
    flags, _ = tap.take()
    assert flags == AGENT | CALLER_OFFLOADED


class Mirrored:
    """An uplink offload with a mirror (the native port's): what it was told."""

    def __init__(self) -> None:
        self.calls: list[bool] = []

    def mirror(self, on: bool) -> None:
        self.calls.append(on)


def test_an_offload_with_a_mirror_is_mirrored_while_listening_and_its_copies_are_never_sent_again() -> None:
    offload = Mirrored()
    tap, leg, _, sent = tapped(tone(700, 1.0), offload=offload)
    tap.uplink_offload(object())  # type: ignore[arg-type]  # any kernel: the leg's answer
    assert offload.calls == []  # nobody listens: the clock thread copies nothing
    tap.start()
    assert offload.calls == [True]
    assert leg.sink is not None and leg.source is not None
    caller = frames(tone(1300, 0.1, dbfs=-30))
    for frame in caller:
        leg.sink(frame, -123.0)  # the mirror's copies: their capture time negated
        leg.source.pop_frame()
    assert sent == []  # sent by the clock thread already: never twice
    flags, pcm = tap.take()
    assert flags == CALLER | AGENT and pcm == mix(b"".join(caller), tone(700, 0.1))
    tap.stop()
    assert offload.calls == [True, False]
    tap.start()
    leg.disconnected.set()
    tap.stop()  # after the hang-up the port may carry another call already: its mirror is left alone
    assert offload.calls == [True, False, True]


def test_stop_drops_what_was_waiting_and_copies_no_more() -> None:
    tap, leg, _, _ = tapped(tone(700, 1.0))
    tap.start()
    run(leg, frames(tone(1300, 0.1)), 5)
    tap.stop()
    run(leg, frames(tone(1300, 0.1)), 5)
    assert tap.take() == (0, b"")


def test_a_read_where_the_mirror_begins_passes_on_only_the_loops_frames_and_copies_them_all() -> None:
    caller = frames(tone(1300, 0.12, dbfs=-30))
    times = [1.0, 1.02, 1.04, -1.06, -1.08, -1.1]  # the uplink was bound mid-read: its copies' times negated
    got = []
    for blocks in (False, True):
        leg, session = Leg(), list[tuple[bytes, float]]()
        tap = ListenTap(leg)  # type: ignore[arg-type]  # Leg has only what the tap uses of a PhoneLeg
        tap.start_media(Playout(b""), lambda pcm, t, session=session: session.append((pcm, t)))
        tap.start()
        assert leg.sink is not None
        if blocks:
            assert hasattr(leg.sink, "on_frames")  # the tap takes a read in one call
            deliver_block(leg.sink, b"".join(caller), times)
        else:
            for frame, t in zip(caller, times, strict=True):
                leg.sink(frame, t)
        got.append((list(tap.caller_frames), session))
    assert got[1] == got[0]
    copies, passed = got[1]
    assert copies == caller and passed == list(zip(caller[:3], times[:3], strict=True))  # the session: the loop's
