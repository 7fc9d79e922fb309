"""Hand-made SIP over UDP for the front's tests that need every field of a request in hand: the top Via branch (two
copies of one INVITE on two branches), the CSeq and the Authorization of a digest retry.

A :class:`Leg` is one socket on one loopback address; a :class:`Dialog` is the Call-ID, From-tag and CSeq its
requests share. Answers are read off the leg's socket and matched by Call-ID and CSeq."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from _front import Answer, parse_answer


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(6)


@dataclass
class Dialog:
    """What the requests of one call share: Call-ID and From-tag; ``cseq`` of its next request; the callee's tag."""

    call_id: str = field(default_factory=lambda: secrets.token_hex(8))
    from_tag: str = field(default_factory=lambda: secrets.token_hex(4))
    cseq: int = 1
    to_tag: str = ""


class Leg:
    """A SIP client socket on ``host`` that sends to the front at ``front`` (host, port)."""

    def __init__(self, host: str, front: tuple[str, int]) -> None:
        self.host, self.front = host, front
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.uri = f"sip:2000@{front[0]}:{front[1]}"

    def __enter__(self) -> Leg:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def sdp(self) -> str:
        return (
            f"v=0\r\no=- 1 1 IN IP4 {self.host}\r\ns=-\r\nc=IN IP4 {self.host}\r\nt=0 0\r\n"
            f"m=audio {self.port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )

    def send(
        self, method: str, dialog: Dialog, branch: str, *, to_tag: str = "", extra: Sequence[str] = (), body: str = ""
    ) -> None:
        """One request of ``dialog`` (CSeq ``dialog.cseq``) with top Via ``branch``."""
        lines = [
            f"{method} {self.uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:raw@{self.host}>;tag={dialog.from_tag}",
            f"To: <{self.uri}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {dialog.call_id}",
            f"CSeq: {dialog.cseq} {method}",
            f"Contact: <sip:raw@{self.host}:{self.port}>",
            *extra,
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), self.front)

    def invite(self, dialog: Dialog, branch: str = "", extra: Sequence[str] = ()) -> str:
        """An INVITE of ``dialog`` with an offer; returns its branch (``branch``, else a new one)."""
        branch = branch or new_branch()
        self.send("INVITE", dialog, branch, extra=extra, body=self.sdp())
        return branch

    async def answer(self, dialog: Dialog, method: str, *, final: bool = True, within_s: float = 15.0) -> Answer:
        """The next answer (a final one, unless ``final`` is False) to ``dialog``'s request ``method`` at its
        current CSeq."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + within_s
        while (left := deadline - time.monotonic()) > 0:
            found = parse_answer(await asyncio.wait_for(loop.sock_recv(self.sock, 65535), left))
            if (
                found is not None
                and found.headers.get("call-id") == dialog.call_id
                and found.headers.get("cseq") == f"{dialog.cseq} {method}"
                and (found.status >= 200 or not final)
            ):
                return found
        raise TimeoutError(f"no answer to {method} {dialog.call_id} on {self.host}:{self.port}")

    def ack(self, dialog: Dialog, answer: Answer, branch: str) -> None:
        """ACK ``answer`` to the INVITE sent on ``branch``: a failure's on that branch, a 2xx's on a new one."""
        to_tag = answer.headers.get("to", "").partition(";tag=")[2].split(";")[0]
        if answer.status < 300:
            dialog.to_tag, branch = to_tag, new_branch()
        self.send("ACK", dialog, branch, to_tag=to_tag)

    async def hang_up(self, dialog: Dialog) -> Answer:
        """BYE the answered call of ``dialog`` (to the front's address, no Route: as SIPp does); its final answer."""
        dialog.cseq += 1
        self.send("BYE", dialog, new_branch(), to_tag=dialog.to_tag)
        return await self.answer(dialog, "BYE")


# -- digest (RFC 2617 with qop=auth, as the front asks for it) --------------------------------------------------


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # digest's own hash (RFC 2617)


def challenge_of(answer: Answer) -> dict[str, str]:
    """The parameters of a 401's ``WWW-Authenticate: Digest ...`` (realm, nonce, qop, stale, ...)."""
    value = answer.headers.get("www-authenticate", "")
    assert value.startswith("Digest "), answer
    return {name.lower(): quoted or bare for name, quoted, bare in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', value)}


def authorization(challenge: dict[str, str], uri: str, user: str, password: str, nc: int = 1) -> str:
    """An ``Authorization`` header answering ``challenge`` for an INVITE of ``uri``."""
    cnonce, count = secrets.token_hex(4), f"{nc:08x}"
    ha1 = _md5(f"{user}:{challenge['realm']}:{password}")
    ha2 = _md5(f"INVITE:{uri}")
    response = _md5(f"{ha1}:{challenge['nonce']}:{count}:{cnonce}:auth:{ha2}")
    return (
        f'Authorization: Digest username="{user}", realm="{challenge["realm"]}", nonce="{challenge["nonce"]}", '
        f'uri="{uri}", response="{response}", algorithm=MD5, qop=auth, nc={count}, cnonce="{cnonce}"'
    )
