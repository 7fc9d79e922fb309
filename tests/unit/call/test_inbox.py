"""The call's inbox: the caller's interrupts jump the queue, the model's stream keeps its order."""

from __future__ import annotations

from bridge import events as ev
from bridge.call.session import Inbox


async def drain(inbox: Inbox, n: int) -> list[str]:
    return [(await inbox.get()).kind for _ in range(n)]


async def test_a_whole_response_in_one_read_keeps_its_order() -> None:
    inbox = Inbox()
    stream: list[ev.Event] = [
        ev.ResponseStarted("r1"),
        ev.AudioChunk("r1", "i1", b"\0\0" * 480),
        ev.AudioChunk("r1", "i1", b"\0\0" * 480),
        ev.AudioDone("r1", "i1"),
        ev.ResponseDone("r1", "completed"),
    ]
    for event in stream:
        inbox.put(event)
    # Done events overtaking the audio would close the item before its audio arrived (it would never end).
    assert await drain(inbox, 5) == [e.kind for e in stream]


async def test_the_callers_interrupts_overtake_buffered_audio_in_arrival_order() -> None:
    inbox = Inbox()
    for event in (
        ev.AudioChunk("r1", "i1", b"\0\0" * 480),
        ev.AudioChunk("r1", "i1", b"\0\0" * 480),
        ev.SpeechStarted("u1", 1200),
        ev.ResponseDone("r1", "completed"),
        ev.Dtmf("5"),
        ev.CallerHungUp(200, "BYE"),
    ):
        inbox.put(event)
    kinds = await drain(inbox, 6)
    assert kinds == ["SpeechStarted", "Dtmf", "CallerHungUp", "AudioChunk", "AudioChunk", "ResponseDone"]
    assert all(e.urgent for e in (ev.SpeechStarted, ev.Dtmf, ev.CallerHungUp))
    assert not any(e.urgent for e in (ev.AudioChunk, ev.AudioDone, ev.ResponseDone, ev.Closed, ev.ErrorEvent))
