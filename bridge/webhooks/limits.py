"""What webhooks may hold, and how long: every bound in one record. Pure.

* **Per endpoint, in Redis** (:attr:`Limits.max_events`, :attr:`Limits.max_bytes`): its pending deliveries and its
  dead letters together. Past either cap the oldest go first, dead letters before pending ones (a receiver down for
  days costs a bounded amount of memory, and what is newest is kept); each one dropped is counted
  (``callbridge_webhooks_dropped_total{reason="full"}``).
* **Dead letters** are dropped :attr:`Limits.dead_ttl_s` after they were given up.
* **A long string** in an event's data (a caller's 20 kB utterance) is cut to :attr:`Limits.field_max_chars`
  characters and marked (:func:`bridge.webhooks.body.cut_long`).
* **In memory** (:attr:`Limits.memory_max_events`, :attr:`Limits.memory_max_bytes`): a process's events waiting
  while Redis is away; past either cap the oldest are dropped (``reason="memory"``).

The settings (``webhook_max_events``, ``webhook_max_mb``, ``webhook_dead_letter_ttl_s``, ``webhook_field_max_chars``,
``webhook_memory_max_events``, ``webhook_memory_max_mb``; docs/configuration.md) make one (:meth:`Limits.of`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

MB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    max_events: int = 10_000
    max_bytes: int = 64 * MB
    dead_ttl_s: float = 7 * 86400.0
    field_max_chars: int = 4000
    memory_max_events: int = 1000
    memory_max_bytes: int = 16 * MB

    @classmethod
    def of(cls, settings: Any) -> Limits:
        """The limits ``settings`` (:class:`bridge.config.Settings`) set."""
        return cls(
            max_events=settings.webhook_max_events,
            max_bytes=int(settings.webhook_max_mb * MB),
            dead_ttl_s=settings.webhook_dead_letter_ttl_s,
            field_max_chars=settings.webhook_field_max_chars,
            memory_max_events=settings.webhook_memory_max_events,
            memory_max_bytes=int(settings.webhook_memory_max_mb * MB),
        )


DEFAULT: Final = Limits()  # the settings' defaults
