"""Active probes of the safe variant's model (pure): a plan's setting (``rollout.probes``), a probe's stream entry,
and how the breaker reads it.

A candidate whose calls fail in a run is rolled back by the breaker only against the safe variant's calls *started
during the run* (``bridge.rollout.engine``). At the last step the safe variant keeps only the holdout, and its calls
take minutes to end, so a dead candidate fails many calls before a holdout call begun after its death ends. A
**probe** answers sooner: the node opens a short session to the safe variant's model (the same endpoint, credential
and dialect as its calls; no caller), waits for the session's confirmation and closes it. Its answer goes to the
plan's record stream as an entry of its own (``{"probe": true, "call_id": "probe:<id>", "t", "started", "variant",
"ok", "ms", "error"}``, signed like a record), so every worker, ``rollout show`` and ``rollout evaluate`` feed it at
the same place. The engine counts it as one call of the safe variant begun when the probe began, for the breaker
alone (never for a guardrail's test, the split or the calls shown): a probe that opened tells the candidate's own
failure from a shared outage, one that failed is a shared outage's evidence and holds the breaker like a failed safe
call. A decision on a probe names it (its time, result and time to open).

A probe is wanted while a candidate under test has a run of at least ``breaker_min_run`` failures and the breaker
has not tripped; it is sent at most ``per_minute`` times a minute per plan, over every worker and node sharing the
Redis (:func:`gap_ms`), and never for a plan whose ``rollout.probes.enabled`` is false."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

KEPT = 64  # the latest probes the engine keeps (the breaker looks at those begun during a run)


class ProbeSpec(BaseModel):
    """A plan's ``rollout.probes`` (docs/configuration.md): on or off, the most a minute, each probe's time limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    per_minute: float = Field(1.0, gt=0, le=60)
    timeout_s: float = Field(5.0, gt=0, le=30)


def probe_line(spec: ProbeSpec, dialplan: str) -> str:
    """What ``serve`` logs at start and ``dialplan check`` prints of a rollout plan's probes (open by a setting)."""
    if not spec.enabled:
        return f"rollout {dialplan}: rollout.probes is off: the breaker waits for the safe variant's own calls"
    return (
        f"rollout {dialplan}: rollout.probes is on: at most {spec.per_minute:g} session(s) a minute to the safe "
        f"variant's model while a candidate's calls fail in a run (no caller, no response asked)"
    )


def gap_ms(spec: ProbeSpec) -> int:
    """The least time between two probes of a plan, in ms (the Redis mark's lifetime)."""
    return max(1, math.ceil(60_000 / spec.per_minute))


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe's answer: when it began and ended, whether the session opened, its time to open, and why not."""

    started: float
    t: float
    ok: bool
    ms: float | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As the breaker's evidence shows it (``at`` in ISO 8601 UTC, ``at_unix`` beside it)."""
        return {"at": _iso(self.started), "at_unix": round(self.started, 3), "ok": self.ok, "ms": self.ms} | (
            {"error": self.error} if self.error else {}
        )

    def text(self) -> str:
        """``a probe of its model at 14:00:05 UTC opened in 340 ms`` (or ``failed (auth)``)."""
        at = datetime.fromtimestamp(self.started, UTC).strftime("%H:%M:%S UTC")
        got = f"opened in {self.ms:.0f} ms" if self.ok and self.ms is not None else "opened" if self.ok else "failed"
        return f"{at} {got}" + (f" ({self.error})" if not self.ok and self.error else "")


def entry(probe_id: str, variant: str, probe: Probe) -> dict[str, Any]:
    """A probe as its stream entry (``call_id`` ``probe:<id>``: it counts once, like a record)."""
    out: dict[str, Any] = {
        "probe": True,
        "call_id": f"probe:{probe_id}",
        "t": round(probe.t, 3),
        "started": round(probe.started, 3),
        "variant": variant,
        "ok": probe.ok,
        "ms": None if probe.ms is None else round(probe.ms, 1),
    }
    return out | ({"error": probe.error} if probe.error else {})


def from_entry(record: Mapping[str, Any]) -> Probe | None:
    """A stream entry's probe (None: not a well-formed one)."""
    try:
        t, started = float(record["t"]), float(record.get("started") or record["t"])
        ms = record.get("ms")
        ms = None if ms is None else float(ms)
    except (KeyError, TypeError, ValueError):
        return None
    if not (math.isfinite(t) and math.isfinite(started)) or not isinstance(record.get("ok"), bool):
        return None
    error = record.get("error")
    return Probe(started, t, bool(record["ok"]), ms, str(error)[:40] if error else None)


def describe(probes: Iterable[Probe]) -> str:
    """The reason's words for the probes a decision counted: `` (2 probes of the safe variant's model among them;
    the latest at 14:00:05 UTC opened in 340 ms)``; empty for none."""
    used = list(probes)
    if not used:
        return ""
    last = max(used, key=lambda p: p.started)
    n = f"{len(used)} probe{'s' if len(used) > 1 else ''}"
    return f" ({n} of the safe variant's model among them; the latest at {last.text()})"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def during(
    safe_recent: Iterable[tuple[float, bool]], kept: Iterable[Probe], first: float
) -> list[tuple[float, bool, Probe | None]]:
    """The safe variant's calls (started, failed) and probes begun at or after ``first``, latest first: the
    breaker's comparison (a probe is one call begun when it began, failed when it did not open)."""
    out: list[tuple[float, bool, Probe | None]] = [(s, bad, None) for s, bad in safe_recent if s >= first]
    out += [(p.started, not p.ok, p) for p in kept if p.started >= first]
    return sorted(out, key=lambda x: (x[0], x[1]), reverse=True)
