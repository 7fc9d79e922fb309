"""A guess storm on a digest user never locks out its listed trunk (issue 70, item 1): wrong passwords from many
addresses outside ``sip_trunk_sources`` put the user under a guard that refuses its calls from unlisted sources
(credentials unread) for ``front_auth_user_ban_s``, while the trunk's own listed address, with the right password,
is checked as always and gets its call. Kamailio's log names the user and each source the guard refused, never a
password, and logs no ERROR.

Every attempt comes from a loopback address of its own (Linux answers all of 127.0.0.0/8)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _front import NODE_A, Answer, front_node, requirements, wait_for
from _rawsip import Dialog, Leg, authorization, challenge_of
from test_front_edge import counters, exported, logged, polled, sessions
from test_front_user_lock import attempt

from bridge.config import Settings

pytestmark = requirements
USER, PASSWORD, REALM = "trunk1", "s3cret-of-the-trunk", "trunks.example"
FAILURES = Settings.model_fields["front_auth_user_failures"].default  # the shipped guard: 10 wrong passwords
GUESSERS = tuple(f"127.0.9.{101 + n}" for n in range(FAILURES))
TRUNK, STRANGER = "127.0.9.200", "127.0.9.201"
REFUSED = (403, "Forbidden (bad credentials)")
CONFIG = {
    "sip_auth_users": {USER: PASSWORD},
    "sip_auth_realm": REALM,
    "front_auth": True,
    "sip_trunk_sources": [f"{TRUNK}/32"],
}


def front_log(node_dir: Path) -> str:
    return (node_dir / "kamailio.log").read_text(errors="replace")


async def test_a_guess_storm_never_refuses_the_listed_trunk_with_the_right_password(tmp_path: Path) -> None:
    async with front_node(tmp_path, workers=1, config=CONFIG) as (node, port, _):
        front = (NODE_A, port)
        started = node.stderr_tail(20000)
        assert f"trunks {TRUNK}/32 (sip_trunk_sources)" in started and "trunks: none listed" not in started
        # one wrong password from each of ten addresses: the shipped guard's count
        for n, guesser in enumerate(GUESSERS):
            with Leg(guesser, front) as leg:
                refused, _ = await attempt(leg, USER, f"guess-{n}")
            assert (refused.status, refused.reason) == REFUSED, refused
        assert counters(node)["user_locks"] == 1

        # the trunk's listed address with the right password: 100 Trying, then the call
        with Leg(TRUNK, front) as trunk:
            trying, answered = await call_with_credentials(trunk, PASSWORD)
        assert (trying.status, answered.status) == (100, 200), (trying, answered)

        # a guesser trying again, another with the right password, and a stranger with it twice: refused while the
        # guard lasts (their credentials unread)
        tries = ((GUESSERS[0], "guess-again"), (GUESSERS[1], PASSWORD), (STRANGER, PASSWORD), (STRANGER, PASSWORD))
        for source, password in tries:
            with Leg(source, front) as leg:
                refused, _ = await attempt(leg, USER, password)
            assert (refused.status, refused.reason) == REFUSED, (source, refused)

        await wait_for(polled(lambda: len(node.calls()) >= 1), "the trunk's call reported")
        assert sessions(node) == 1  # the trunk's call; none of the refused ones reached a worker
        now = counters(node)
        assert (now["user_locks"], now["refused_user_locked"], now["refused_credentials"]) == (
            1,
            len(tries),
            FAILURES,
        ), now
        expected = {
            ("callbridge_front_user_locks_total", ""): 1.0,
            ("callbridge_front_refused_total", "user_locked"): float(len(tries)),
            ("callbridge_front_refused_total", "credentials"): float(FAILURES),
        }
        assert await exported(node, expected) == expected
        refusal = f"digest user {USER}: a call from {STRANGER} refused"
        await wait_for(polled(lambda: logged(node, refusal)), "the guard's refusal of the stranger logged")
    log = front_log(node.front_dir)
    (guard,) = [line for line in log.splitlines() if f"digest user {USER} guarded" in line]
    assert " WARNING: " in guard, guard
    assert f"{FAILURES} wrong passwords from sources outside sip_trunk_sources" in guard, guard
    assert f"the last from {GUESSERS[-1]}" in guard, guard
    for source in (GUESSERS[0], GUESSERS[1], STRANGER):  # whom it refused: each source once, with the user
        (line,) = [line for line in log.splitlines() if f"digest user {USER}: a call from {source} refused" in line]
        assert " NOTICE: " in line, line
    assert PASSWORD not in log and "guess-" not in log
    assert " ERROR: " not in log, [line for line in log.splitlines() if " ERROR: " in line]


async def call_with_credentials(leg: Leg, password: str) -> tuple[Answer, Answer]:
    """A call of ``USER`` from ``leg`` answering the front's challenge: the first answer to the INVITE with
    credentials and its final one (an answered call is hung up at once)."""
    call = Dialog()
    branch = leg.invite(call)
    challenged = await leg.answer(call, "INVITE")
    assert challenged.status == 401, challenged
    leg.ack(call, challenged, branch)
    call.cseq += 1
    branch = leg.invite(call, extra=[authorization(challenge_of(challenged), leg.uri, USER, password)])
    first = await leg.answer(call, "INVITE", final=False)
    final = await leg.answer(call, "INVITE") if first.status < 200 else first
    leg.ack(call, final, branch)
    if final.status == 200:
        assert (await leg.hang_up(call)).status == 200
    return first, final


async def test_wrong_passwords_ban_a_stranger_per_source_and_never_the_listed_trunk(tmp_path: Path) -> None:
    """Per source: a stranger's wrong passwords are refusals toward its address's ban (front_refusal_limit), after
    which its requests are dropped unanswered. The listed trunk's wrong passwords (a misconfigured trunk, or ones
    forged from its address) are refused one by one, never ban it and never put its user under a guard: the right
    password gets its call after them, and so does a stranger's right one."""
    limit = 3
    config = {**CONFIG, "front_refusal_limit": limit, "front_auth_user_failures": limit, "front_ban_s": 120}
    async with front_node(tmp_path, workers=1, config=config) as (node, port, _):
        front = (NODE_A, port)
        with Leg(TRUNK, front) as trunk:
            for n in range(limit + 1):
                refused, _ = await attempt(trunk, USER, f"guess-{n}")
                assert (refused.status, refused.reason) == REFUSED, refused
            _, answered = await call_with_credentials(trunk, PASSWORD)
            assert answered.status == 200, answered
        assert (counters(node)["bans"], counters(node)["user_locks"]) == (0, 0)

        with Leg(STRANGER, front) as stranger:
            # no guard: the trunk's wrong passwords did not count toward one
            _, answered = await call_with_credentials(stranger, PASSWORD)
            assert answered.status == 200, answered
            for n in range(limit):
                refused, _ = await attempt(stranger, USER, f"guess-{n}")
                assert (refused.status, refused.reason) == REFUSED, refused
            await wait_for(polled(lambda: counters(node)["bans"] == 1), "the stranger banned")
            dropped, call = counters(node)["banned_dropped"], Dialog()
            stranger.invite(call)
            await wait_for(polled(lambda: counters(node)["banned_dropped"] == dropped + 1), "its INVITE dropped")
            with pytest.raises(TimeoutError):
                await stranger.answer(call, "INVITE", final=False, within_s=1.0)  # nothing, not even 100 Trying
        await wait_for(polled(lambda: logged(node, f"{STRANGER} banned for 120 s: {limit} refusals")), "the ban")
        assert counters(node)["user_locks"] == 1  # the stranger's three wrong passwords: its user's guard
        assert sessions(node) == 2
