"""A call's stored SIP dialog (bridge/store/dialogseal.py): sealed under the node's listen_key, it holds none of the
caller's URIs in clear and opens only with the same key, for the same call, unaltered."""

from __future__ import annotations

import base64
import json
import logging

import pytest
from prometheus_client import REGISTRY

from bridge.store.dialogseal import NONCE_BYTES, VERSION, DialogSeal

KEY = b"a" * 64
CALL = "c-" + "1" * 32
DIALOG = json.dumps(
    {
        "call_id": "a84b4c76e66710@pc33",
        "local": "<sip:7200@10.0.0.1>;tag=as1",
        "remote": "<sip:+14155550123@198.51.100.7>;tag=1928301774",
        "remote_target": "<sip:+14155550123@198.51.100.7:5060>",
        "routes": [],
    }
)


def unopened() -> float:
    return REGISTRY.get_sample_value("callbridge_sip_dialogs_unopened_total") or 0.0


def test_a_sealed_dialog_opens_with_the_same_key_for_the_same_call_and_shows_nothing_of_it() -> None:
    sealed = DialogSeal(KEY).seal(CALL, DIALOG)
    assert sealed.startswith(VERSION) and "=" not in sealed
    assert "4155550123" not in sealed and "198.51.100.7" not in sealed and "tag" not in sealed
    assert DialogSeal(KEY).open(CALL, sealed) == DIALOG  # another instance: a restarted worker, serve, another node
    assert DialogSeal(KEY).seal(CALL, DIALOG) != sealed  # a fresh nonce each time


def test_a_dialog_sealed_under_another_key_does_not_open() -> None:
    sealed = DialogSeal(b"b" * 64).seal(CALL, DIALOG)
    assert DialogSeal(KEY).open(CALL, sealed) is None


def test_a_dialog_sealed_for_another_call_does_not_open() -> None:
    sealed = DialogSeal(KEY).seal("c-other", DIALOG)
    assert DialogSeal(KEY).open(CALL, sealed) is None


@pytest.mark.parametrize("where", [0, NONCE_BYTES, NONCE_BYTES + 5, -1])  # the nonce, the ciphertext, the tag
def test_an_altered_dialog_does_not_open(where: int) -> None:
    sealed = DialogSeal(KEY).seal(CALL, DIALOG)
    body = sealed[len(VERSION) :]
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[where] ^= 0x01
    altered = VERSION + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert DialogSeal(KEY).open(CALL, altered) is None


@pytest.mark.parametrize(
    "stored",
    [DIALOG, "v2:" + "A" * 60, VERSION, VERSION + "AAAA", VERSION + "not base64!", VERSION + "A" * 41],
    ids=["clear JSON", "another version", "empty", "too short", "not base64", "not a whole byte"],
)
def test_text_that_is_no_sealed_dialog_does_not_open(stored: str) -> None:
    assert DialogSeal(KEY).open(CALL, stored) is None


def test_open_all_skips_an_unanswered_call_and_warns_and_counts_one_that_does_not_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seal = DialogSeal(KEY)
    before = unopened()
    stored = [
        ("c-a", seal.seal("c-a", DIALOG)),
        ("c-unanswered", ""),
        ("c-foreign", DialogSeal(b"b" * 64).seal("c-foreign", DIALOG)),
        ("c-b", seal.seal("c-b", '{"call_id": "b"}')),
    ]
    with caplog.at_level(logging.WARNING, logger="bridge.store"):
        assert seal.open_all(stored) == [DIALOG, '{"call_id": "b"}']
    assert unopened() == before + 1
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line.startswith("call c-foreign: its stored SIP dialog does not open with this node's listen_key"), line
    assert "listen_key must be the same on every node that reaps another's calls" in line


def test_a_seal_needs_a_key() -> None:
    with pytest.raises(ValueError, match="needs a listen_key"):
        DialogSeal(b"")


def test_a_nodes_seal_is_its_listen_key_and_without_one_a_key_of_its_own() -> None:
    sealed = DialogSeal.under("the node's listen_key").seal(CALL, DIALOG)
    assert DialogSeal.under("the node's listen_key").open(CALL, sealed) == DIALOG  # serve and each of its workers
    alone = DialogSeal.under(None)
    assert alone.open(CALL, alone.seal(CALL, DIALOG)) == DIALOG
    assert DialogSeal.under(None).open(CALL, alone.seal(CALL, DIALOG)) is None
