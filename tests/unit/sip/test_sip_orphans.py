"""The dead worker's BYE over UDP as a client transaction (bridge/sip/orphans.py), against a real UDP socket that
plays the caller: sent again until a final answer with its branch, and given up at the deadline."""

from __future__ import annotations

import asyncio
import socket

from bridge.sip import orphans

BRANCH = "z9hG4bKabc123"
REQUEST = f"BYE sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5;branch={BRANCH};rport\r\n\r\n".encode()


def _answer(status: str, branch: str = BRANCH) -> bytes:
    return f"SIP/2.0 {status}\r\nVia: SIP/2.0/UDP 127.0.0.1:5;branch={branch};rport\r\nCSeq: 1 BYE\r\n\r\n".encode()


def test_only_a_final_answer_with_the_requests_branch_ends_the_transaction() -> None:
    assert orphans._final_status(_answer("200 OK"), BRANCH) == 200
    assert orphans._final_status(_answer("481 Call/Transaction Does Not Exist"), BRANCH) == 481
    assert orphans._final_status(_answer("100 Trying"), BRANCH) is None  # provisional: keep waiting
    assert orphans._final_status(_answer("200 OK", "z9hG4bKother"), BRANCH) is None  # another transaction's
    assert orphans._final_status(REQUEST, BRANCH) is None  # a request is no answer
    assert orphans._final_status(b"garbage", BRANCH) is None


async def _transaction(answers: list[bytes], within: float) -> tuple[int | None, int]:
    """Run the transaction against a caller that answers its n-th copy with ``answers[n]`` (b"": no answer);
    (the status it ended with, the copies the caller got)."""
    loop = asyncio.get_running_loop()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ours,
    ):
        caller.bind(("127.0.0.1", 0))
        caller.setblocking(False)
        ours.setblocking(False)
        ours.connect(caller.getsockname())
        running = asyncio.create_task(orphans._udp_transaction(ours, REQUEST, BRANCH, within))
        copies = 0
        while not running.done():
            try:
                data, sender = await asyncio.wait_for(loop.sock_recvfrom(caller, 4096), 0.2)
            except TimeoutError:
                continue
            assert data == REQUEST
            copies += 1
            if copies <= len(answers) and answers[copies - 1]:
                caller.sendto(answers[copies - 1], sender)
        return await running, copies


async def test_a_lost_datagram_is_sent_again_and_the_final_answer_stops_it() -> None:
    # the first copy goes unanswered (lost), the second gets a 100 and then nothing, the third its 200
    status, copies = await _transaction([b"", _answer("100 Trying"), _answer("200 OK")], within=5.0)
    assert (status, copies) == (200, 3)


async def test_a_caller_who_never_answers_is_given_up_at_the_deadline() -> None:
    status, copies = await _transaction([], within=1.2)
    assert status is None and copies == 2  # at 0 and 0.5 s; the next would be at 1.5 s, after the deadline
