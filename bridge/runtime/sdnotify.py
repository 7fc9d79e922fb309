"""systemd's readiness and watchdog protocol, in a few lines (sd_notify(3), no libsystemd).

Under a ``Type=notify`` unit systemd sets ``NOTIFY_SOCKET`` (a Unix datagram socket; a leading ``@`` names an abstract
one) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). ``serve`` sends ``READY=1`` once its
workers are up, ``WATCHDOG=1`` every half interval while its event loop runs, and ``STOPPING=1`` when it stops.
:meth:`Notifier.from_environ` takes the variables out of the environment, as ``sd_notify(unset_environment=1)``
does, so that the workers and Kamailio do not inherit them. Without ``NOTIFY_SOCKET`` every call does nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass

READY, STOPPING, WATCHDOG = "READY=1", "STOPPING=1", "WATCHDOG=1"
VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@dataclass(frozen=True)
class Notifier:
    address: str | None = None  # the socket's path, or "\0name" for an abstract socket
    watchdog_s: float | None = None  # how often to send WATCHDOG=1: half of WATCHDOG_USEC

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None, pid: int | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        found = {name: env.pop(name, "") for name in VARIABLES}
        path = found["NOTIFY_SOCKET"]
        address = ("\0" + path[1:] if path.startswith("@") else path) or None
        usec, for_pid = found["WATCHDOG_USEC"], found["WATCHDOG_PID"]
        mine = not for_pid or (for_pid.isdigit() and int(for_pid) == (os.getpid() if pid is None else pid))
        watchdog_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and mine else None
        return cls(address, watchdog_s)

    def notify(self, message: str) -> bool:
        """Send one state line; False when there is no socket, or it refused or is full (never raises or waits)."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)  # a reader that does not read never stalls the event loop
                sock.sendto(message.encode(), self.address)
        except OSError:
            return False
        return True
