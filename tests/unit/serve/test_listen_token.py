"""Listen-in requests are signed by serve and checked by the workers: unsigned, forged, expired and replayed
requests are refused."""

from __future__ import annotations

import json

import pytest

from bridge.supervisor.listen_token import TAKEOVER, TTL_S, Verifier, sign

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


def test_a_take_over_grant_and_a_listen_request_never_pass_for_each_other() -> None:
    now = [1000.0]
    grants = Verifier(KEY, clock=lambda: now[0], purpose=TAKEOVER)
    listens = Verifier(KEY, clock=lambda: now[0])
    grant = sign(KEY, "c-1", "sam", now=now[0], purpose=TAKEOVER)
    with pytest.raises(ValueError, match="bad signature"):
        listens.check(grant)  # a grant captured on Redis does not start a listen-in
    with pytest.raises(ValueError, match="bad signature"):
        grants.check(sign(KEY, "c-1", "sam", now=now[0]))  # nor a listen request a take-over
    assert grants.check(grant) == ("c-1", "sam")
