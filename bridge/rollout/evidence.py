"""What a guarded rollout counts (pure): the stream's entries as evidence, each in its place. Each record counts
once (its ``call_id``; a record far older than the newest is a replay), a late outcome waits for its call's window,
the split counts each caller once (:mod:`bridge.rollout.srm`), the breaker's run counts calls by their start, and
every value goes to the tests of each candidate it concerns, grouped by caller. The rules these serve, and what is
decided on them, are :mod:`bridge.rollout.engine`'s."""

from __future__ import annotations

import bisect
import enum
import hashlib
import json
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from bridge.rollout import probes, stats
from bridge.rollout.guardrails import GUARDRAILS, LATE_FIELDS, Guardrail, Kind, _failed
from bridge.rollout.srm import SampleRatio, causes
from bridge.rollout.stats import Callers, Clusters, Strata

if TYPE_CHECKING:
    from bridge.rollout.guardrails import ExperimentSpec

Action = Literal["rollback", "promote", "srm", "complete"]


class State(enum.StrEnum):
    """A candidate's state: tested (at any step, the last included), or rolled back (until a ``rearm``)."""

    TESTING = "testing"
    ROLLED_BACK = "rolled_back"


RESERVOIR = 1000  # the safe variant's latest latencies that set the quantiles a latency is scored against
REFRESH = 50  # the quantiles move every this many safe values
MEAN_CAP = 50.0  # a mean's values are winsorised at this many times the safe variant's recent median
FRESH_S = 6 * 3600.0  # a record this much older than the newest is a replay (records are written as calls end)
RUN_SAFE = 500  # the safe variant's latest calls the breaker looks back on (those started during a run count)
RUN_MAX = 5000  # the failures of a candidate's run held (its earliest dropped beyond)
BEGIN_SETTLE_S = 900.0  # calls begun this long ago have nearly all ended: counted, they give the rate calls begin at
BEGIN_SPAN_S = 900.0  # ... over this span
BEGIN_MIN_S = 300.0  # the least span that gives a rate
BEGIN_KEPT = 8_000  # the latest records' starts kept for it (half an hour at 16,000 calls an hour)
FORGET_S = 4 * 86400.0  # a caller not heard from for this long starts a new cluster if they call again


def epoch_of(weights: Mapping[str, float], kill: bool) -> str:
    """The fingerprint of a flag's weights as shares (so 1:1 and 50:50 are one epoch) and its kill switch."""
    total = sum(w for w in weights.values() if w > 0) or 1.0
    shares = {n: round(w / total, 6) for n, w in sorted(weights.items()) if w > 0}
    text = json.dumps({"shares": shares, "kill": kill}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def shares_of(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights as shares that sum to 1 (variants at 0 left out)."""
    total = sum(w for w in weights.values() if w > 0) or 1.0
    return {n: w / total for n, w in weights.items() if w > 0}


# ------------------------------------------------------------------------------------------------ the engine
@dataclass(frozen=True, slots=True)
class Decision:
    t: float
    variant: str
    action: Action
    reason: str
    evidence: dict[str, Any]  # ``epoch``: the epoch decided on
    weights: dict[str, float] | None = None  # the flag's weights after it (None: unchanged)

    def to_json(self) -> dict[str, Any]:
        """``t``, ``variant``, ``action``, ``reason``, ``evidence`` and ``weights``, as ``rollout evaluate`` prints."""
        return asdict(self)


@dataclass(slots=True)
class _Latency:
    """The safe variant's recent values of one latency (or mean) and the quantiles a call is scored against."""

    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RESERVOIR))
    added: int = 0
    q50: float | None = None
    q90: float | None = None
    q99: float | None = None
    cached: tuple[Any, float] = ((), 0.0)

    def add(self, x: float) -> None:
        self.recent.append(x)
        self.added += 1
        if (self.q50 is None and len(self.recent) >= 20) or self.added % REFRESH == 0:
            self.q50, self.q90, self.q99 = (stats.quantile(self.recent, q) for q in (0.5, 0.9, 0.99))

    def score(self, x: float) -> float | None:
        if self.q50 is None or self.q90 is None or self.q99 is None:
            return None
        return float(x > self.q50) + float(x > self.q90) + float(x > self.q99)

    def shift_effect(self, factor: float) -> float:
        """The score's rise were every latency ``factor`` times longer (from the recent safe values; kept until the
        quantiles move)."""
        if self.q50 is None or not self.recent:
            return math.inf
        key = (self.added // REFRESH, round(factor, 3))
        if self.cached[0] != key:
            self.cached = (key, self._shift_effect(factor))
        return self.cached[1]

    def _shift_effect(self, factor: float) -> float:
        n = len(self.recent)
        above = sum(self.score(x * factor) or 0.0 for x in self.recent)
        base = sum(self.score(x) or 0.0 for x in self.recent)
        return (above - base) / n


@dataclass(slots=True)
class _Tests:
    """One guardrail's strata for one candidate: the test's, the margin's (a latency's candidate values divided
    by ``1 + margin``), and what the estimates show (a latency's log)."""

    test: Strata
    ni: Strata | None
    show: Strata | None

    @classmethod
    def new(
        cls, g: Guardrail, test: tuple[Clusters, Clusters] | None, show: tuple[Clusters, Clusters] | None
    ) -> _Tests:
        prop = g.kind is Kind.PROPORTION
        lat = g.kind is Kind.LATENCY
        return cls(
            Strata(prop, clusters=test),
            Strata(prop, clusters=test) if lat else None,
            Strata(False, clusters=show) if lat else None,
        )

    @property
    def shown(self) -> Strata:
        return self.show if self.show is not None else self.test

    @property
    def margin_test(self) -> Strata:
        """The strata the margin is tested on (a latency's scaled scores; else the test's own)."""
        return self.ni if self.ni is not None else self.test


@dataclass(slots=True)
class _Candidate:
    armed_t: float | None = None
    run: int = 0  # the failures of its run (``len(fails)``)
    fails: list[float] = field(default_factory=list)  # the run, by start: its failed calls started after the latest
    # start of one of its calls that did not fail (a call begun before the run's first failure never resets it)
    ok_started: float = -math.inf  # the latest start of its calls that did not fail
    looked: float = -math.inf  # the last look for a promotion
    state: State = State.TESTING
    since: dict[str, _Tests] = field(default_factory=dict)  # since arming
    step: dict[str, _Tests] | None = None  # the current epoch's alone
    step_epoch: str | None = None
    step_started: float | None = None
    last_started: float | None = None  # the start of the last step's epoch (its guard period)
    epoch_calls: int = 0
    decided: set[tuple[str, str]] = field(default_factory=set)  # (epoch, action) already decided
    history: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    marks: list[dict[str, Any]] = field(default_factory=list)  # the steps and decisions, for the chart

    def since_start(self, started: float) -> int:
        """The failures of the run that started at or after ``started``."""
        return len(self.fails) - bisect.bisect_left(self.fails, started)


@dataclass(slots=True)
class _Arrivals:
    """When the plan's calls began (every variant's records), for the rate calls begin at: counted over a span that
    ended ``BEGIN_SETTLE_S`` before the newest record, when nearly every call begun in it has ended and been
    recorded (the calls still in progress make it a little low)."""

    starts: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=BEGIN_KEPT))
    earliest: float = math.inf

    def add(self, started: float, variant: str) -> None:
        self.starts.append((started, variant))
        self.earliest = min(self.earliest, started)

    def rate(self, now: float, variant: str | None = None) -> float | None:
        """Calls begun a second, the plan's or ``variant``'s (None: less than ``BEGIN_MIN_S`` of settled span seen)."""
        high = now - BEGIN_SETTLE_S
        low = max(high - BEGIN_SPAN_S, self.earliest)
        if len(self.starts) == self.starts.maxlen:
            low = max(low, min(s for s, _ in self.starts))  # the kept starts cover no more
        if high - low < BEGIN_MIN_S:
            return None
        return sum(low <= s < high and variant in (None, v) for s, v in self.starts) / (high - low)


@dataclass(slots=True)
class _Epoch:
    shares: dict[str, float] | None
    started: float
    first_t: float | None = None
    counts: dict[str, int] = field(default_factory=dict)  # first calls of callers (and anonymous calls)
    calls: dict[str, int] = field(default_factory=dict)  # every call
    callers: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Pending:
    """A call whose late outcomes are still awaited (its delayed guardrails' values)."""

    t: float
    variant: str
    epoch: str
    caller: str | None
    values: dict[str, Any]


class Evidence:
    """A plan's rollout evidence, fed one stream entry at a time (:meth:`feed`): epochs and their split, each
    candidate's tests, the callers' clusters, late outcomes; :class:`bridge.rollout.engine.Engine` decides on it."""

    def __init__(
        self,
        spec: ExperimentSpec,
        safe: str,
        variants: Iterable[str],
        *,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        self.spec, self.safe = spec, safe
        self.variants = tuple(dict.fromkeys((*variants, safe)))
        self.active = spec.active
        self.alpha_g = spec.test_alpha / max(1, len(self.variants) - 1)  # shared by the candidates
        self.epochs: dict[str, _Epoch] = {}
        self.epoch: str | None = None
        self.epoch_started = -math.inf
        self.pending: dict[str, dict[str, float]] = {}  # epoch -> weights, for epochs named before their records
        if weights is not None:  # the plan's weights: known before the first record
            self.known_weights(weights)
        self.caller_ids = Callers()
        grouped = [g for g, _, _ in self.active]  # guardrails off are shown, never tested: by call
        self.clusters = {
            (g.name, v, which): Clusters(self.caller_ids)
            for g in grouped
            for v in self.variants
            for which in ("ts" if g.kind is Kind.LATENCY else "t")
        }
        self.cands = {n: self._fresh(n) for n in self.variants if n != safe}
        self.safe_arm = {g.name: stats.Arm() for g in GUARDRAILS.values()}
        self.calls = {n: 0 for n in self.variants}
        self.safe_recent: deque[tuple[float, bool]] = deque(maxlen=RUN_SAFE)  # the safe variant's latest calls:
        # (started, failed), in the order they ended
        self.arrivals = _Arrivals()  # when the plan's calls began: the breaker's count of the calls begun in a run
        self.probes: deque[probes.Probe] = deque(maxlen=probes.KEPT)  # probes of its model (bridge.rollout.probes)
        self.latency = {g.name: _Latency() for g in GUARDRAILS.values() if g.kind is not Kind.PROPORTION}
        self.delayed = tuple(g for g, _, _ in self.active if g.delay_s > 0)  # awaited only when on
        self.awaiting: dict[str, _Pending] = {}  # call_id -> a call whose late outcomes are awaited (oldest first)
        self.seen: dict[str, float] = {}  # call_id (and rearm id) -> t: each counts once
        self.refused = {"duplicate": 0, "stale": 0}
        self.ratio = SampleRatio(self.variants, safe, spec.srm_concentration)  # the sample-ratio test
        self.srm_log_bf = 0.0
        self.srm: Decision | None = None
        self.decisions: list[Decision] = []
        self.t = 0.0
        self._hour: float | None = None

    def _fresh(self, name: str) -> _Candidate:
        def pair(g: Guardrail, which: str) -> tuple[Clusters, Clusters] | None:
            mine, safe = self.clusters.get((g.name, name, which)), self.clusters.get((g.name, self.safe, which))
            return (mine, safe) if mine is not None and safe is not None else None

        return _Candidate(since={g.name: _Tests.new(g, pair(g, "t"), pair(g, "s")) for g in GUARDRAILS.values()})

    def _fresh_tests(self, name: str) -> dict[str, _Tests]:
        return self._fresh(name).since

    @property
    def candidates(self) -> tuple[str, ...]:
        return tuple(self.cands)

    def known_weights(self, weights: Mapping[str, float], kill: bool = False) -> str:
        """Name an epoch's weights before its records come (the plan's, or a decision's); returns its fingerprint."""
        epoch = epoch_of(weights, kill)
        self.pending[epoch] = dict(weights) if not kill else {self.safe: 100.0}
        return epoch

    # ------------------------------------------------------------------------------------------- feeding
    def feed(self, record: Mapping[str, Any]) -> list[Decision]:
        """Count one stream entry (a finished call's record, a late outcome, a re-arm); the decisions it brings."""
        t = _float(record.get("t"))
        if t < self.t - FRESH_S:
            self.refused["stale"] += 1
            return []
        ident = record.get("call_id") if "rearm" not in record and "late" not in record else None
        if "rearm" in record and record.get("rearm_id") is not None:
            ident = f"rearm:{record.get('rearm_id')}"
        if isinstance(ident, str) and ident:
            if ident in self.seen:
                self.refused["duplicate"] += 1
                return []
            self.seen[ident] = t
        if "probe" in record:
            self.t = max(self.t, t)
            return self._record(self._probed(record))
        if "late" in record:
            self._late(record)
            self.t = max(self.t, t)
            return self._record(self._flush())
        if "rearm" in record:
            self.rearm(str(record["rearm"]), t or self.t)
            return []
        variant = str(record.get("variant"))
        if variant not in self.calls:
            return []
        self.t = max(self.t, t)
        out = self._flush()
        epoch_id = str(record.get("epoch", ""))
        started = _float(record.get("started")) or t
        self.arrivals.add(started, variant)
        epoch = self.epochs.get(epoch_id)
        caller = record.get("caller") if isinstance(record.get("caller"), str) else None
        if epoch_id != self.epoch and self.epoch is not None and started < self.epoch_started:
            # a call drawn under older weights that ended late: its epoch's split counts it, the tests do not
            return self._record(out + (self._count_split(epoch, variant, caller) if epoch is not None else []))
        if epoch_id != self.epoch:  # new weights (a fingerprint seen before is a new epoch all the same)
            epoch = self.epochs[epoch_id] = _Epoch(self._shares(record, epoch_id), started)
            self.epoch, self.epoch_started = epoch_id, started
            for c in self.cands.values():
                c.epoch_calls = 0
        assert epoch is not None
        out += self._count_split(epoch, variant, caller)
        if epoch.first_t is None:
            epoch.first_t = t
        self._count(record, variant, epoch_id, (started, t), caller)
        todo = self.candidates if variant == self.safe else (variant,)
        for name in todo:
            out += self._decide(name, t)
        return self._record(out)

    def _record(self, out: list[Decision]) -> list[Decision]:
        self.decisions += out
        for d in out:
            if d.variant in self.cands:
                mark = {"t": round(d.t, 3), "action": d.action}
                if d.weights is not None:
                    mark["share"] = d.weights.get(d.variant, 0.0)
                self.cands[d.variant].marks.append(mark)
        return out

    def _shares(self, record: Mapping[str, Any], epoch_id: str) -> dict[str, float] | None:
        for key in ("shares", "weights"):
            w = record.get(key)
            if isinstance(w, Mapping) and w:
                try:
                    return shares_of({str(k): float(v) for k, v in w.items()})
                except (TypeError, ValueError):
                    return None
        known = self.pending.get(epoch_id)
        return shares_of(known) if known is not None else None

    def rearm(self, variant: str, t: float) -> None:
        """Start ``variant``'s evidence afresh (an operator's ``rollout rearm``): tests, breaker and decisions."""
        if variant in self.cands:
            marks = self.cands[variant].marks
            self.cands[variant] = self._fresh(variant)
            self.cands[variant].armed_t = t
            self.cands[variant].marks = [*marks, {"t": round(t, 3), "action": "rearm"}]

    def _late(self, record: Mapping[str, Any]) -> None:
        """A late outcome of an earlier call: its fields set that call's delayed values (once its window closes)."""
        waiting = self.awaiting.get(str(record.get("call_id")))
        if waiting is None:
            return
        for name in LATE_FIELDS:
            if name in record:
                waiting.values[name] = record[name]

    def _flush(self) -> list[Decision]:
        """Count the delayed values of the calls whose windows have closed, oldest first."""
        out: list[Decision] = []
        for g in self.delayed:
            while self.awaiting:
                call_id, waiting = next(iter(self.awaiting.items()))
                if waiting.t > self.t - g.delay_s:
                    break
                del self.awaiting[call_id]
                raw = g.value(waiting.values)
                if raw is None or waiting.epoch not in self.epochs:
                    continue
                self._add_value(g, raw, waiting.variant, waiting.epoch, waiting.t, waiting.caller)
                if waiting.variant != self.safe:
                    out += self._decide(waiting.variant, self.t)
        return out

    def _count_split(self, epoch: _Epoch, variant: str, caller: str | None) -> list[Decision]:
        epoch.calls[variant] = epoch.calls.get(variant, 0) + 1
        if caller is not None:
            if caller in epoch.callers:
                return []  # the caller's later calls follow their first: what the weights drew is the caller
            epoch.callers.add(caller)
        epoch.counts[variant] = epoch.counts.get(variant, 0) + 1
        if epoch.shares is None or not self.ratio.count(variant, epoch.shares, caller):
            return []
        self.srm_log_bf = self.ratio.log_e
        if self.srm is not None or self.srm_log_bf < math.log(1 / self.spec.srm_alpha):
            return []
        worst, r = self.ratio.worst()
        n = sum(epoch.counts.get(v, 0) for v in epoch.shares) or 1
        seen, drawn = epoch.counts.get(worst, 0) / n, epoch.shares.get(worst, 0.0)
        evidence = {
            "epoch": self.epoch,
            "log_e_value": round(self.srm_log_bf, 3),
            "threshold": round(math.log(1 / self.spec.srm_alpha), 3),
            "counts": dict(epoch.counts),
            "calls": dict(epoch.calls),
            "expected_shares": {v: round(s, 4) for v, s in epoch.shares.items()},
            "arrival_factor": {worst: round(r, 3)},
            "likely_causes": causes(epoch.counts, epoch.calls, epoch.shares, worst, r),
        }
        off = f"about {100 * abs(1 - r):.0f} % of its callers' records {'missing' if r < 1 else 'in excess'}"
        self.srm = Decision(
            self.t,
            worst,
            "srm",
            f"sample-ratio mismatch: {worst} has {100 * seen:.1f} % of this step's callers where its weight gives "
            f"{100 * drawn:.1f} % ({off}, over every step); promotions stop, rollback stays armed",
            evidence,
        )
        return [self.srm]

    def _count(
        self, record: Mapping[str, Any], variant: str, epoch_id: str, when: tuple[float, float], caller: str | None
    ) -> None:
        started, t = when
        self.calls[variant] += 1
        failed = bool(_failed(record))
        if variant == self.safe:
            self.safe_recent.append((started, failed))
        else:
            cand = self.cands[variant]
            if cand.armed_t is None:
                cand.armed_t = t
            _run(cand, started, failed)
            cand.epoch_calls += 1
        for name in self.cands:
            self._step(name, epoch_id)
        call_id = record.get("call_id")
        for g in GUARDRAILS.values():
            if g.delay_s > 0 and isinstance(call_id, str) and call_id:
                continue  # known once its window closes (_flush)
            raw = g.value(record)
            if raw is not None:
                self._add_value(g, raw, variant, epoch_id, t, caller)
        if self.delayed and isinstance(call_id, str) and call_id:
            self.awaiting[call_id] = _Pending(t, variant, epoch_id, caller, {k: False for k in LATE_FIELDS})
        hour = math.floor(t / self.spec.stratum_s)
        if hour != self._hour:
            self._hour = hour
            self._forget(t)
            self.hour(t)

    def _add_value(self, g: Guardrail, raw: float, variant: str, epoch_id: str, t: float, caller: str | None) -> None:
        """One call's value of one guardrail into the tests it belongs to."""
        key = (epoch_id, math.floor(t / self.spec.stratum_s))
        is_safe = variant == self.safe
        x = raw
        if g.kind is Kind.MEAN:
            q50 = self.latency[g.name].q50
            x = min(raw, MEAN_CAP * q50) if q50 else raw
        targets = self.cands.items() if is_safe else ((variant, self.cands[variant]),)
        score = ni_score = shown = None
        if g.kind is Kind.LATENCY:
            lat = self.latency[g.name]
            score = lat.score(raw)
            ni_score = score if is_safe else lat.score(raw / self._latency_factor(g))
            shown = math.log(max(raw, 1.0))
            self._cluster(g.name, variant, "s", caller, shown, t)
            if score is not None:
                self._cluster(g.name, variant, "t", caller, score, t)
        else:
            self._cluster(g.name, variant, "t", caller, x, t)
        if is_safe:
            self.safe_arm[g.name].add(shown if shown is not None else x)
        for _, cand in targets:
            if cand.armed_t is not None and t < cand.armed_t:
                continue  # a late value of a call before the candidate was re-armed
            sets = [cand.since[g.name]]
            if cand.step is not None and cand.step_epoch == epoch_id:
                sets.append(cand.step[g.name])
            for tests in sets:
                if g.kind is Kind.LATENCY:
                    if score is not None and ni_score is not None and tests.ni is not None:
                        tests.test.add(key, not is_safe, score)
                        tests.ni.add(key, not is_safe, ni_score)
                    assert tests.show is not None and shown is not None
                    tests.show.add(key, not is_safe, shown)
                else:
                    tests.test.add(key, not is_safe, x)
        if is_safe and g.kind is not Kind.PROPORTION:
            self.latency[g.name].add(raw)

    def _cluster(self, name: str, variant: str, which: str, caller: str | None, x: float, t: float) -> None:
        clusters = self.clusters.get((name, variant, which))
        if clusters is not None:
            clusters.add(caller, x, t)

    def _forget(self, t: float) -> None:
        """Once per stratum: callers long silent leave the clusters' tables (once a day), old call ids the duplicate
        check."""
        if self.caller_ids.last and self.caller_ids.last[0] < t - FORGET_S - 86400.0:
            moved = self.caller_ids.forget(t - FORGET_S)
            if moved is not None:
                for c in self.clusters.values():
                    c.remap(moved)
        if len(self.seen) > 1000:
            self.seen = {k: v for k, v in self.seen.items() if v >= t - 2 * FRESH_S}

    def _step(self, name: str, epoch_id: str) -> None:
        """Start the candidate's tests of the current epoch (its step) when the epoch is new to it."""
        cand = self.cands[name]
        if cand.step_epoch == epoch_id:
            return
        cand.step = self._fresh_tests(name)
        cand.step_epoch, cand.step_started = epoch_id, self.t
        if self._at_last(name, epoch_id):
            cand.last_started = self.t
        else:
            cand.last_started = None

    def _at_last(self, name: str, epoch_id: str | None) -> bool:
        """Is ``epoch_id`` the candidate's last step (:meth:`ExperimentSpec.at_last` of its weights)?"""
        epoch = self.epochs.get(epoch_id or "")
        shares = epoch.shares if epoch is not None else None
        return shares is not None and self.spec.at_last(shares, name, self.safe)

    def _latency_factor(self, g: Guardrail) -> float:
        """The margin's divisor of a latency: ``1 + margin`` (at least the floor over the safe median)."""
        _, margin, floor = self._setting(g)
        q50 = self.latency[g.name].q50 or 0.0
        return 1.0 + max(margin, floor / q50 if q50 > 0 else 0.0)

    def _setting(self, g: Guardrail) -> tuple[Guardrail, float, float]:
        for a in self.active:
            if a[0].name == g.name:
                return a
        return (g, g.margin, g.floor)

    def weights(self) -> dict[str, float] | None:
        """The current epoch's weights in percent (None: not known)."""
        shares = self.epochs[self.epoch].shares if self.epoch in self.epochs else None
        return None if shares is None else {n: 100.0 * shares.get(n, 0.0) for n in self.variants}

    def share(self, name: str) -> float | None:
        w = self.weights()
        return None if w is None else w.get(name, 0.0)

    def hour(self, t: float) -> None:
        """Called at the first record of each time stratum (``bridge.rollout.experiment`` keeps the trend)."""

    def _decide(self, name: str, t: float) -> list[Decision]:
        """The decisions about ``name`` after a value (the engine's)."""
        return []

    def _probed(self, record: Mapping[str, Any]) -> list[Decision]:
        """The decisions after a probe of the safe variant's model (the engine's)."""
        return []


def _run(cand: _Candidate, started: float, failed: bool) -> None:
    """One of the candidate's calls into its run of failures, by start: records come as calls end, so the calls
    begun before a death keep ending fine for minutes; only a call that began after a failure and did not fail
    breaks the run there (the failures started before it leave the run)."""
    if started <= cand.ok_started:
        return  # began before a call known fine: not in the run
    if failed:
        bisect.insort(cand.fails, started)
        if len(cand.fails) > RUN_MAX:
            del cand.fails[0]
    else:
        cand.ok_started = started
        del cand.fails[: bisect.bisect_right(cand.fails, started)]
    cand.run = len(cand.fails)


def _float(value: Any) -> float:
    try:
        out = float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return out if math.isfinite(out) else 0.0
