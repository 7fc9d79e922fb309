"""heard_spans: where a recording has sound, pauses inside a sentence joined."""

from __future__ import annotations

from bridge.audio.analysis import heard_spans, tone
from bridge.audio.frames import SILENCE


def test_sound_is_found_where_it_is_and_short_pauses_join() -> None:
    pcm = SILENCE * 10 + tone(440.0, 0.4, -20.0) + SILENCE * 10 + tone(440.0, 0.2, -20.0) + SILENCE * 40
    pcm += tone(1000.0, 0.6, -6.0)
    spans = heard_spans(pcm)
    assert [(start, end) for start, end, _ in spans] == [(200, 1000), (1800, 2400)]
    assert abs(spans[0][2] - -20.0) < 0.5 and abs(spans[1][2] - -6.0) < 0.5


def test_silence_and_nothing_have_no_spans() -> None:
    assert heard_spans(b"") == [] and heard_spans(SILENCE * 50) == []
