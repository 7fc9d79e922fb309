"""One incoming call's media guard over the call's life (:mod:`bridge.sip.rtpguard`), and the check that the caller
is heard at all. No pjsua2 here: the gateway hands in what pjsua2 tells it.

A caller whose offer names one host and who sends from a third is heard by nobody: every packet is dropped. The
gateway's media watch (about once a second) asks :meth:`CallerMedia.check`: no RTP admitted since the answer (or since
the caller was last heard), at least :data:`ALL_DROPPED_PACKETS` dropped, for :data:`MIN_WINDOW_S` or more. Then the
guard samples the strangers for :data:`SAMPLE_S` (:meth:`~bridge.sip.rtpguard.MediaGuard.sample`) to learn the
address they come from, and one WARNING names the admitted hosts and that address; the call's events get a
:class:`~bridge.events.MediaDropped` (its timeline's ``media_dropped``). Once per call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bridge.events import MediaDropped
from bridge.sip.rtpguard import MediaGuard

_LOG = logging.getLogger("bridge.sip")

ALL_DROPPED_PACKETS = 10  # 200 ms of a caller's RTP, every packet dropped
MIN_WINDOW_S = 0.5  # after the answer: a caller's first packets follow its ACK within a few frames
SAMPLE_S = 0.2  # strangers' datagrams let through, cut to their header, to learn their source (10 packets of RTP)

RtpTransport = Callable[[], "tuple[int, str] | None"]  # the call's RTP socket port and its last packet's source host


class CallerMedia:
    """The guard of one call (``guard``, locked to ``sources``: :func:`~bridge.sip.rtpguard.media_sources` of the
    offer and of ``signalling``, the INVITE's source host), its drop count, and the all-dropped check. ``emit`` gets
    the call's :class:`~bridge.events.MediaDropped`."""

    def __init__(
        self,
        call_id: str,
        guard: MediaGuard,
        sources: tuple[str, ...],
        signalling: str | None,
        emit: Callable[[MediaDropped], None],
    ) -> None:
        self.call_id = call_id
        self.guard: MediaGuard | None = guard
        self.sources = sources
        self.signalling = signalling
        self._emit = emit
        self._final = 0
        self._baseline: tuple[float, int, int] | None = None  # since when: (time, rx packets, dropped)
        self._reported = False
        self._sampling = False
        guard.lock(sources)

    @property
    def dropped(self) -> int:
        """Media packets dropped on this call's sockets so far: not from the caller's media hosts."""
        return self.guard.dropped() if self.guard is not None else self._final

    def relock(self, sources: tuple[str, ...]) -> None:
        """A re-INVITE's offer: its hosts from now on."""
        if self.guard is not None and sources:
            self.sources = sources
            self.guard.lock(sources)

    def answered(self, now: float) -> None:
        """The caller's ACK: the check's window starts."""
        if self._baseline is None:
            self._baseline = (now, 0, self.dropped)

    def check(self, now: float, rx_packets: int | None, held: bool, transport: RtpTransport) -> None:
        """The watch's look: ``rx_packets`` admitted so far (pjmedia's count; None without a stream)."""
        guard, baseline = self.guard, self._baseline
        if guard is None or baseline is None or rx_packets is None or self._reported or not guard.sources:
            return
        since, rx_then, dropped_then = baseline
        dropped = guard.dropped()
        if rx_packets > rx_then or held:  # heard (or quiet on hold): the window starts again
            self._baseline = (now, rx_packets, dropped)
            return
        if now - since < MIN_WINDOW_S or dropped - dropped_then < ALL_DROPPED_PACKETS:
            return
        self._reported = True
        found = transport()
        if found is not None and guard.sample(found[0]):
            self._sampling = True
            asyncio.get_running_loop().call_later(SAMPLE_S, self._sampled, transport, dropped)
        else:
            self._report(dropped, "")

    def _sampled(self, transport: RtpTransport, dropped: int) -> None:
        if not self._sampling or self.guard is None:
            return  # the call ended meanwhile
        self._sampling = False
        found = transport()
        self.guard.strict()
        source = found[1] if found is not None and found[1] not in self.guard.sources else ""
        self._report(dropped, source)

    def _report(self, dropped: int, source: str) -> None:
        guard = self.guard
        source = source or (guard.seen[0] if guard is not None and guard.seen else "")
        admitted = " and ".join(
            f"{host} ({'the INVITE' if host == self.signalling else 'the offer'})" for host in self.sources
        )
        _LOG.warning(
            "%s: no audio from the caller: %d media packets dropped, none admitted; media is admitted from %s, "
            "the caller sends from %s",
            self.call_id,
            dropped,
            admitted,
            source or "an address the kernel did not name",
        )
        self._emit(MediaDropped(dropped=dropped, admitted=", ".join(self.sources), source=source))

    def close(self) -> int:
        """The call has ended: the sockets go back, the final count stays."""
        guard, self.guard = self.guard, None
        self._sampling = False
        if guard is not None:
            self._final = guard.close()
        return self._final
