"""Tracing's switch: the ``tracing`` setting turns a process's OpenTelemetry traces on (:mod:`bridge.runtime.tracing`),
and with it off nothing of OpenTelemetry is imported. The exporter's headers (an API key) are held here, out of the
environment (:func:`hold_headers`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # OpenTelemetry is imported only when tracing is on
    from bridge.runtime.tracing import Tracing

log = logging.getLogger("bridge.tracing")
_HEADERS: list[str] = []  # the OTLP exporter's headers, as held by hold_headers (at most one text)


def hold_headers(text: str | None) -> None:
    """Keep the OTLP exporter's headers (``OTEL_EXPORTER_OTLP_HEADERS``'s text, ``key=value,...``: an API key) in
    this process's memory: serve reads them before it drops the variable from its environment and sends them to each
    worker through its settings pipe, so that no process's environment holds them (nor any log: never logged)."""
    _HEADERS[:] = [text] if text else []


def held_headers() -> str | None:
    """The headers :func:`hold_headers` keeps; None: none."""
    return _HEADERS[0] if _HEADERS else None


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
    return tracing.start(worker, held_headers())
