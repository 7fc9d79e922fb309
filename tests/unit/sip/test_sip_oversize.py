"""Messages over a worker's SIP buffer (bridge.sip.oversize): refused with 513, cut ones with 400, and a stream's next
message read from its first byte, however the stream is split into reads."""

from __future__ import annotations

import random
import re

import pytest

from bridge.sip.oversize import (
    BODY_SHORT,
    CUT_SHORT,
    MAX_MESSAGE,
    MAX_PACKET,
    TOO_LARGE,
    StreamGuard,
    cut_or_too_large,
    too_large_answer,
)


def request(
    method: str = "INVITE", size: int = 600, *, call_id: str = "c1", to_tag: str = "", lf: bool = False
) -> bytes:
    """A request of ``size`` bytes (or its minimum): headers, padding headers, an SDP-like body."""
    body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    lines = [
        f"{method} sip:1000@127.0.0.2 SIP/2.0",
        "Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK1",
        "v: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK0",
        "From: <sip:a@127.0.0.1>;tag=f1",
        "To: <sip:1000@127.0.0.2>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: 1 {method}",
    ]

    def build() -> bytes:
        end = "\n" if lf else "\r\n"
        head = [*lines, "Content-Type: application/sdp", f"Content-Length: {len(body)}"]
        return (end.join(head) + end + end + body).encode()

    n = 0
    while len(build()) < size:
        n += 1
        lines.append(f"P-Pad-{n}: " + "x" * min(100, max(1, size - len(build()) - 12)))
    return build()


def test_a_cut_or_too_large_request_is_refused() -> None:
    assert cut_or_too_large(request(size=3000).decode()) is None
    assert cut_or_too_large(request(size=MAX_PACKET).decode()[:MAX_PACKET]) == TOO_LARGE  # a datagram cut by recvfrom
    head_only = request(size=2000).decode().split("\r\n\r\n")[0][:1500]
    assert cut_or_too_large(head_only) == CUT_SHORT  # cut inside the header block: no delayed offer
    assert cut_or_too_large(request(size=2000).decode()[:-20]) == BODY_SHORT


def test_the_answer_copies_what_a_response_copies_and_adds_a_to_tag() -> None:
    answer = too_large_answer(request(size=5000)[:MAX_PACKET])
    assert answer is not None
    text = answer.decode()
    assert text.startswith("SIP/2.0 513 Message Too Large\r\n") and text.endswith("Content-Length: 0\r\n\r\n")
    assert re.findall(r"^(?:Via|v): [^\r]*", text, re.M) == [
        "Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK1",
        "v: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK0",
    ]
    assert re.search(r"^To: <sip:1000@127.0.0.2>;tag=\w+\r$", text, re.M)
    assert "Call-ID: c1\r\n" in text and "CSeq: 1 INVITE\r\n" in text and "P-Pad" not in text
    tagged = too_large_answer(request(size=5000, to_tag="t9")[:MAX_PACKET])
    assert tagged is not None and tagged.decode().count(";tag=") == 2  # From's and the To's own
    assert too_large_answer(request("ACK", 5000)[:MAX_PACKET]) is None  # an ACK is never answered
    assert too_large_answer(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n") is None


def test_a_message_that_fits_is_left_to_pjsip() -> None:
    guard = StreamGuard()
    assert guard.received("c", request(size=MAX_MESSAGE)) == (0, None)
    assert guard.received("c", request(size=2000)[:700]) == (0, None)  # its header block still coming


def test_a_message_over_the_limit_in_one_buffer_is_taken_whole_and_the_next_left() -> None:
    guard = StreamGuard()
    big, small = request(size=MAX_MESSAGE + 1), request("OPTIONS", 500)
    assert len(big) <= MAX_PACKET
    taken, refused = guard.received("c", big + small[: MAX_PACKET - len(big)])
    assert taken == len(big) and refused is not None and refused.size == len(big)
    assert refused.answer is not None and refused.answer.startswith(b"SIP/2.0 513 ")
    assert (refused.summary, refused.caller, refused.called) == ("INVITE c1", "a", "1000")
    assert not guard.skipping("c")


def pjsip_stream(guard: StreamGuard, stream: bytes, reads: list[int]) -> tuple[list[bytes], list[bytes]]:
    """What pjsip's stream receive loop (``pjsip_tpmgr_receive_packet``) makes of ``stream`` read in chunks of
    ``reads`` bytes into a buffer of MAX_PACKET with the guard's callbacks: the messages it parses, and the answers
    the guard sent. Fails where pjsip would overflow."""
    buffer, parsed, answers, pos = b"", [], [], 0
    sizes = iter(reads)
    while pos < len(stream) or buffer:
        room = MAX_PACKET - len(buffer)
        chunk = stream[pos : pos + min(room, next(sizes, room))]
        pos += len(chunk)
        buffer += chunk
        while buffer:
            stripped = buffer.lstrip(b"\r\n")
            if len(stripped) < len(buffer):
                refused = guard.dropped("c", buffer[: len(buffer) - len(stripped)])
                answers += [refused.answer] if refused and refused.answer else []
                buffer = stripped
                continue
            taken, refused = guard.received("c", buffer)
            answers += [refused.answer] if refused and refused.answer else []
            if taken:
                buffer = buffer[taken:]
                continue
            end = re.search(rb"\r?\n\r?\n", buffer)
            if end is None:
                assert len(buffer) < MAX_PACKET, "pjsip would overflow"
                break
            length = int(re.search(rb"Content-Length: (\d+)", buffer[: end.end()]).group(1))  # type: ignore[union-attr]
            if len(buffer) < end.end() + length:
                assert len(buffer) < MAX_PACKET, "pjsip would overflow"
                break
            parsed.append(buffer[: end.end() + length])
            buffer = buffer[end.end() + length :]
        if pos >= len(stream) and buffer and not chunk:
            break
    return parsed, answers


@pytest.mark.parametrize("seed", range(40))
def test_any_split_of_a_stream_refuses_each_large_message_and_keeps_the_others(seed: int) -> None:
    rng = random.Random(seed)
    messages = []
    for i in range(8):
        size = rng.choice([300, 1500, MAX_MESSAGE, MAX_PACKET, 4494, 9129, 16000])
        messages.append(request(rng.choice(["INVITE", "OPTIONS", "ACK"]), size, call_id=f"m{i}", lf=rng.random() < 0.3))
    stream = b"".join(m + b"\r\n" * rng.randint(0, 2) for m in messages)  # CRLF keep-alives between some
    reads = [rng.randint(1, 5000) for _ in range(len(stream))]
    parsed, answers = pjsip_stream(StreamGuard(), stream, reads)
    assert parsed == [m for m in messages if len(m) <= MAX_MESSAGE]
    refused = [m for m in messages if len(m) > MAX_MESSAGE and not m.startswith(b"ACK ")]
    assert len(answers) == len(refused)
    for message, answer in zip(refused, answers, strict=True):
        call_id = re.search(rb"Call-ID: (\w+)", message).group(1)  # type: ignore[union-attr]
        assert b"Call-ID: " + call_id + b"\r\n" in answer and answer.startswith(b"SIP/2.0 513 ")


def test_a_skip_is_forgotten_when_its_connection_goes_quiet() -> None:
    now = [0.0]
    guard = StreamGuard(clock=lambda: now[0])
    taken, refused = guard.received("c", request(size=9000)[:MAX_PACKET])
    assert (taken, refused) == (MAX_PACKET, None) and guard.skipping("c")  # its header block goes on
    now[0] = 60.0
    assert guard.received("c", request(size=500)) == (0, None) and not guard.skipping("c")
