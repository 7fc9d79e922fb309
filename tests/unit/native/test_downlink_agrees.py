"""The C downlink (``bridge/native/downlink.c``) and the loop's own path (``websockets`` frames, then
:meth:`RealtimeProtocol.decode`: orjson and the dialect's decoder) read every server frame the same way: what C is not
sure of goes to the loop raw. Each stream is fed to C in random reads; the bytes C passes on are decoded by the loop's
path, the runs it decodes are taken as the client takes them; the outcome (audio per item and content part, the other
events, the errors, the protocol's counters and last event id) must equal the loop's path alone.

The audio goes through the G.711 table (a passthrough session): stateless, so the same bytes decoded anywhere give the
same PCM, whichever path took them."""

from __future__ import annotations

import base64
import itertools
import logging
import os
import random
import time
from collections.abc import Callable, Sequence

import pytest

from bridge import events as ev
from bridge.audio.passthrough import PassthroughDownlink
from bridge.realtime import dialects
from bridge.realtime.downlink import AudioRun, DownlinkScanner, audio_types, load
from bridge.realtime.protocol import RealtimeProtocol

pytestmark = pytest.mark.skipif(load() is None, reason="no C compiler")

AUDIO = {d: audio_types(dialects.get_dialect(d).server_events)[0] for d in ("ga", "beta", "live")}
ITEMS = {"ga": True, "beta": True, "live": False}  # live: one continuous stream (no ids)
TABLE = PassthroughDownlink("ulaw")
Outcome = tuple[list[object], dict[str, int], str | None]


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="bridge.realtime")  # every bad frame is a warning: thousands here


def frame(payload: bytes) -> bytes:
    """A server text frame (unmasked, final)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def unframe(buf: bytes, each: Callable[[bytes], None]) -> bytes:
    """Hand each whole frame's payload in ``buf`` to ``each``; the rest (a partial frame) back."""
    while len(buf) >= 2:
        n, head = buf[1] & 127, 2
        if n == 126:
            n, head = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            n, head = int.from_bytes(buf[2:10], "big"), 10
        if len(buf) < head + n:
            break
        each(buf[head : head + n])
        buf = buf[head + n :]
    return buf


def _record(out: list[object], events: Sequence[ev.Event]) -> None:
    for event in events:
        if isinstance(event, ev.AudioChunk):
            out.append(("audio", event.response_id, event.item_id, event.content_index, TABLE.process(event.audio)))
        else:
            out.append(event)


def _merged(out: list[object]) -> list[object]:
    """Consecutive audio of one item and content part as one piece (C makes runs, the loop one chunk a delta)."""
    merged: list[object] = []
    for piece in out:
        last = merged[-1] if merged else None
        if isinstance(piece, tuple) and isinstance(last, tuple) and last[:4] == piece[:4]:
            merged[-1] = (*last[:4], last[4] + piece[4])
        else:
            merged.append(piece)
    return merged


def loop_path(dialect: str, payloads: Sequence[bytes]) -> Outcome:
    protocol = RealtimeProtocol(dialects.get_dialect(dialect))
    out: list[object] = []
    for payload in payloads:
        _record(out, protocol.decode(payload))
    return _merged(out), dict(protocol.counters), protocol.last_event_id


def c_path(
    dialect: str,
    payloads: Sequence[bytes],
    cuts: Sequence[int] = (),
    stats: list[int] | None = None,
    later: Sequence[str] = (),
) -> Outcome:
    """The stream of ``payloads`` read in pieces cut at ``cuts``, through the scanner as the socket feeds it.
    ``stats``: the deltas C decoded are added to its first element; ``later``: the events a run carries past."""
    lib = load()
    assert lib is not None
    scan = DownlinkScanner(lib, (AUDIO[dialect],), later)
    scan.frames_only()
    assert scan.decode(TABLE, items=ITEMS[dialect])
    protocol = RealtimeProtocol(dialects.get_dialect(dialect))
    out: list[object] = []
    stream = b"".join(frame(p) for p in payloads)
    bounds = [0, *sorted(cuts), len(stream)]
    pending = b""
    try:
        for start, end in itertools.pairwise(bounds):
            for piece in scan.feed(stream[start:end]):
                if isinstance(piece, AudioRun):
                    protocol.decoded_audio(piece.deltas, piece.event_id)
                    out.append(("audio", piece.response_id, piece.item_id, 0, piece.pcm))
                else:
                    pending = unframe(pending + piece, lambda p: _record(out, protocol.decode(p)))
        if stats is not None:
            stats[0] += scan.counters()["deltas"]
    finally:
        scan.close()
    assert pending == b""
    return _merged(out), dict(protocol.counters), protocol.last_event_id


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def delta_event(delta: bytes, *extra: bytes, type_: bytes = b'"response.output_audio.delta"') -> bytes:
    """A GA audio delta's JSON with ``extra`` members (raw JSON text) after its own."""
    members = [b'"type":' + type_, b'"event_id":"ev_1"', b'"response_id":"resp_1"', b'"item_id":"item_1"']
    members += [b'"output_index":0', b'"content_index":0', b'"delta":"' + delta + b'"', *extra]
    return b"{" + b",".join(members) + b"}"


A, B = b64(bytes(range(0, 60))), b64(bytes(range(100, 160)))
LONG = b"x" * 300

HOSTILE = {
    "an escaped type key after the audio type": delta_event(A, b'"t\\u0079pe":"response.done"'),
    "an escaped type key before it": b'{"t\\u0079pe":"response.done",' + delta_event(A)[1:],
    "a duplicate type": delta_event(A, b'"type":"response.done"'),
    "an escaped type value": delta_event(A, type_=b'"response.output_audio.d\\u0065lta"'),
    "an escaped duplicate delta": delta_event(A, b'"d\\u0065lta":"' + B + b'"'),
    "a duplicate delta": delta_event(A, b'"delta":"' + B + b'"'),
    "a duplicate item id": delta_event(A, b'"item_id":"item_2"'),
    "a duplicate event id": delta_event(A, b'"event_id":"ev_2"'),
    "a bad literal": delta_event(A, b'"flag":tru'),
    "a capitalised literal": delta_event(A, b'"flag":True'),
    "a number with a leading zero": delta_event(A, b'"n":01'),
    "a number that overflows": delta_event(A, b'"n":1e999'),
    "a long string with a raw control character": delta_event(A, b'"text":"' + LONG + b"\x01" + LONG + b'"'),
    "a short string with a raw control character": delta_event(A, b'"text":"a\x1fb"'),
    "a raw control character in the delta": delta_event(A[:20] + b"\x01" + A[20:]),
    "a lone high surrogate": delta_event(A, b'"text":"\\ud800"'),
    "a lone low surrogate": delta_event(A, b'"text":"\\udc00"'),
    "a high surrogate before a letter": delta_event(A, b'"text":"\\ud800\\u0041"'),
    "a bad escape": delta_event(A, b'"text":"\\x41"'),
    "a non-numeric content index": delta_event(A, b'"content_index":"zero"'),
    "a second content part": delta_event(A).replace(b'"content_index":0', b'"content_index":1'),
    "a boolean content index": delta_event(A).replace(b'"content_index":0', b'"content_index":false'),
    "invalid UTF-8 in the item id": delta_event(A).replace(b'"item_1"', b'"item_\xff"'),
    "a UTF-8 surrogate in the item id": delta_event(A).replace(b'"item_1"', b'"item_\xed\xa0\x80"'),
    "an overlong form in a string": delta_event(A, b'"text":"\xc0\xaf"'),
    "invalid UTF-8 in a long string": delta_event(A, b'"text":"' + LONG + b"\xfe" + LONG + b'"'),
    "invalid UTF-8 in the event id": delta_event(A).replace(b'"ev_1"', b'"ev_\x80"'),
    "an escaped event id": delta_event(A).replace(b'"ev_1"', b'"ev_\\u0031"'),
    "a long event id": delta_event(A).replace(b'"ev_1"', b'"' + b"e" * 200 + b'"'),
    "an escaped slash in the delta": delta_event(b64(bytes([255, 255, 255] * 10)).replace(b"/", b"\\/")),
    "trailing bytes": delta_event(A) + b"x",
    "a byte order mark": b"\xef\xbb\xbf" + delta_event(A),
    "deep nesting": delta_event(A, b'"deep":' + b"[" * 100 + b"]" * 100),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_c_reads_each_hostile_event_as_the_loops_parser_does(name: str) -> None:
    payloads = [delta_event(A), HOSTILE[name], delta_event(B)]
    expected = loop_path("ga", payloads)
    assert c_path("ga", payloads) == expected, name
    stream_len = sum(len(frame(p)) for p in payloads)
    rng = random.Random(name)
    for _ in range(5):  # and in random reads
        cuts = rng.sample(range(1, stream_len), 3)
        assert c_path("ga", payloads, cuts) == expected, (name, cuts)


def test_a_duplicate_type_is_the_last_one_as_orjson_reads_it() -> None:
    payload = delta_event(A, b'"type":"response.done"')
    out, counters, _ = c_path("ga", [payload])
    assert [type(e).__name__ for e in out] == ["ResponseDone"]
    assert counters.get("audio.delta", 0) == 0


def test_an_escaped_duplicate_delta_plays_the_last_one() -> None:
    out, _, _ = c_path("ga", [delta_event(A, b'"d\\u0065lta":"' + B + b'"')])
    assert out == [("audio", "resp_1", "item_1", 0, TABLE.process(base64.b64decode(B)))]


@pytest.mark.parametrize(
    "name", ["a bad literal", "a lone high surrogate", "a long string with a raw control character"]
)
def test_invalid_json_is_never_played_it_is_malformed(name: str) -> None:
    out, counters, _ = c_path("ga", [HOSTILE[name]])
    assert len(out) == 1 and isinstance(out[0], ev.ErrorEvent) and out[0].code == "malformed_json"
    assert counters == {"malformed_json": 1}


def test_invalid_utf8_in_an_id_is_malformed_json_and_never_raises_out_of_feed() -> None:
    out, _, _ = c_path("ga", [HOSTILE["invalid UTF-8 in the item id"], delta_event(B)])
    assert isinstance(out[0], ev.ErrorEvent) and out[0].code == "malformed_json"
    assert out[1] == ("audio", "resp_1", "item_1", 0, TABLE.process(base64.b64decode(B)))


def test_a_non_numeric_content_index_is_the_loops_malformed_event() -> None:
    out, _, _ = c_path("ga", [HOSTILE["a non-numeric content index"]])
    assert len(out) == 1 and isinstance(out[0], ev.ErrorEvent) and out[0].code == "malformed_event"


def test_the_last_event_id_is_the_last_deltas_that_had_one() -> None:
    with_id, without = delta_event(A), delta_event(B).replace(b'"event_id":"ev_1",', b"")
    assert b"event_id" not in without
    payloads = [with_id, without]
    assert c_path("ga", payloads) == loop_path("ga", payloads)
    assert c_path("ga", payloads)[2] == "ev_1"


def test_a_disguised_event_amid_a_run_is_not_carried_past_it() -> None:
    """A transcript delta's type with an escaped ``type`` key after it is a ``response.done`` to orjson: it stays in
    its place between the deltas, never moved after the run as a transcript delta would be."""
    disguised = b'{"type":"response.output_audio_transcript.delta","delta":"Hi","t\\u0079pe":"response.done"}'
    payloads = [delta_event(A), disguised, delta_event(B)]
    out, _, _ = c_path("ga", payloads, later=("response.output_audio_transcript.delta",))
    assert [type(p).__name__ for p in out] == ["tuple", "ResponseDone", "tuple"]
    assert c_path("ga", payloads, later=("response.output_audio_transcript.delta",)) == loop_path("ga", payloads)


# -- the differential fuzz ---------------------------------------------------------------------------------------

IDS = [b"item_1", b"item_2", b"r\xc3\xa9p"] * 4 + [b"x" * 130]  # a long one: C leaves it to the loop
OTHER_TYPES = [
    b"response.done",
    b"response.created",
    b"response.output_audio_transcript.delta",
    b"response.audio_transcript.delta",
    b"error",
    b"made.up",
]
JUNK = [
    b"tru",
    b"nul",
    b"True",
    b"01",
    b"1.",
    b"-",
    b"1e999",
    b"1e5",
    b"-0.5e-3",
    b"123456789012345678901234",
    b'"\\ud800"',
    b'"\\udc00"',
    b'"\\ud83d\\ude00"',
    b'"\\u00e9"',
    b'"\\x"',
    b'"\xff"',
    b'"\xed\xa0\x80"',
    b'"\xc3\xa9"',
    b'"\xf0\x9f\x98\x80"',
    b'"a\x01b"',
    b'"\x7f"',
    b"[" * 70 + b"]" * 70,
    b'{"a":[1,2,{"b":null}]}',
    b"[]",
    b"{}",
]


def _string(rng: random.Random, text: bytes) -> bytes:
    if text and rng.random() < 0.08:  # one character escaped
        at = rng.randrange(len(text))
        text = text[:at] + b"\\u%04x" % text[at] + text[at + 1 :]
    return b'"' + text + b'"'


def _delta(rng: random.Random) -> bytes:
    data = rng.randbytes(rng.choice([0, 1, 3, 30, 200, 700]))
    text = b64(data)
    roll = rng.random()
    if roll < 0.1:
        text = text.replace(b"/", b"\\/")
    elif roll < 0.15 and text:
        at = rng.randrange(len(text))
        text = text[:at] + rng.choice([b"*", b"=", b"\x01", b"\xff", b"\\n", b" "]) + text[at:]
    elif roll < 0.2:
        text = text[:-1]
    return b'"' + text + b'"'


def _members(rng: random.Random, dialect: str) -> list[tuple[bytes, bytes]]:
    if rng.random() < 0.65:
        members = [(b"type", _string(rng, AUDIO[dialect].encode()))]
        for key in (b"event_id", b"response_id", b"item_id"):
            if rng.random() < 0.9:
                value = rng.choice(IDS) if key != b"event_id" else b"ev_%d" % rng.randrange(5)
                members.append((key, _string(rng, value) if rng.random() < 0.95 else rng.choice([b"null", b"7"])))
        members.append((b"output_index", b"0"))
        if rng.random() < 0.9:
            members.append((b"content_index", rng.choice([b"0"] * 8 + [b"1", b'"0"', b"null", b"true", b"0.0"])))
        if rng.random() < 0.97:
            members.append((b"delta", _delta(rng)))
    else:
        members = [(b"type", _string(rng, rng.choice(OTHER_TYPES)))]
        members += [(b"event_id", b'"ev_o"'), (b"item_id", b'"item_1"'), (b"delta", b'"hello"')]
        if rng.random() < 0.3:
            members.append((b"response", b'{"id":"resp_1","status":"completed"}'))
    if rng.random() < 0.3:
        rng.shuffle(members)
    return members


def _mutate(rng: random.Random, members: list[tuple[bytes, bytes]], dialect: str) -> None:
    roll = rng.randrange(6)
    at = rng.randrange(len(members) + 1)
    if roll == 0:  # a duplicate of a key read
        key = rng.choice([b"type", b"delta", b"item_id", b"response_id", b"event_id", b"content_index"])
        value = {
            b"type": rng.choice([_string(rng, rng.choice([AUDIO[dialect].encode(), *OTHER_TYPES])), b"7", b"null"]),
            b"delta": _delta(rng),
            b"content_index": rng.choice([b"0", b"1"]),
        }.get(key, _string(rng, rng.choice(IDS)))
        members.insert(at, (key, value))
    elif roll == 1 and members:  # an escaped key
        i = rng.randrange(len(members))
        key, value = members[i]
        j = rng.randrange(len(key))
        members[i] = (key[:j] + b"\\u%04x" % key[j] + key[j + 1 :], value)
    elif roll == 2:  # junk: bad literals, numbers, strings
        members.insert(at, (b"x", rng.choice(JUNK)))
    elif roll == 3:  # a long string holding something
        long, odd = b"y" * rng.choice([10, 300]), rng.choice([b"\x01", b"\xff", b"\\ud800", b"\x1f", b"ok"])
        members.insert(at, (b"text", b'"' + long + odd + long + b'"'))
    elif roll == 4 and members:  # an id made of bad or odd UTF-8
        bad = rng.choice([b"\xff", b"\xc0\xaf", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\xe2\x82\xac"])
        members.insert(at, (rng.choice([b"item_id", b"event_id", b"response_id"]), b'"i' + bad + b'"'))
    else:  # duplicate an existing member whole
        if members:
            members.insert(at, rng.choice(members))


def _render(rng: random.Random, members: list[tuple[bytes, bytes]]) -> bytes:
    sep = rng.choice([b"", b" ", b"\n"]) if rng.random() < 0.2 else b""
    text = b"{" + (b"," + sep).join(b'"' + k + b'":' + sep + v for k, v in members) + b"}"
    roll = rng.random()
    if roll < 0.03:
        text = text[: rng.randrange(len(text))]
    elif roll < 0.06:
        at = rng.randrange(len(text))
        text = text[:at] + bytes([rng.randrange(256)]) + text[at + 1 :]
    elif roll < 0.08:
        text += rng.choice([b" ", b"\n", b"x", b"\x00", b"}"])
    return text


def random_stream(rng: random.Random, dialect: str) -> list[bytes]:
    payloads = []
    for _ in range(rng.randrange(1, 9)):
        members = _members(rng, dialect)
        for _ in range(rng.choice([0, 0, 1, 1, 2])):
            _mutate(rng, members, dialect)
        payloads.append(_render(rng, members))
    return payloads


FUZZ_SECONDS = float(os.environ.get("CALLBRIDGE_FUZZ_SECONDS", "20"))
FUZZ_CASES = int(os.environ.get("CALLBRIDGE_FUZZ_CASES", "15000"))
FUZZ_SEED = int(os.environ.get("CALLBRIDGE_FUZZ_SEED", "0"))  # the first seed (a longer hunt starts elsewhere)


def test_c_and_the_loops_path_agree_on_random_and_hostile_streams() -> None:
    """Seeded cases, up to FUZZ_CASES or FUZZ_SECONDS (whichever comes first); a failure names its seed."""
    deadline = time.monotonic() + FUZZ_SECONDS
    cases, taken, in_c = 0, 0, [0]
    for seed in range(FUZZ_SEED, FUZZ_SEED + FUZZ_CASES):
        if time.monotonic() > deadline:
            break
        rng = random.Random(seed)
        dialect = rng.choice(["ga", "ga", "beta", "live"])
        payloads = random_stream(rng, dialect)
        stream_len = sum(len(frame(p)) for p in payloads)
        cuts = rng.sample(range(1, stream_len), min(stream_len - 1, rng.randrange(5)))
        expected = loop_path(dialect, payloads)
        assert c_path(dialect, payloads, cuts, in_c) == expected, (seed, dialect, payloads, cuts)
        taken += expected[1].get("audio.delta", 0)
        cases += 1
    assert cases >= 100, f"only {cases} cases ran in {FUZZ_SECONDS} s"
    assert taken > cases and in_c[0] > taken // 4  # audio plays, much of it taken by C
