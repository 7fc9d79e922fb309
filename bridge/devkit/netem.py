"""A network line's impairments for RTP, decided packet by packet from a seeded generator: what the
:mod:`bridge.devkit.rtprelay` does to each datagram it relays (``tc netem`` is not available here).

Per packet, in this order:

- **random loss**: dropped with probability ``loss`` (Bernoulli);
- **bursts**: a two-state Gilbert-Elliott chain (good, bad) drops every packet while it is in the bad state. It
  enters the bad state with probability ``p`` per packet and leaves it with ``r = 1 / burst_len``, so bursts last
  ``burst_len`` packets on average and the long-run share of packets lost to them is ``burst_loss``
  (``p = burst_loss * r / (1 - burst_loss)``);
- **delay and jitter**: a packet that is kept is delivered ``delay_ms`` plus a uniform draw in ``[0, jitter_ms]``
  later, each packet on its own, so that a jitter larger than the packets' spacing reorders them (as netem does);
- **reordering**: with probability ``reorder`` a kept packet is held back ``reorder_ms`` more, behind later ones.

The same settings and ``seed`` give the same fates to the same sequence of packets. The module is pure: no clock,
no socket.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Impairment:
    """What a line does to the packets one way. All zero: a clean line (every packet, at once, in order)."""

    loss: float = 0.0  # random (independent) loss, 0..1
    burst_loss: float = 0.0  # long-run share lost in Gilbert-Elliott bursts, 0..1
    burst_len: float = 3.0  # mean burst length, packets (>= 1)
    delay_ms: float = 0.0  # fixed one-way delay
    jitter_ms: float = 0.0  # each packet delayed a further uniform 0..jitter_ms
    reorder: float = 0.0  # share of packets held back ``reorder_ms`` more, 0..1
    reorder_ms: float = 40.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("loss", "burst_loss", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"Impairment.{name}: expected 0 <= value < 1, got {value}")
        for name in ("delay_ms", "jitter_ms", "reorder_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"Impairment.{name}: expected >= 0, got {getattr(self, name)}")
        if self.burst_len < 1.0:
            raise ValueError(f"Impairment.burst_len: expected >= 1 packet, got {self.burst_len}")

    @property
    def expected_loss(self) -> float:
        """The long-run share of packets lost, random and burst loss together."""
        return 1.0 - (1.0 - self.loss) * (1.0 - self.burst_loss)

    def describe(self) -> str:
        parts = [f"loss {100 * self.loss:g} %", f"bursts {100 * self.burst_loss:g} % (mean {self.burst_len:g})"]
        parts.append(f"delay {self.delay_ms:g} ms + jitter 0..{self.jitter_ms:g} ms")
        if self.reorder:
            parts.append(f"reorder {100 * self.reorder:g} % by {self.reorder_ms:g} ms")
        return ", ".join(parts)


@dataclass
class LineStats:
    """What a line did, counted as it went (the relay adds the reordering it saw on delivery)."""

    packets: int = 0
    lost_random: int = 0
    lost_burst: int = 0
    bursts: int = 0
    held_back: int = 0
    delay_ms_total: float = 0.0
    delay_ms_max: float = 0.0
    delivered: int = 0
    reordered: int = 0  # delivered after a packet that came in later

    @property
    def lost(self) -> int:
        return self.lost_random + self.lost_burst

    def as_dict(self) -> dict[str, float | int]:
        kept = self.packets - self.lost
        return {
            "packets": self.packets,
            "lost": self.lost,
            "lost_random": self.lost_random,
            "lost_burst": self.lost_burst,
            "bursts": self.bursts,
            "loss_pct": round(100.0 * self.lost / self.packets, 3) if self.packets else 0.0,
            "held_back": self.held_back,
            "delivered": self.delivered,
            "reordered": self.reordered,
            "delay_ms_mean": round(self.delay_ms_total / kept, 2) if kept else 0.0,
            "delay_ms_max": round(self.delay_ms_max, 2),
        }


@dataclass
class Line:
    """One direction of a line: :meth:`fate` decides each packet's, in arrival order."""

    impairment: Impairment
    stats: LineStats = field(default_factory=LineStats)
    _rng: random.Random = field(init=False, repr=False)
    _bad: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.impairment.seed)

    def _burst(self) -> bool:
        imp = self.impairment
        if not imp.burst_loss:
            return False
        leave = 1.0 / imp.burst_len
        enter = imp.burst_loss * leave / (1.0 - imp.burst_loss)
        if self._bad:
            self._bad = self._rng.random() >= leave
        elif self._rng.random() < enter:
            self._bad = True
            self.stats.bursts += 1
        return self._bad

    def fate(self) -> float | None:
        """The next packet's delay in seconds, or None: it is lost. The loss, jitter and hold-back draws are made
        for every packet, lost or kept, so that the delays do not shift with the losses."""
        imp, stats, rng = self.impairment, self.stats, self._rng
        stats.packets += 1
        random_loss = rng.random() < imp.loss
        burst = self._burst()
        jitter = rng.random() * imp.jitter_ms
        held = rng.random() < imp.reorder
        if random_loss:
            stats.lost_random += 1
            return None
        if burst:
            stats.lost_burst += 1
            return None
        delay_ms = imp.delay_ms + jitter + (imp.reorder_ms if held else 0.0)
        stats.held_back += held
        stats.delay_ms_total += delay_ms
        stats.delay_ms_max = max(stats.delay_ms_max, delay_ms)
        return delay_ms / 1000.0
