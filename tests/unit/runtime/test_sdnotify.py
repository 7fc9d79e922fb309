"""sd_notify in a few lines: the variables leave the environment, abstract sockets, WATCHDOG_PID, and a reader
that does not read never blocks the sender."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from bridge.runtime.sdnotify import READY, WATCHDOG, Notifier


def test_variables_are_taken_and_the_interval_is_half(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier.from_environ(env)
    assert env == {}  # children do not inherit them
    assert notifier == Notifier(str(tmp_path / "n.sock"), 1.5)
    assert Notifier.from_environ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}, pid=2).watchdog_s is None
    assert not Notifier.from_environ({}).notify(READY)  # no socket: nothing to do


def test_abstract_socket_and_a_full_queue(tmp_path: Path) -> None:
    name = f"callbridge-test-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        assert notifier.notify(READY)
        assert server.recv(64) == b"READY=1"
        sent = [notifier.notify(WATCHDOG) for _ in range(2000)]  # nobody reads: the queue fills, no call blocks
        assert sent[0] and not sent[-1]
