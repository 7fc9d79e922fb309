"""Child processes end with the process that started them: Linux's parent-death signal.

``callbridge serve`` starts the workers and, with ``--front kamailio``, Kamailio. When ``serve`` stops normally it
stops them itself. When it is killed outright (SIGKILL, the OOM killer), nothing runs its clean-up, and without
this the workers and Kamailio would live on, holding the SIP ports, so that the next ``serve`` cannot start.

prctl(2) ``PR_SET_PDEATHSIG`` asks the kernel to send a signal to a process when its parent dies. A worker asks for
SIGTERM, which it handles like an operator's SIGTERM: every call is hung up with a BYE, then it exits. Kamailio is
started through util-linux's ``setpriv --pdeathsig``, which sets the same thing and then executes Kamailio (the
setting survives execve(2)). Elsewhere than Linux both are no-ops; under systemd the unit's control group does the
same job.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> bool:
    """Ask for ``sig`` when the parent dies; True if the kernel took it. Call it first thing in a child."""
    if not sys.platform.startswith("linux"):
        return False
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() == 1:  # the parent died before the request: act as if the signal had come
        os.kill(os.getpid(), sig)
    return True


def pdeathsig_prefix(sig: signal.Signals = signal.SIGTERM) -> list[str]:
    """The argv prefix that starts a foreign binary with the parent-death signal set ([] where none is available)."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, f"--pdeathsig={sig.name}"] if setpriv else []
