"""One answer per INVITE transaction, whatever arrives again (issue 62, item 3), at a real ``callbridge serve`` reached
straight (no front), the emulator as the model.

pjsip ends an INVITE server transaction when it sends a 2xx, and keeps none for a stateless answer (pjsua's own 486
of a full worker): a retransmission of the INVITE arriving later (same Call-ID, From tag, CSeq and branch, no To tag)
was taken for a new call. After the ACK it started a second call streaming the agent to the caller's port; a refused
INVITE's retransmission got 200 once a slot had freed. Now each worker keeps every initial INVITE's final answer for
64*T1 (bridge/sip/answers.py, fed by bridge/sip/txhook.py):

* SIPp (tests/integration/sip/scenarios/uac_invite_again.xml): INVITE, 200, ACK, the same INVITE again while the
  call is up and again after its BYE: one call (one "incoming call" line, one model session, one report, nothing
  live after it), and every 200 to the INVITE carries the one To tag;
* a raw caller whose INVITE gets pjsua's 486 from a worker whose 4 calls are up sends it again once a call has ended
  (and the slot is free: a new INVITE is answered): 486 again, the same answer; the same Call-ID, From tag and CSeq
  on another branch (a merged request, RFC 3261 §8.2.2.2) gets 482.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from pathlib import Path

import pytest
from _edge import Node, api, serve_node, wait_report

from bridge.devkit.ports import free_port
from tests.integration.sip._helpers import LOCALHOST, Dialog, RawSip, SipResponse, in_dialog, open_dialog, sdp_offer

SIPP = shutil.which("sipp")
SCENARIO = Path(__file__).resolve().parents[1] / "sip" / "scenarios" / "uac_invite_again.xml"
PROFILE = {"instructions": "Answer briefly.", "audio_format": "pcm16"}
PLAN = {"name": "again", "match": ["1000"], "dialect": "ga", "greeting": "Greet the caller.", "profile": PROFILE}
PCMU = {0: "PCMU/8000"}

pytestmark = pytest.mark.integration


def incoming_lines(node: Node, sip_call_id: str) -> list[str]:
    """The worker's "incoming call" lines for this SIP Call-ID: one per call pjsua made of it."""
    log = node.log.read_text(errors="replace")
    return [line for line in log.splitlines() if "incoming call" in line and f"(Call-ID {sip_call_id!r})" in line]


def invite_200_tags(messages: Path) -> list[str]:
    """The To tag of every 200 to an INVITE in SIPp's message trace (``-trace_msg``), in order."""
    tags = []
    for block in messages.read_text(errors="replace").split("\n\n"):
        lines = [line.strip() for line in block.splitlines()]
        if not lines or not lines[0].startswith("SIP/2.0 200"):
            continue
        fields = {line.split(":", 1)[0].lower(): line.split(":", 1)[1] for line in lines if ":" in line}
        if fields.get("cseq", "").split()[-1:] == ["INVITE"]:
            tags.append(fields.get("to", "").partition("tag=")[2].split(";")[0].strip())
    return tags


async def sipp_again(tmp: Path, node: Node, call_ids: str) -> tuple[int, str, Path]:
    """SIPp's run of uac_invite_again.xml: its exit status, its output and its message trace."""
    assert SIPP is not None
    work = tmp / "sipp"
    work.mkdir(parents=True)
    shutil.copy(SCENARIO, work / SCENARIO.name)
    messages = work / "messages.log"
    proc = await asyncio.create_subprocess_exec(
        SIPP, "-sf", str(work / SCENARIO.name), "-m", "1", "-i", LOCALHOST, "-mi", LOCALHOST,
        "-p", str(free_port()), "-mp", str(free_port()), "-s", "1000", "-cid_str", call_ids,
        "-timeout", "30", "-timeout_error", "-nostdin", "-trace_msg", "-message_file", str(messages),
        f"{LOCALHOST}:{node.sip_port}",
        cwd=work, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(errors="replace")[-3000:], messages


async def calls_left(node: Node, settle_s: float = 5.0) -> list[dict[str, object]]:
    """The live calls once the ended call's own entry has gone (it goes a moment after its report): a second call
    made of a copy would stay up, streaming, until its media timeout, far longer than this."""
    deadline = asyncio.get_running_loop().time() + settle_s
    while True:
        live: list[dict[str, object]] = (await api(node, "/api/calls"))["calls"]
        if not live or asyncio.get_running_loop().time() > deadline:
            return live
        await asyncio.sleep(0.1)


@pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)")
async def test_an_answered_invite_sent_again_makes_no_second_call(tmp_path: Path) -> None:
    token = secrets.token_hex(4)
    sip_call_id = f"again-{token}-1@{LOCALHOST}"  # what -cid_str makes of SIPp's first (and only) call
    async with serve_node(tmp_path / "node", [PLAN]) as node:
        rc, out, messages = await sipp_again(tmp_path, node, f"again-{token}-%u@%s")
        report = await wait_report(node, sip_call_id)
        live = await calls_left(node)
        incoming = incoming_lines(node, sip_call_id)
        sessions = list(node.emulator.sessions)
    assert rc == 0, out  # no answer came to either INVITE sent again (SIPp fails on an unexpected response)
    assert len(incoming) == 1, incoming  # pjsua made one call of the transaction, not one per copy
    assert report["answered"] is True, report
    assert len(sessions) == 1, [s.summary() for s in sessions]  # one model session
    assert live == [], live  # no second call left streaming the agent to the caller's port
    tags = invite_200_tags(messages)
    assert tags and len(set(tags)) == 1, tags  # no second 200 with another To tag


def _invite(raw: RawSip, call_id: str, branch: str) -> bytes:
    uri = f"sip:1000@{LOCALHOST}:{raw.target[1]}"
    return raw._request("INVITE", uri, call_id, 1, branch, body=sdp_offer(free_port(), PCMU))


def _answer(raw: RawSip, request: bytes, call_id: str) -> SipResponse:
    """Send ``request`` (an INVITE), read its final answer and ACK a refusal on the INVITE's branch."""
    raw.sock.sendto(request, raw.target)
    final, _seen = raw._read_final(10.0, call_id, "1 INVITE")
    if final.status >= 300:
        branch = request.split(b";branch=", 1)[1].split(b";", 1)[0].decode()
        to_tag = final.headers.get("to", "").partition("tag=")[2].split(";")[0]
        uri = f"sip:1000@{LOCALHOST}:{raw.target[1]}"
        raw.sock.sendto(raw._request("ACK", uri, call_id, 1, branch, to_tag), raw.target)
    return final


@pytest.mark.timeout(180)
async def test_a_refused_invite_sent_again_is_refused_again(tmp_path: Path) -> None:
    async with serve_node(tmp_path / "node", [PLAN]) as node:
        port = node.sip_port
        holders = [RawSip(port) for _ in range(4)]
        late = RawSip(port)
        try:
            dialogs: list[Dialog] = []
            for raw in holders:  # the worker's 4 calls
                final, dialog = await asyncio.to_thread(open_dialog, raw, sdp_offer(free_port(), PCMU), "1000", 15.0)
                assert final.status == 200, final.raw
                dialogs.append(dialog)
            call_id, branch = f"late-{secrets.token_hex(6)}", "z9hG4bK" + secrets.token_hex(6)
            request = _invite(late, call_id, branch)
            first = await asyncio.to_thread(_answer, late, request, call_id)
            assert (await asyncio.to_thread(in_dialog, holders[0], dialogs[0], "BYE")).status == 200
            await wait_report(node, dialogs[0].call_id)  # that call has ended: its slot is free again
            again = await asyncio.to_thread(_answer, late, request, call_id)  # the same bytes: a retransmission
            merged = await asyncio.to_thread(_answer, late, _invite(late, call_id, branch + "x"), call_id)
            with RawSip(port) as fresh:  # a new INVITE finds the free slot
                control, seen = await asyncio.to_thread(fresh.invite, sdp_offer(free_port(), PCMU), "1000", 15.0)
            for raw, dialog in zip(holders[1:], dialogs[1:], strict=True):
                assert (await asyncio.to_thread(in_dialog, raw, dialog, "BYE")).status == 200
        finally:
            for raw in [*holders, late]:
                raw.close()
        incoming = incoming_lines(node, call_id)
        sessions = len(node.emulator.sessions)
    assert (first.status, first.reason) == (486, "Busy Here"), first.raw  # pjsua's own: its 4 calls are up
    assert (again.status, again.reason) == (first.status, first.reason), again.raw  # the same answer, not a call
    assert (merged.status, merged.reason) == (482, "Loop Detected"), merged.raw
    assert control.status == 200, seen  # the slot was free: the second 486 was the transaction's answer
    assert incoming == [], incoming  # pjsua never made a call of the refused transaction
    assert sessions == 5, sessions  # the 4 calls and the control call: none for the refused INVITE
