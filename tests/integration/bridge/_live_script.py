"""The emulator's script for the Live call tests over both SIP peers (the pjsua2 softphone and SIPp): a greeting,
one question heard, one answer, each a tone of its own so the caller's recording tells them apart."""

from __future__ import annotations

from typing import Any

GREETING_HZ, REPLY_HZ, LINE_HZ, CALLER_HZ, PEAK_DBFS = 400.0, 600.0, 500.0, 1020.0, -12.0
GREETING_MS, REPLY_MS = 1000, 1200
HEARS = "What are your opening hours?"


def greet_and_answer() -> dict[str, Any]:
    """``queue_next`` arguments: the greeting, then the answer to :data:`HEARS`."""
    return {
        "settings": {"tone_dbfs": PEAK_DBFS},
        "annotations": {
            "greeting": {"text": "Welcome.", "tone_hz": GREETING_HZ, "duration_ms": GREETING_MS},
            "turns": [{"hears": HEARS, "reply": {"text": "From nine.", "tone_hz": REPLY_HZ, "duration_ms": REPLY_MS}}],
        },
    }


def long_greeting() -> dict[str, Any]:
    """``queue_next`` arguments: a 6 s greeting for the caller to speak over."""
    return {
        "settings": {"tone_dbfs": PEAK_DBFS, "delta_ms": 100},
        "annotations": {"greeting": {"text": "A long welcome.", "tone_hz": GREETING_HZ, "duration_ms": 6000}},
    }
