"""bridge.sip.answers: one final answer per INVITE transaction, kept for 64*T1, whatever arrives again."""

from __future__ import annotations

from bridge.sip.answers import (
    ABSORB,
    KEEP_S,
    LOOP_DETECTED,
    PASS_ON,
    AnswerBook,
    InviteKey,
    header_param,
    heard_answer,
    heard_invite,
)

CALLER = "192.0.2.7:5060"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def invite(branch: str = "z9hG4bK-1", cseq: int = 1, to_tag: str = "", call_id: str = "abc@host") -> str:
    to = "<sip:1000@worker>" + (f";tag={to_tag}" if to_tag else "")
    return (
        "INVITE sip:1000@worker SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.7:5060;branch={branch};rport, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-below\r\n"
        'From: "Alice" <sip:alice@192.0.2.7;tag=uri-param>;tag=from-1\r\n'
        f"To: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContent-Length: 0\r\n\r\n"
    )


def answer(status: int, reason: str, branch: str = "z9hG4bK-1", *extra: str, method: str = "INVITE") -> str:
    return (
        f"SIP/2.0 {status} {reason}\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.7:5060;rport=5060;received=192.0.2.7;branch={branch}\r\n"
        "From: <sip:alice@192.0.2.7>;tag=from-1\r\nTo: <sip:1000@worker>;tag=ours\r\nCall-ID: abc@host\r\n"
        f"CSeq: 1 {method}\r\n" + "".join(f"{line}\r\n" for line in extra) + "Content-Length: 0\r\n\r\n"
    )


def test_a_transaction_is_named_by_call_id_from_tag_cseq_and_the_top_branch() -> None:
    heard = heard_invite(invite())
    assert heard is not None
    assert heard.key == InviteKey("abc@host", "from-1", 1)  # the tag outside <...>, not the URI's parameter
    assert heard.branch == "z9hG4bK-1"  # the top Via's
    assert heard_invite(invite(to_tag="x")) is None  # a re-INVITE: its dialog's
    assert heard_invite("BYE sip:1000@worker SIP/2.0\r\nCSeq: 2 BYE\r\nCall-ID: a\r\n\r\n") is None
    assert header_param('"B" <sip:b@h;tag=no>;x=1;tag="quoted"', "tag") == "quoted"


def test_only_final_answers_to_invites_are_heard() -> None:
    heard = heard_answer(answer(401, "Unauthorized", "z9hG4bK-1", 'WWW-Authenticate: Digest realm="r"', "X-Other: y"))
    assert heard is not None and (heard.status, heard.reason) == (401, "Unauthorized")
    assert heard.headers == {"www-authenticate": 'Digest realm="r"'}  # what a repeat carries again, no more
    assert heard_answer(answer(100, "Trying")) is None
    assert heard_answer(answer(200, "OK", method="BYE")) is None
    assert heard_answer("INVITE sip:x SIP/2.0\r\n\r\n") is None


def test_an_answered_invite_sent_again_is_absorbed_until_64_t1() -> None:
    clock = Clock()
    book = AnswerBook(clock=clock)
    first = book.look(invite(), CALLER)
    assert first.key is not None and first.verdict is None  # new: screen it
    book.pending(first.key, first.branch, CALLER)
    assert book.look(invite(), CALLER).verdict == PASS_ON  # unanswered: its transaction absorbs it, unscreened
    book.answered(answer(200, "OK"))
    clock.now += KEEP_S - 1
    assert book.look(invite(), CALLER).verdict == ABSORB  # no second call, no second 200
    assert book.absorbed == 1
    clock.now += 2
    assert book.look(invite(), CALLER).verdict is None  # 64*T1 after its answer: nothing retransmits that late


def test_a_refused_invite_sent_again_gets_the_same_refusal_and_a_merged_one_482() -> None:
    book = AnswerBook(clock=Clock())
    book.answered(answer(486, "Busy Here", "z9hG4bK-1", "Retry-After: 5"))
    assert book.look(invite(), CALLER).verdict == (486, "Busy Here", {"retry-after": "5"})
    assert book.look(invite(), CALLER).verdict == (486, "Busy Here", {"retry-after": "5"})  # every time, never a call
    assert book.repeated == 2
    merged = book.look(invite(branch="z9hG4bK-2"), CALLER)
    assert merged.verdict == (482, LOOP_DETECTED, {})
    book.answered(answer(482, LOOP_DETECTED, "z9hG4bK-2"))  # the merged request's own answer changes nothing
    assert book.look(invite(), CALLER).verdict == (486, "Busy Here", {"retry-after": "5"})
    assert book.look(invite(cseq=2), CALLER).verdict is None  # the caller's next request (a retry after 401) is new


def test_a_2xx_stays_the_answer_and_the_table_is_bounded() -> None:
    book = AnswerBook(max_kept=3, clock=Clock())
    book.answered(answer(200, "OK"))
    book.answered(answer(500, "Server Internal Error"))
    assert book.look(invite(), CALLER).verdict == ABSORB
    for n in range(5):
        book.answered(answer(403, "Forbidden").replace("abc@host", f"flood-{n}"))
    assert len(book) == 3  # a flood of refusals cannot grow it: the oldest go first
    assert book.look(invite(), CALLER).verdict is None


def test_a_transaction_is_its_first_sources_and_the_gateways_own_refusal_is_kept() -> None:
    book = AnswerBook(clock=Clock())
    look = book.look(invite(), CALLER)
    assert look.key is not None
    book.pending(look.key, look.branch, CALLER)
    book.refused(look.key, look.branch, (401, "Unauthorized", {"WWW-Authenticate": "Digest x"}))
    assert book.look(invite(), "192.0.2.7:5999").verdict == (401, "Unauthorized", {"WWW-Authenticate": "Digest x"})
    assert book.look(invite(), "203.0.113.1:5060").verdict is None  # the same key from elsewhere: not its answer
    assert book.look(invite(branch="z9hG4bK-2"), "203.0.113.1:5060").verdict is None


def test_a_422_sent_again_carries_its_min_se_and_the_retry_with_the_next_cseq_is_new() -> None:
    book = AnswerBook(clock=Clock())
    look = book.look(invite(), CALLER)
    assert look.key is not None
    book.pending(look.key, look.branch, CALLER)
    book.answered(answer(422, "Session Interval Too Small", "z9hG4bK-1", "Min-SE: 90"))
    assert book.look(invite(), CALLER).verdict == (422, "Session Interval Too Small", {"min-se": "90"})
    retry = book.look(invite(branch="z9hG4bK-2", cseq=2), CALLER)  # RFC 4028 §7.4: the same Call-ID, a new CSeq
    assert retry.verdict is None and retry.key == InviteKey("abc@host", "from-1", 2)
