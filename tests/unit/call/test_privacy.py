"""Personal data masked by default: keys past a run's visible digits, caller numbers, digit runs in transcripts, and
the dialplan's privacy section (checked by `dialplan check`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.call.privacy import RUN_GAP_S, KeyMask, mask_digit_runs, mask_json, mask_number, redact_spoken_digits
from bridge.dialplan import Dialplan, check_file


def test_a_long_run_of_keys_keeps_only_its_visible_digits_and_a_pause_starts_a_new_run() -> None:
    now = [0.0]
    keys = KeyMask(1, clock=lambda: now[0])
    shown = []
    for digit in "4111111111111111":
        now[0] += 0.3
        shown.append(keys.shown(digit))
    assert "".join(shown) == "4" + "*" * 15
    now[0] += RUN_GAP_S + 0.1  # a menu choice later: visible again
    assert keys.shown("2") == "2"
    now[0] += 1.5
    keys.reply_heard()  # the agent's answer played out in full between two menu keys
    assert keys.shown("#") == "#"
    now[0] += 0.2
    assert keys.shown("5") == "*"
    now[0] += 0.2
    keys.reply_heard()  # an answer cut short by typing does not end the run
    assert keys.shown("6") == "*"
    four = KeyMask(4, clock=lambda: now[0])
    assert "".join(four.shown(d) for d in "123456") == "1234**"


def test_caller_numbers_keep_their_last_digits() -> None:
    assert mask_number("+15551234567", 4) == "+*******4567"
    assert mask_number("sip:0612345678@carrier.example", 4) == "sip:******5678@carrier.example"
    assert mask_number("1000", 4) == "1000" and mask_number("alice", 4) == "alice"
    assert mask_number("+15551234567", None) == "+15551234567"
    assert mask_number("+15551234567", 0) == "+***********"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("my card is four one one one, one one one one, one one one one, one one one one thanks",
         "my card is **** thanks"),
        ("the number is 4111 1111 1111 1111.", "the number is ****."),
        ("call me on five five five, one two three, four five six seven", "call me on ****"),
        ("your order 4471 ships in 2026 for 25 dollars", "your order 4471 ships in 2026 for 25 dollars"),
        ("I have one question and two more", "I have one question and two more"),
        ("my pin is one two three four five", "my pin is ****"),
    ],
)  # fmt: skip
def test_digit_runs_in_a_transcript_are_masked(text: str, masked: str) -> None:
    assert redact_spoken_digits(text, 4) == masked


def test_the_privacy_section_is_safe_by_default_and_checked(tmp_path: Path) -> None:
    plan = Dialplan(name="x", match=("1",))
    p = plan.privacy
    assert (p.dtmf_visible_digits, p.dtmf_to_model, p.pause_recording_on_dtmf) == (1, True, False)
    assert (p.caller_visible_digits, p.transcript_visible_digits) == (4, 4)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmatch: ['1']\nprivacy: {dtmf_visible_digits: -1, dtmf_to_modle: false}\n")
    fields = {e.field for e in check_file(bad)}
    assert "privacy.dtmf_visible_digits" in fields or "privacy.dtmf_to_modle" in fields, fields


def test_tool_arguments_and_outputs_are_masked_as_keys_are() -> None:
    card = "4111111111111111"
    args = json.dumps({"card": card, "spaced": "4111 1111 1111 1111", "number": int(card), "order": "A-42",
                       "paid": True, "items": [{"sku": "12345"}]})  # fmt: skip
    shown = json.loads(mask_json(args, 4))
    assert shown == {"card": "4111************", "spaced": "4111 **** **** ****", "number": "4111************",
                     "order": "A-42", "paid": True, "items": [{"sku": "1234*"}]}  # fmt: skip
    windows = {card[i : i + 6] for i in range(len(card) - 5)}
    assert not any(w in mask_json(args, 4) for w in windows)  # no six digits of the card in a row, anywhere
    assert mask_json("card 4111-1111-1111-1111 declined", 1) == "card 4***-****-****-**** declined"  # not JSON
    assert mask_digit_runs("call 555 0100 at 9", 0) == "call *** **** at *"


def test_numbers_in_a_sip_message_are_masked_names_and_hosts_stay() -> None:
    from bridge.privacy.masking import mask_sip_numbers

    text = 'From: "+1 555 123 4567" <sip:+15551234567@10.0.0.9:5060>;tag=1\r\nTo: <sip:alice@pbx.example>;tag=2\r\n'
    masked = mask_sip_numbers(text + "Contact: <sips:5551234567@h>, <tel:+15551234567>\r\n", 4)
    assert "1234567" not in masked and masked.count("4567") == 4
    assert '"+* *** *** 4567" <sip:+*******4567@10.0.0.9:5060>;tag=1' in masked
    assert "<sip:alice@pbx.example>" in masked and "<sips:******4567@h>" in masked
