"""The front's edge (kamailio.cfg, route[ADMIT], route[AUTH], route[WITHINDLG]): strangers, floods,
bad credentials and in-dialog requests of no dialog the front set up are answered (or dropped) by Kamailio itself, so
no worker sees them; what it refused is counted in the node's /metrics.

Callers speak from their own loopback addresses: CALLER (127.0.0.1) is the trunk; a stranger, a flooder and the
address a forged Route header names are other 127.0.0.x addresses (Linux answers all of 127.0.0.0/8)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _front import (
    CALLER,
    NODE_A,
    Node,
    front_node,
    invite,
    parse_answer,
    requirements,
    sipp,
    sipp_dir,
    wait_for,
)

from bridge.serve.front_rpc import DRAINED, edge_counts, rpc_call, set_state

pytestmark = requirements
STRANGER, FLOODER, ELSEWHERE, SCANNER = "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"
SERVER = "edge-lab"  # sip_server_header: what the operator chose to show
USER, PASSWORD, REALM = "trunk1", "s3cret:with-colon", "trunks.example"


def counters(node: Node) -> dict[str, int]:
    """Kamailio's own edge counters, over the front's control socket."""
    return edge_counts(rpc_call(node.front_dir / "rpc.sock", "cnt.grp_get_all", ["front"]))


async def exported(node: Node, expected: dict[tuple[str, str], float]) -> dict[tuple[str, str], float | None]:
    """Wait until /metrics shows ``expected`` ((sample name, reason label or "") -> value); returns what it shows."""

    async def read() -> dict[tuple[str, str], float | None]:
        found: dict[tuple[str, str], float | None] = {}
        for name, reason in expected:
            labels = {"reason": reason} if reason else {}
            found[(name, reason)] = await node.metric(name, **labels)
        return found

    async def matches() -> bool:
        return await read() == expected

    with contextlib.suppress(TimeoutError):  # the caller's assertion shows what differs
        await wait_for(matches, "the front's counters in /metrics", within_s=15)
    return await read()


def logged(node: Node, line: str) -> bool:
    """Whether Kamailio's log holds ``line``: serve pumps Kamailio's log pipe into the file, so a line lands a
    moment after the event it tells of."""
    return line in (node.front_dir / "kamailio.log").read_text(errors="replace")


def polled(check: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """``check`` for wait_for()."""

    async def run() -> Any:
        return check()

    return run


def sessions(node: Node) -> int:
    assert node.emulator is not None
    return len(node.emulator.sessions)


class Peer:
    """A SIP peer on ``host`` (UDP) that sends hand-made requests to the front and reads its answers."""

    def __init__(self, host: str, front: tuple[str, int]) -> None:
        self.host, self.front = host, front
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def send(
        self, method: str, *, to_tag: str = "", extra: tuple[str, ...] = (), call_id: str = "", uri: str = ""
    ) -> str:
        """One request (Content-Length 0) to the front; returns its Call-ID."""
        call_id = call_id or secrets.token_hex(8)
        uri = uri or f"sip:2000@{self.front[0]}:{self.front[1]}"
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{secrets.token_hex(6)};rport",
            "Max-Forwards: 70",
            f"From: <sip:peer@{self.host}>;tag={secrets.token_hex(4)}",
            f"To: <{uri}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {call_id}",
            f"CSeq: 7 {method}",
            f"Contact: <sip:peer@{self.host}:{self.port}>",
            *extra,
            "Content-Length: 0",
        ]
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), self.front)
        return call_id

    async def answer(self, call_id: str, within_s: float = 10.0) -> Any:
        """The final answer to the request with ``call_id``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while (left := deadline - loop.time()) > 0:
            found = parse_answer(await asyncio.wait_for(loop.sock_recv(self.sock, 65535), left))
            if found is not None and found.status >= 200 and found.headers.get("call-id") == call_id:
                return found
        raise TimeoutError(f"no answer to {call_id}")

    def pending(self) -> list[bytes]:
        """Whatever has arrived and not been read."""
        got = []
        while True:
            try:
                got.append(self.sock.recv(65535))
            except BlockingIOError:
                return got


@contextmanager
def peer(host: str, front: tuple[str, int]) -> Iterator[Peer]:
    p = Peer(host, front)
    try:
        yield p
    finally:
        p.close()


async def test_a_strangers_invite_gets_403_at_the_front_and_no_worker_sees_it(tmp_path: Path) -> None:
    work = sipp_dir(tmp_path)
    config = {"front_allowed_sources": [f"{CALLER}/32"], "sip_server_header": SERVER}
    async with front_node(tmp_path, workers=1, config=config) as (node, port, _):
        assert f"sources: {CALLER}/32; no authentication at the front" in node.stderr_tail(20000)

        refused = await invite(NODE_A, port, local_host=STRANGER)
        assert (refused.status, refused.reason) == (403, "Forbidden (source address not allowed)")
        assert refused.headers.get("server") == SERVER  # Kamailio answered (a worker's pjsua sends no Server)
        assert sessions(node) == 0

        # the trunk's call is answered: one model session, one worker report
        run = await sipp(work, f"{NODE_A}:{port}", calls=1, scenario="uac_short.xml")
        assert (run.successful, run.failed) == (1, 0), run.output[-3000:]
        await wait_for(polled(node.calls), "the call's report")
        assert sessions(node) == 1
        assert len(node.calls()) == 1

        assert counters(node)["refused_source"] == 1
        shown = await exported(node, {("callbridge_front_refused_total", "source"): 1.0})
        assert shown == {("callbridge_front_refused_total", "source"): 1.0}
        assert await node.metric("callbridge_sip_rejected_total", code="403") in (None, 0.0)  # no worker refused


async def test_a_flood_from_one_address_is_banned_while_another_caller_is_answered(tmp_path: Path) -> None:
    work = sipp_dir(tmp_path)
    config = {"front_pike_requests": 10, "front_pike_window_s": 2, "front_ban_s": 120}
    async with front_node(tmp_path, workers=1, config=config) as (node, port, _):
        with peer(FLOODER, (NODE_A, port)) as flooder:
            burst = 60
            for _ in range(burst):
                flooder.send("OPTIONS")  # the front answers OPTIONS to itself, until the flooder is banned

            answers: list[bytes] = []

            async def all_handled() -> dict[str, int] | None:
                answers.extend(flooder.pending())
                now = counters(node)
                return now if now["banned_dropped"] + len(answers) == burst else None

            now = await wait_for(all_handled, "every request of the burst answered or dropped")
            # pike blocks between front_pike_requests and three times that per window (README.pike §3.2; more when
            # a loaded front reads the burst across two windows), then the ban drops the rest
            assert 10 <= len(answers) < burst, len(answers)
            assert now["bans"] == 1

            # banned: a further request is dropped (counted), and nothing answers it
            flooder.send("OPTIONS")
            await wait_for(polled(lambda: counters(node)["banned_dropped"] == now["banned_dropped"] + 1), "it dropped")
            assert flooder.pending() == []

        # meanwhile another caller's call is answered
        run = await sipp(work, f"{NODE_A}:{port}", calls=1, scenario="uac_short.xml")
        assert (run.successful, run.failed) == (1, 0), run.output[-3000:]
        assert sessions(node) == 1

        dropped = float(burst + 1 - len(answers))
        expected = {("callbridge_front_bans_total", ""): 1.0, ("callbridge_front_banned_dropped_total", ""): dropped}
        assert await exported(node, expected) == expected


async def test_digest_at_the_front_challenges_answers_and_refuses(tmp_path: Path) -> None:
    work = sipp_dir(tmp_path)
    config = {
        "sip_auth_users": {USER: PASSWORD},
        "sip_auth_realm": REALM,
        "front_auth": True,
        "sip_server_header": SERVER,
    }
    async with front_node(tmp_path, workers=1, config=config) as (node, port, _):
        log = node.stderr_tail(20000)
        assert f"digest auth of new calls (1 users, realm {REALM})" in log
        assert PASSWORD not in log
        users = node.front_dir / "front.users"
        assert users.stat().st_mode & 0o777 == 0o600 and PASSWORD not in users.read_text()
        target = f"{NODE_A}:{port}"

        # no credentials: the front's challenge
        challenged = await invite(NODE_A, port)
        assert challenged.status == 401
        assert challenged.headers.get("server") == SERVER
        challenge = challenged.headers.get("www-authenticate", "")
        assert challenge.startswith("Digest") and f'realm="{REALM}"' in challenge and "qop" in challenge

        # good credentials: answered (the worker, which has the same users, takes the front's word for them)
        good = await sipp(work, target, calls=1, scenario="uac_front_digest.xml", extra=["-au", USER, "-ap", PASSWORD])
        assert (good.successful, good.failed) == (1, 0), good.output[-3000:]
        assert sessions(node) == 1

        # wrong ones: 403 Forbidden (bad credentials) from the front (the scenario checks the reason)
        wrong = await sipp(
            work, target, calls=1, scenario="uac_front_digest_wrong.xml", extra=["-au", USER, "-ap", "wrong"]
        )
        assert (wrong.successful, wrong.failed) == (1, 0), wrong.output[-3000:]
        assert sessions(node) == 1

        assert counters(node)["challenged"] == 3 and counters(node)["refused_credentials"] == 1
        expected = {
            ("callbridge_front_refused_total", "challenged"): 3.0,
            ("callbridge_front_refused_total", "credentials"): 1.0,
        }
        assert await exported(node, expected) == expected
        for code in ("401", "403"):
            assert await node.metric("callbridge_sip_rejected_total", code=code) in (None, 0.0)


async def test_in_dialog_requests_of_no_dialog_of_the_fronts_are_answered_404_and_never_relayed(
    tmp_path: Path,
) -> None:
    async with front_node(tmp_path, workers=1, config={"sip_server_header": SERVER}) as (node, port, health):
        assert "sources: any source (no front_allowed_sources); no authentication at the front" in node.stderr_tail(
            20000
        )
        with peer(ELSEWHERE, (ELSEWHERE, 0)) as elsewhere, peer(CALLER, (NODE_A, port)) as caller:
            route = (f"Route: <sip:{ELSEWHERE}:{elsewhere.port};lr>",)
            made_up = secrets.token_hex(4)
            caller.send("ACK", to_tag=made_up, extra=route)  # no transaction, no dialog: dropped
            for method in ("BYE", "INVITE", "MESSAGE"):
                call_id = caller.send(method, to_tag=made_up, extra=route)
                answer = await caller.answer(call_id)
                assert (method, answer.status) == (method, 404)
                assert answer.headers.get("server") == SERVER

            # within a real call, the caller's BYE naming the same address in a Route goes to the worker instead
            call = await invite(NODE_A, port, bye_headers=route, wait_bye=True)
            assert (call.status, call.bye) == (200, 200)
            # a request relayed there would have left the front before its answer came back
            assert elsewhere.pending() == []
        assert counters(node)["refused_dialog"] == 3

        # every worker drained: a new call gets 503 from the front, counted
        (worker,) = node.worker_addresses(health)
        set_state(node.front_dir / "rpc.sock", worker, DRAINED)
        full = await invite(NODE_A, port)
        assert full.status == 503 and "retry-after" not in full.headers  # front_retry_after_s 0

        expected = {
            ("callbridge_front_refused_total", "dialog"): 3.0,
            ("callbridge_front_full_total", ""): 1.0,
        }
        assert await exported(node, expected) == expected


async def test_topology_hiding_keeps_the_workers_address_from_the_caller(tmp_path: Path) -> None:
    work = sipp_dir(tmp_path)
    async with front_node(tmp_path, workers=1, config={"front_topology_hiding": True}) as (node, port, health):
        assert "; topology hidden" in node.stderr_tail(20000)
        (worker,) = node.worker_addresses(health)
        call = await invite(NODE_A, port, wait_bye=True)
        assert (call.status, call.bye) == (200, 200)
        contact = call.headers.get("contact", "")
        assert worker not in contact and "127.0.0.8" in contact, contact  # topoh's mask_ip in the worker's stead

        # a caller that follows the route set (SIPp's ACK and BYE to the front, without Route) is answered too
        run = await sipp(work, f"{NODE_A}:{port}", calls=1, scenario="uac_short.xml")
        assert (run.successful, run.failed) == (1, 0), run.output[-3000:]
        assert sessions(node) == 2


async def test_a_scanner_learns_nothing_and_is_banned_after_its_refusals(tmp_path: Path) -> None:
    """A scanner trying extensions from an address no worker allows: every INVITE is refused alike (403, the same
    reason whatever the extension, no header naming the product), none opens a model session, and after
    front_refusal_limit refusals (the worker's, relayed) its requests are dropped unanswered. The caller's call goes
    on being answered."""
    config = {"sip_allowed_sources": [f"{CALLER}/32"], "front_refusal_limit": 4, "front_ban_s": 120}
    async with front_node(tmp_path, workers=1, config=config) as (node, port, _):
        with peer(SCANNER, (NODE_A, port)) as scanner:
            probe = await scanner.answer(scanner.send("OPTIONS"))
            assert probe.status == 200
            assert not {"server", "user-agent"} & set(probe.headers), probe.headers
            refusals = []
            for extension in ("2000", "100", "9999", "0"):
                call_id = scanner.send("INVITE", uri=f"sip:{extension}@{NODE_A}:{port}")
                refusals.append(await scanner.answer(call_id))
            assert {(r.status, r.reason) for r in refusals} == {(403, "Forbidden (source address not allowed)")}
            assert not any({"server", "user-agent"} & set(r.headers) for r in refusals)
            assert sessions(node) == 0
            await wait_for(polled(lambda: counters(node)["bans"] == 1), "the scanner banned")

            dropped = counters(node)["banned_dropped"]
            scanner.send("INVITE")
            await wait_for(polled(lambda: counters(node)["banned_dropped"] == dropped + 1), "its INVITE dropped")
            assert [parse_answer(data) for data in scanner.pending()] == []
        await wait_for(polled(lambda: logged(node, "127.0.0.7 banned for 120 s: 4 refusals")), "the ban logged")
        assert (await invite(NODE_A, port, local_host=CALLER)).status == 200
        await wait_for(polled(lambda: sessions(node) == 1), "the caller's model session")


async def test_with_an_allow_list_a_source_refused_three_times_is_banned(tmp_path: Path) -> None:
    """SIPVicious's scan: svmap's OPTIONS, then svwar's INVITEs, giving up after 3 refusals. With an allow-list (and
    front_refusal_limit unset) the third refusal bans the address: its next request is dropped unanswered, while the
    listed trunk's call is answered."""
    config = {"front_allowed_sources": [f"{CALLER}/32"], "front_ban_s": 120}
    async with front_node(tmp_path, workers=1, config=config) as (node, port, _):
        assert "ban 120 s over 400 requests per 2 s or 3 refusals" in node.stderr_tail(20000)
        with peer(SCANNER, (NODE_A, port)) as scanner:
            refusals = [await scanner.answer(scanner.send("OPTIONS"))]
            for extension in ("100", "101"):
                refusals.append(await scanner.answer(scanner.send("INVITE", uri=f"sip:{extension}@{NODE_A}:{port}")))
            assert [(r.status, r.reason) for r in refusals] == [(403, "Forbidden (source address not allowed)")] * 3
            await wait_for(polled(lambda: counters(node)["bans"] == 1), "the scanner banned")

            dropped = counters(node)["banned_dropped"]
            scanner.send("INVITE", uri=f"sip:102@{NODE_A}:{port}")
            await wait_for(polled(lambda: counters(node)["banned_dropped"] == dropped + 1), "its INVITE dropped")
            assert [parse_answer(data) for data in scanner.pending()] == []
        await wait_for(polled(lambda: logged(node, f"{SCANNER} banned for 120 s: 3 refusals")), "the ban logged")
        assert (await invite(NODE_A, port, local_host=CALLER)).status == 200
        await wait_for(polled(lambda: sessions(node) == 1), "the trunk's model session")
