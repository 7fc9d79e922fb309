"""``callbridge call --rtp-port P`` (issue 62, item 23): the softphone's audio takes RTP port P (RTCP P+1), so a
test or a demo keeps it inside the ports it was given (``CALLBRIDGE_PORT_RANGE``). The called side is a raw UDP
socket that reads the INVITE's SDP offer and refuses the call (486)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

from _helpers import REPO, _env, free_port

from bridge.devkit.ports import free_port_block


def _refuse_one(sock: socket.socket, seen: list[str]) -> None:
    """Read one INVITE, keep it, answer it 486 (the softphone ACKs and gives up)."""
    sock.settimeout(20)
    data, peer = sock.recvfrom(65535)
    invite = data.decode("utf-8", "replace")
    seen.append(invite)
    head = invite.split("\r\n\r\n", 1)[0].split("\r\n")
    copied = [line for line in head[1:] if line.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")]
    answer = "\r\n".join(["SIP/2.0 486 Busy Here", *copied, "Content-Length: 0"]) + "\r\n\r\n"
    sock.sendto(answer.encode(), peer)
    try:
        while True:  # its ACK
            sock.recvfrom(65535)
    except OSError:
        return


def test_call_takes_the_rtp_port_it_is_given() -> None:
    rtp = free_port_block(2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", free_port()))
        port = sock.getsockname()[1]
        seen: list[str] = []
        reader = threading.Thread(target=_refuse_one, args=(sock, seen), daemon=True)
        reader.start()
        done = subprocess.run(
            [sys.executable, "-m", "bridge", "call", f"sip:100@127.0.0.1:{port}", "--rtp-port", str(rtp),
             "--timeout", "10", "--json"],
            env=_env(), cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        sock.close()
        reader.join(5)
    assert done.returncode == 1, done.stderr[-2000:]  # not answered: 486
    assert seen, done.stderr[-2000:]
    offer = seen[0].split("\r\n\r\n", 1)[1]
    media = next(line for line in offer.splitlines() if line.startswith("m=audio "))
    assert media.split()[1] == str(rtp), offer
