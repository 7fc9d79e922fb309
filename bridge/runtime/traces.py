"""Tracing's switch: the ``tracing`` setting turns a process's OpenTelemetry traces on (:mod:`bridge.runtime.tracing`),
and with it off nothing of OpenTelemetry is imported."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # OpenTelemetry is imported only when tracing is on
    from bridge.runtime.tracing import Tracing

log = logging.getLogger("bridge.tracing")


def start(mode: str, worker: str) -> Tracing | None:
    """This process's tracing when ``mode`` (the ``tracing`` setting) is ``otlp``, else None, and nothing of
    OpenTelemetry is imported. Without the SDK (the ``otel`` extra) it says so and the process goes on untraced."""
    if mode != "otlp":
        return None
    try:
        from bridge.runtime import tracing
    except ImportError as exc:
        log.error(
            "traces: tracing is otlp but the OpenTelemetry SDK is missing (pip install 'callbridge[otel]'): %s", exc
        )
        return None
    return tracing.start(worker)
