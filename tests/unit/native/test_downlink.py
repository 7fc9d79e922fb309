"""The downlink in C (``bridge/native/downlink.c``, :mod:`bridge.realtime.downlink`): real server frames, built
with ``websockets``' own framing, go in as a socket's reads; audio deltas come out as 8 kHz PCM equal to what the
loop's own path (the dialect's decoder, the call's converter) makes of them, every other frame comes out as its own
bytes, in order."""

from __future__ import annotations

import base64
import math
import struct

import orjson
import pytest
from websockets.frames import Frame, Opcode

from bridge.audio.passthrough import PassthroughDownlink
from bridge.audio.resample import Downsampler
from bridge.realtime import dialects
from bridge.realtime.downlink import AudioRun, DownlinkScanner, audio_types, commuting_types, load

pytestmark = pytest.mark.skipif(load() is None, reason="no C compiler")


def frame(payload: bytes, opcode: Opcode = Opcode.TEXT, fin: bool = True) -> bytes:
    """A server frame (unmasked), as websockets writes it."""
    return Frame(opcode, payload, fin=fin).serialize(mask=False)


def tone(ms: int, hz: float = 440.0, rate: int = 24000, start: int = 0) -> bytes:
    n = rate * ms // 1000
    return b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * (start + i) / rate))) for i in range(n))


def ga_delta(audio: bytes, item: str = "item_1", response: str = "resp_1", event: str = "ev_1") -> bytes:
    event_json = {
        "type": "response.output_audio.delta",
        "event_id": event,
        "response_id": response,
        "item_id": item,
        "output_index": 0,
        "content_index": 0,
        "delta": base64.b64encode(audio).decode(),
    }
    return orjson.dumps(event_json)


def beta_delta(audio: bytes, item: str = "item_1") -> bytes:
    return orjson.dumps(
        {
            "type": "response.audio.delta",
            "event_id": "e",
            "response_id": "r",
            "item_id": item,
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(audio).decode(),
        }
    )


def scanner(dialect: str = "ga", converter: object | None = None) -> DownlinkScanner:
    lib = load()
    assert lib is not None
    scan = DownlinkScanner(lib, audio_types(dialects.get_dialect(dialect).server_events))
    scan.frames_only()
    assert scan.decode(converter if converter is not None else Downsampler())  # type: ignore[arg-type]
    return scan


def pieces(scan: DownlinkScanner, *reads: bytes) -> list[bytes | AudioRun]:
    out: list[bytes | AudioRun] = []
    for read in reads:
        out += list(scan.feed(read))
    return out


def test_the_dialects_name_their_audio_deltas() -> None:
    assert audio_types(dialects.get_dialect("ga").server_events) == ("response.output_audio.delta",)
    assert "response.audio.delta" in audio_types(dialects.get_dialect("beta").server_events)
    assert audio_types(dialects.get_dialect("live").server_events) == ("session.output_audio.delta",)


@pytest.mark.parametrize(("dialect", "make"), [("ga", ga_delta), ("beta", beta_delta)])
def test_deltas_become_the_pcm_the_loops_path_makes(dialect: str, make: object) -> None:
    audio = [tone(100, start=2400 * i) for i in range(5)]
    reference = Downsampler()
    expected = b"".join(reference.process(a) for a in audio)
    scan = scanner(dialect)
    out = pieces(scan, b"".join(frame(make(a)) for a in audio))  # type: ignore[operator]
    assert len(out) == 1 and isinstance(out[0], AudioRun)
    assert out[0].pcm == expected and out[0].deltas == 5 and out[0].item_id == "item_1"
    assert scan.counters()["deltas"] == 5


def test_other_frames_pass_as_their_bytes_in_order() -> None:
    created = frame(orjson.dumps({"type": "response.created", "response": {"id": "resp_1"}}))
    done = frame(orjson.dumps({"type": "response.output_audio.done", "item_id": "item_1", "response_id": "resp_1"}))
    ping = frame(b"hi", Opcode.PING)
    a, b = ga_delta(tone(40)), ga_delta(tone(40, start=960))
    out = pieces(scanner(), created + frame(a) + ping + frame(b) + done)
    kinds = [type(p).__name__ for p in out]
    assert kinds == ["bytes", "AudioRun", "bytes", "AudioRun", "bytes"]
    assert out[0] == created and out[2] == ping and out[4] == done


def test_a_frame_split_across_reads_waits_for_its_rest() -> None:
    data = frame(ga_delta(tone(100))) + frame(orjson.dumps({"type": "x"}))
    reference = Downsampler().process(tone(100))
    scan = scanner()
    runs: list[bytes | AudioRun] = []
    for cut in (1, 3, 7, 500, len(data) - 5):  # header, length, payload and the next frame cut apart
        scan = scanner()
        runs = pieces(scan, data[:cut], data[cut:])
        audio = b"".join(p.pcm for p in runs if isinstance(p, AudioRun))
        passed = b"".join(p for p in runs if isinstance(p, bytes))
        assert audio == reference and passed == frame(orjson.dumps({"type": "x"})), cut


def test_a_new_item_starts_a_new_run_and_a_fresh_filter() -> None:
    a, b = tone(60), tone(60, hz=1000)
    out = pieces(scanner(), frame(ga_delta(a, item="i1")) + frame(ga_delta(b, item="i2")))
    assert [p.item_id for p in out if isinstance(p, AudioRun)] == ["i1", "i2"]
    fresh = Downsampler().process(b)
    assert isinstance(out[1], AudioRun) and out[1].pcm == fresh


def test_fragmented_and_long_frames_pass_untouched() -> None:
    text = ga_delta(tone(40))
    fragmented = frame(text[:50], fin=False) + frame(text[50:], Opcode.CONT)
    out = pieces(scanner(), fragmented)
    assert b"".join(p for p in out if isinstance(p, bytes)) == fragmented
    assert not any(isinstance(p, AudioRun) for p in out)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"type": "response.output_audio.delta", "item_id": "i", "delta": "AAA*"}',  # not base64
        b'{"type": "response.output_audio.delta", "item_id": "i", "delta": "AAA"}',  # a partial quantum
        b'{"type": "response.output_audio.delta", "item_id": "i", "delta": "AAAA"',  # not JSON
        b'{"type": "response.output_audio.delta", "item_id": 7, "delta": "AAAA"}',  # an id that is no string
        b'{"type": "response.output_audio.delta", "item_id": "i", "delta": "AA=="}',  # an odd byte count
    ],
)
def test_audio_that_does_not_decode_is_bad_and_goes_to_the_loop(payload: bytes) -> None:
    scan = scanner()
    out = pieces(scan, frame(payload))
    assert out == [frame(payload)]
    assert scan.counters()["bad"] == 1


def test_the_loops_decoder_makes_an_error_event_of_a_bad_frame() -> None:
    from bridge import events as ev
    from bridge.realtime.protocol import RealtimeProtocol

    payload = b'{"type": "response.output_audio.delta", "item_id": "i", "delta": "AAA*"}'
    decoded = RealtimeProtocol(dialects.get_dialect("ga")).decode(payload)
    assert isinstance(decoded[0], ev.ErrorEvent)


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_g711_passes_through_its_table(law: str) -> None:
    codes = bytes(range(256)) * 2
    converter = PassthroughDownlink(law)  # type: ignore[arg-type]
    out = pieces(scanner("beta", converter), frame(beta_delta(codes)))
    assert isinstance(out[0], AudioRun) and out[0].pcm == converter.process(codes)


def test_off_passes_audio_raw() -> None:
    scan = scanner()
    scan.decode(None)
    data = frame(ga_delta(tone(20)))
    assert pieces(scan, data) == [data]


def test_the_handshake_is_passed_and_frames_follow() -> None:
    lib = load()
    assert lib is not None
    scan = DownlinkScanner(lib, ("response.output_audio.delta",))
    scan.decode(Downsampler())
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    data = head + frame(ga_delta(tone(20)))
    out = pieces(scan, data[:20], data[20:40], data[40:])
    assert b"".join(p for p in out if isinstance(p, bytes)) == head
    assert sum(isinstance(p, AudioRun) for p in out) == 1


def test_a_masked_frame_ends_the_scan() -> None:
    masked = Frame(Opcode.TEXT, ga_delta(tone(20))).serialize(mask=True)
    after = frame(ga_delta(tone(20)))
    scan = scanner()
    out = pieces(scan, masked + after)
    assert b"".join(p for p in out if isinstance(p, bytes)) == masked + after
    assert scan.counters()["state"] == 2


def test_a_continuous_stream_is_one_filter_with_no_ids() -> None:
    """GPT-Live: ``session.output_audio.delta`` in the same JSON text frames, one stream (items off): never reset,
    the ids empty, as the dialect's own decoder gives them."""
    lib = load()
    assert lib is not None
    scan = DownlinkScanner(lib, audio_types(dialects.get_dialect("live").server_events))
    scan.frames_only()
    assert scan.decode(Downsampler(), items=False)
    audio = [tone(100, start=2400 * i) for i in range(4)]
    events = [
        orjson.dumps({"type": "session.output_audio.delta", "item_id": f"x{i}", "delta": base64.b64encode(a).decode()})
        for i, a in enumerate(audio)
    ]
    reference = Downsampler()
    out = pieces(scan, b"".join(frame(e) for e in events))
    assert len(out) == 1 and isinstance(out[0], AudioRun)
    assert out[0].item_id == "" and out[0].response_id == ""
    assert out[0].pcm == b"".join(reference.process(a) for a in audio)


def test_a_converter_with_no_c_form_leaves_the_deltas_to_the_loop() -> None:
    from bridge.audio.resample import Downsampler16k

    lib = load()
    assert lib is not None
    scan = DownlinkScanner(lib, ("session.output_audio.delta",))
    scan.frames_only()
    assert not scan.decode(Downsampler16k()) and not scan.decoding
    data = frame(orjson.dumps({"type": "session.output_audio.delta", "delta": "AAAA"}))
    assert pieces(scan, data) == [data]


def test_transcript_deltas_amid_a_run_follow_it_and_nothing_else_moves() -> None:
    """The service interleaves the transcript's deltas with the audio's: a run carries them past (they come right
    after it, in their order), so a read's audio stays one chunk; any other event still ends the run in place."""
    lib = load()
    assert lib is not None
    ga = dialects.get_dialect("ga")
    scan = DownlinkScanner(lib, audio_types(ga.server_events), commuting_types(ga.server_events))
    scan.frames_only()
    assert scan.decode(Downsampler())

    def text(kind: str, delta: str = "") -> bytes:
        return frame(orjson.dumps({"type": kind, "item_id": "item_1", "response_id": "resp_1", "delta": delta}))

    first = text("response.output_audio_transcript.delta", "Hel")
    second = text("response.output_audio_transcript.delta", "lo")
    done = text("response.output_audio.done")
    audio = [tone(40, start=960 * i) for i in range(3)]
    wire = first + frame(ga_delta(audio[0])) + second + frame(ga_delta(audio[1])) + done + frame(ga_delta(audio[2]))
    out = pieces(scan, wire)
    assert [type(p).__name__ for p in out] == ["bytes", "AudioRun", "bytes", "bytes", "AudioRun"]
    assert out[0] == first  # no run under way yet: in place
    assert isinstance(out[1], AudioRun) and out[1].deltas == 2
    assert out[2] == second and out[3] == done  # carried past the run, then the done where it was
    reference = Downsampler()
    assert b"".join(p.pcm for p in out if isinstance(p, AudioRun)) == b"".join(reference.process(a) for a in audio)
