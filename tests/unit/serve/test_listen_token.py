"""Commands on Redis are signed by serve and checked by the workers: unsigned, forged, expired, replayed and
malformed requests are refused; no kind passes for another; take-over audio is sealed for one call and one
supervisor and played once, in order."""

from __future__ import annotations

import json

import pytest

from bridge.supervisor.listen_token import ACTION, TTL_S, AudioOpener, Verifier, seal, sign

KEY = b"k" * 32


def test_a_signed_request_passes_once_and_every_other_is_refused() -> None:
    now = [1000.0]
    verifier = Verifier(KEY, clock=lambda: now[0])
    message = sign(KEY, "c-1", "Dana (operator)", now=now[0])
    assert verifier.check(message) == ("c-1", "Dana (operator)")
    with pytest.raises(ValueError, match="replayed"):
        verifier.check(message)  # captured on Redis and published again
    with pytest.raises(ValueError, match="unsigned"):
        verifier.check(json.dumps({"call_id": "c-1", "who": "mallory"}))
    with pytest.raises(ValueError, match="bad signature"):
        verifier.check(sign(b"x" * 32, "c-1", "mallory", now=now[0]))  # another key
    forged = json.loads(sign(KEY, "c-1", "Dana", now=now[0]))
    with pytest.raises(ValueError, match="bad signature"):
        verifier.check(json.dumps({**forged, "sig": "é" * 64}))  # no ASCII text: no MAC, never a TypeError
    forged["call_id"] = "c-2"  # a valid signature moved to another call
    with pytest.raises(ValueError, match="bad signature"):
        verifier.check(json.dumps(forged))
    stale = sign(KEY, "c-1", "Dana", now=now[0])
    now[0] += TTL_S + 0.1
    with pytest.raises(ValueError, match="expired"):
        verifier.check(stale)
    with pytest.raises(ValueError, match="too long"):
        verifier.check(sign(KEY, "c-1", "Dana", now=now[0] + 60))
    with pytest.raises(ValueError, match="JSON"):
        verifier.check(b"not json")
    with pytest.raises(ValueError, match="no listen key"):
        Verifier(None).check(sign(KEY, "c-1", "Dana"))


def test_an_action_and_a_listen_request_never_pass_for_each_other_and_the_fields_are_signed() -> None:
    now = [1000.0]
    actions = Verifier(KEY, clock=lambda: now[0], purpose=ACTION)
    listens = Verifier(KEY, clock=lambda: now[0])
    fields = {"id": "r1", "action": "transfer", "target": "sip:desk@example.com"}
    action = sign(KEY, "c-1", "sam", now=now[0], purpose=ACTION, fields=fields)
    with pytest.raises(ValueError, match="bad signature"):
        listens.check(action)  # an action captured on Redis does not start a listen-in
    with pytest.raises(ValueError, match="bad signature"):
        actions.check(sign(KEY, "c-1", "sam", now=now[0]))  # nor a listen request an action
    moved = json.loads(action)
    moved["fields"]["target"] = "sip:premium@toll.example"  # a signed transfer sent somewhere else
    with pytest.raises(ValueError, match="bad signature"):
        actions.verify(json.dumps(moved))
    signed = actions.verify(action)
    assert (signed.call_id, signed.who, signed.fields) == ("c-1", "sam", fields)


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe", b"[1]", b"null", b'"c-1"', b'{"call_id": 7}', b'{"call_id": "c-1", "who": ["x"]}',
     b'{"call_id": "c-1", "sig": "a", "nonce": "b", "exp": ' + b"9" * 400 + b"}",
     b'{"call_id": "c-1", "sig": "a", "nonce": "b", "exp": 1e999}',
     b'{"call_id": "c-1", "sig": "a", "nonce": "b", "exp": 1, "fields": [1]}',
     b'{"call_id": "c-1", "sig": "a", "nonce": "b", "exp": 1, "fields": {"id": 1}}'],
)  # fmt: skip
def test_a_malformed_message_is_refused_with_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        Verifier(KEY).verify(data)


def test_take_over_audio_is_played_only_sealed_for_its_call_and_supervisor_once_and_in_order() -> None:
    now = [10**18]
    opener = AudioOpener(KEY, "c-1", "sam", clock=lambda: now[0])
    first = seal(KEY, "c-1", "sam", b"\x01\x00" * 160, now_ns=now[0])
    assert opener.open(first) == b"\x01\x00" * 160
    refused = [
        first,  # replayed
        seal(KEY, "c-1", "sam", b"\x02\x00", now_ns=now[0] - 1),  # older than the last
        seal(KEY, "c-1", "mallory", b"\x02\x00", now_ns=now[0] + 1),  # another supervisor's
        seal(KEY, "c-2", "sam", b"\x02\x00", now_ns=now[0] + 1),  # another call's
        seal(b"x" * 32, "c-1", "sam", b"\x02\x00", now_ns=now[0] + 1),  # another key
        seal(KEY, "c-1", "sam", b"\x02\x00", now_ns=now[0] + int((TTL_S + 10) * 1e9)),  # from the future
        b"\x02\x00" * 160,  # plain PCM written straight into Redis
    ]
    for data in refused:
        with pytest.raises(ValueError):
            opener.open(data)
    later = seal(KEY, "c-1", "sam", b"\x03\x00", now_ns=now[0] + 20_000_000)
    now[0] += int((TTL_S + 1) * 1e9)
    with pytest.raises(ValueError, match="out of time"):
        opener.open(later)  # too old by the time it came
