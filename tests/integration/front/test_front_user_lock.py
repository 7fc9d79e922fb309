"""Digest guessing of one user at the front (kamailio.cfg, route[AUTH] and route[USERFAILED]): wrong passwords for
one user count together whatever address they come from, so a guesser spread over many addresses (each under its
own refusal and flood limits) puts the user under a guard after ``front_auth_user_failures`` of them. With no trunk
listed (``sip_trunk_sources``; test_front_trunk_guard.py has a listed one) its calls then get 403 from every source
for ``front_auth_user_ban_s``, even with the right password, while the other users call on. A new challenge (a
reused or a made-up nonce) is no failure. Kamailio's log names the user and the setting once per guard; the guard
and the refusals during it are counted in /metrics.

Every attempt comes from a loopback address of its own (Linux answers all of 127.0.0.0/8)."""

from __future__ import annotations

from pathlib import Path

from _front import NODE_A, Answer, front_node, requirements, wait_for
from _rawsip import Dialog, Leg, authorization, challenge_of
from test_front_edge import counters, exported, polled, sessions

pytestmark = requirements
USER, PASSWORD, OTHER, OTHER_PASSWORD, REALM = "trunk1", "s3cret", "trunk2", "other-s3cret", "trunks.example"
FAILURES, LOCK_S = 3, 120
GUESSERS = ("127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24")
OWNER, OTHER_SOURCE, STALE_SOURCE = "127.0.0.31", "127.0.0.32", "127.0.0.33"
REFUSED = (403, "Forbidden (bad credentials)")
CONFIG = {
    "sip_auth_users": {USER: PASSWORD, OTHER: OTHER_PASSWORD},
    "sip_auth_realm": REALM,
    "front_auth": True,
    "front_auth_user_failures": FAILURES,
    "front_auth_user_ban_s": LOCK_S,
}


async def attempt(leg: Leg, user: str, password: str, replay: str = "") -> tuple[Answer, str]:
    """One new call from ``leg`` as ``user``: the front's challenge, then the INVITE with credentials for
    ``password`` (or the ``replay`` of an earlier Authorization) under the next CSeq, as RFC 3261 §22.2 has it. An
    answered call is hung up at once. Returns the final answer and the Authorization sent."""
    call = Dialog()
    branch = leg.invite(call)
    challenged = await leg.answer(call, "INVITE")
    assert challenged.status == 401, challenged
    leg.ack(call, challenged, branch)
    call.cseq += 1
    credentials = replay or authorization(challenge_of(challenged), leg.uri, user, password)
    branch = leg.invite(call, extra=[credentials])
    final = await leg.answer(call, "INVITE")
    leg.ack(call, final, branch)
    if final.status == 200:
        assert (await leg.hang_up(call)).status == 200
    return final, credentials


def guard_warnings(node_dir: Path) -> list[str]:
    log = (node_dir / "kamailio.log").read_text(errors="replace")
    return [line for line in log.splitlines() if f"digest user {USER} guarded" in line]


async def test_wrong_passwords_from_many_addresses_guard_the_user_and_not_the_others(tmp_path: Path) -> None:
    async with front_node(tmp_path, workers=1, config=CONFIG) as (node, port, _):
        started = node.stderr_tail(20000)
        assert f"a user guarded {LOCK_S} s (its calls refused) after {FAILURES} wrong passwords" in started
        front = (NODE_A, port)

        # the owner calls; a replay of its credentials, and a nonce the front never gave, are challenged again
        with Leg(OWNER, front) as owner:
            answered, used = await attempt(owner, USER, PASSWORD)
            assert answered.status == 200, answered
        with Leg(STALE_SOURCE, front) as stale:
            for replay in (used, used, used.replace('nonce="', 'nonce="0'), used):
                again, _ = await attempt(stale, USER, PASSWORD, replay=replay)
                assert again.status == 401, again  # a new challenge, which counts as no failure
        assert counters(node)["refused_credentials"] == 0

        # wrong passwords from addresses of their own, one short of the limit: the owner still gets in (the new
        # challenges above counted for nothing)
        for n, guesser in enumerate(GUESSERS[: FAILURES - 1], start=1):
            with Leg(guesser, front) as leg:
                refused, _ = await attempt(leg, USER, f"guess-{n}")
            assert (refused.status, refused.reason) == REFUSED, refused
        with Leg(OWNER, front) as owner:
            answered, _ = await attempt(owner, USER, PASSWORD)
            assert answered.status == 200, answered

        # the last wrong password of FAILURES guards the user: no trunk is listed, so its right password is refused
        # like a wrong one, from the owner's address as from any other
        with Leg(GUESSERS[FAILURES - 1], front) as leg:
            refused, _ = await attempt(leg, USER, f"guess-{FAILURES}")
        assert (refused.status, refused.reason) == REFUSED, refused
        for source, password in ((OWNER, PASSWORD), (GUESSERS[FAILURES], "guess-more")):
            with Leg(source, front) as leg:
                refused, _ = await attempt(leg, USER, password)
            assert (refused.status, refused.reason) == REFUSED, refused
        now = counters(node)
        assert (now["user_locks"], now["refused_user_locked"], now["refused_credentials"]) == (1, 2, FAILURES), now

        # another user calls on
        with Leg(OTHER_SOURCE, front) as other:
            answered, _ = await attempt(other, OTHER, OTHER_PASSWORD)
            assert answered.status == 200, answered
        await wait_for(polled(lambda: len(node.calls()) >= 3), "the answered calls' reports")
        assert sessions(node) == 3  # the owner's two calls before the guard and the other user's: none while guarded

        await wait_for(polled(lambda: guard_warnings(node.front_dir)), "the guard logged")
        expected = {
            ("callbridge_front_user_locks_total", ""): 1.0,
            ("callbridge_front_refused_total", "user_locked"): 2.0,
            ("callbridge_front_refused_total", "credentials"): float(FAILURES),
        }
        assert await exported(node, expected) == expected
    (warning,) = guard_warnings(node.front_dir)  # once per guard, however many calls it refused
    assert " WARNING: " in warning, warning
    assert f"digest user {USER} guarded for {LOCK_S} s at the front: {FAILURES} wrong passwords" in warning, warning
    assert f"front_auth_user_failures, the last from {GUESSERS[FAILURES - 1]}" in warning, warning
    assert "from every source: no sip_trunk_sources is listed" in warning, warning
