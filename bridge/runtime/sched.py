"""Real-time scheduling for a SIP worker: its 20 ms wake-ups are served before ordinary work (opt-in); and the
front's niceness (:func:`renice_group`).

A worker sleeps most of the time and wakes every 20 ms: the media clock thread, then the event loop that converts
the caller's frame and writes it to the WebSocket. On a busy machine the loop's wake-up waits behind whatever else
is runnable. Measured with ``bench calls`` on this 2-core machine, same day, same code: inbound p99 (clock thread
-> WebSocket) at capacity was 20-33 ms with ordinary scheduling and 0.6-0.7 ms with the workers at ``SCHED_RR``.
The conversion itself takes well under a millisecond, so that tail is only the wait for a core.

Telephony servers are run this way: Asterisk has ``-p``, FreeSWITCH ``-rp``. The setting is
``realtime_priority`` (``callbridge serve --realtime-priority N``; 0, the default, keeps ordinary scheduling).

- It needs ``CAP_SYS_NICE`` (root, or ``LimitRTPRIO=`` in a systemd unit, or ``rtprio`` in limits.conf). Without
  it the worker says so in its start-up line and runs with ordinary scheduling, as it does by default.
- What it costs: at saturation, ordinary processes on the same machine wait for the workers. In the benchmark
  those are the load callers and the emulator, which stand in for the phones and the model and share the 2 cores.
  In the failing steps, frames reached the callers late, and answers had dead air because the emulator fell
  behind. Capacity was still the same or higher than with ordinary scheduling: 104 against 56 calls in one pair
  of same-day ladders, 80 against 80 in the other.
- The kernel's real-time throttle (``kernel.sched_rt_runtime_us``, 95 % by default) stays on, so a runaway worker
  still leaves 5 % of every core to everything else.
- Call this on the loop thread before pjsua starts. Every thread pjsua starts inherits the policy. pjmedia raises
  its clock thread to the policy's top (99). The native media port (cport.c) then sets the clock thread to the
  loop's priority on the first frame (to 1 when the worker is ordinary). That thread only moves frames between
  the sockets, the jitter buffers and the ports' rings. The ceiling's loopback apps are little more than that
  thread, and they use 0.3-0.4 % of a core per call.
"""

from __future__ import annotations

import os

MAX_PRIORITY = 99


def realtime_priority() -> int:
    """This thread's real-time priority, 0 if it is not real-time."""
    if os.sched_getscheduler(0) in (os.SCHED_RR, os.SCHED_FIFO):
        return int(os.sched_getparam(0).sched_priority)
    return 0


def describe() -> str:
    """This thread's policy, for log lines: ``SCHED_RR 10`` or ``ordinary``."""
    priority = realtime_priority()
    if not priority:
        return "ordinary"
    return f"{'SCHED_RR' if os.sched_getscheduler(0) == os.SCHED_RR else 'SCHED_FIFO'} {priority}"


def use_realtime(priority: int) -> str:
    """Move the calling thread (and the threads it starts later) to ``SCHED_RR`` at ``priority``.

    Returns a line for the start-up log. A missing privilege or an unsupported platform is not an error: the
    thread keeps ordinary scheduling, and the line says why. ``priority`` 0 leaves the thread alone.
    """
    if not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(f"realtime priority must be 0..{MAX_PRIORITY}, not {priority}")
    if priority == 0:
        return describe()
    if not hasattr(os, "sched_setscheduler"):
        return f"ordinary (realtime priority {priority} asked for: this platform has no sched_setscheduler)"
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(priority))
    except PermissionError:
        why = "not permitted, needs CAP_SYS_NICE or an rtprio limit"
        return f"ordinary (realtime priority {priority} asked for: {why})"
    except OSError as exc:
        return f"ordinary (realtime priority {priority} asked for: {exc.strerror or exc})"
    return describe()


def renice_group(pgid: int, niceness: int) -> str:
    """Set every process of the process group ``pgid`` (a child started in a session of its own) to ``niceness``;
    the processes it forks later inherit it. Returns a line for the log; a missing privilege is not an error."""
    try:
        os.setpriority(os.PRIO_PGRP, pgid, niceness)
    except PermissionError:
        return f"ordinary (nice {niceness} asked for: needs CAP_SYS_NICE)"
    except OSError as exc:
        return f"nice unchanged (nice {niceness} asked for: {exc.strerror or exc})"
    return f"nice {niceness}"
