"""What a viewer sees of a caller: numbers masked to their last two digits, names as they are (a run of digits in a
name that could be a number masked the same way), and a name's words in a transcript left alone."""

from __future__ import annotations

from bridge.privacy.masking import viewer_number as mask_number
from bridge.privacy.masking import viewer_text as mask_text
from bridge.supervisor.masking import EventMask, mask_row, public_state, viewer_caller


def test_numbers_keep_their_last_two_digits() -> None:
    assert mask_number("+15550002222") == "••••••••••22"
    assert mask_number("+1 (555) 123-4567") == "•" * 15 + "67"
    assert mask_number("12") == "••"


def test_names_are_not_numbers() -> None:
    for name in ("softphone", "alice", "sip:desk-3", "agent42", "Zoë"):
        assert mask_number(name) == name
    assert mask_number("bob 5551234") == "bob •••••34"


def test_a_name_in_a_transcript_stays_a_number_does_not() -> None:
    assert mask_text("softphone called about softphone", "softphone") == "softphone called about softphone"
    assert mask_text("call me on +15550002222", "+15550002222") == "call me on ••••••••••22"
    row = mask_row({"caller": "alice", "last_transcript": "Caller: this is alice"})
    assert row == {"caller": "alice", "last_transcript": "Caller: this is alice"}


def test_the_event_stream_masks_numbers_only() -> None:
    mask = EventMask()
    assert mask("upsert", {"caller": "alice"})["caller"] == "alice"
    assert mask("upsert", {"caller": "+15550002222"})["caller"] == "••••••••••22"
    entry = mask("entry", {"summary": "alice said +15550002222", "data": {"caller": "alice"}})
    assert entry == {"summary": "alice said ••••••••••22", "data": {"caller": "alice"}}


def test_a_viewer_sees_no_dialog_identifiers_a_supervisor_no_route_set() -> None:
    state = {"caller": "+15550002222", "sip_call_id": "a84b4c76e66710", "sip_dialog": '{"routes": ["<sip:f;lr>"]}'}
    assert mask_row(state) == {"caller": "••••••••••22"}
    assert public_state(state) == {"caller": "+15550002222", "sip_call_id": "a84b4c76e66710"}
    assert "sip_dialog" not in EventMask()("call", state) and "sip_call_id" not in EventMask()("upsert", state)


def test_a_viewer_sees_one_masking_glyph_in_a_number_the_plan_masked_already() -> None:
    """A plan that keeps three digits in Redis stores ``+1555****567``: a viewer sees it as any number, one glyph,
    the last two digits, never ``+••55****567``."""
    row = mask_row({"caller": "+1555****567", "original_called": "+1800***0199", "call_id": "c1"})
    assert row["caller"] == "••••••••••67" and row["original_called"] == "••••••••••99"
    assert viewer_caller("+15551234567") == "••••••••••67" and viewer_caller("alice") == "alice"
    assert viewer_caller("+**********") == "•" * 11  # nothing kept: nothing shown
