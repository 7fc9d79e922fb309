"""The guarded rollout: every candidate tested against the safe variant from its first call until a person ends the
rollout, promoted step by step on evidence, rolled back on evidence or by its breaker. Pure.

The data are a plan's outcome records (``bridge.rollout.outcomes``), fed one at a time in the order the calls ended
(:meth:`Engine.feed`). An **epoch** is the calls drawn under one set of weights. A candidate is compared with
the safe variant on each **guardrail** (:data:`GUARDRAILS`; higher is worse):

=====================  ==========  =============================================  ============  ==========  =====
guardrail              kind        one call's value                               margin        floor       on
=====================  ==========  =============================================  ============  ==========  =====
``failure_rate``       proportion  ``outcome`` is ``connect_failure``/``dropped``  50 %          0.005       yes
``abandon_rate``       proportion  ``abandoned``                                  25 %          0.005       yes
``greeting_ms``        latency     ``greeting_ms`` (calls that had a greeting)    25 %          100 ms      yes
``first_reply_ms``     latency     ``first_reply_ms`` (calls with a reply)        25 %          100 ms      yes
``transfer_rate``      proportion  ``transferred``                                25 %          0.01        no
``repeat_rate``        proportion  ``repeat``                                     25 %          0.01        no
``handle_time_s``      mean        ``log(handle_time_s + 1)``                     25 %          5 s         no
``cost_per_call_usd``  mean        ``log(cost_usd + 0.001)``                      25 %          0.005 USD   no
``check_fail_rate``    proportion  ``failed_checks`` names a check               50 %          0.005       no
=====================  ==========  =============================================  ============  ==========  =====

**What "worse" means**, the same for every rule: the candidate's value above the safe variant's, measured against
the safe variant's calls of the same epoch and the same hour (:class:`~bridge.rollout.stats.Strata`). The
**margin** is relative (a share of the safe variant's value) with an absolute **floor**: a candidate worse by less
than ``max(margin * safe value, floor)`` is *tolerable*.

* a **rollback** takes a candidate that is *surely worse* (the one-sided always-valid test of "worse" rejects
  "not worse"; ``bridge.rollout.stats``), or whose last calls all failed while the safe variant's recent calls are
  fine (the **breaker**);
* a **promotion** to the last step takes a candidate that is *surely not worse by the margin* (non-inferiority)
  after a whole business cycle (``cycle_s``); a step before it needs only that the harm test has had the power to
  see a clear regression (``clear`` times the margin) and saw none. A step never comes before ``step_min_s`` on the
  current step.

Proportions are compared as rates. A **latency** is compared as quantiles: each call scores how many of the safe
variant's recent median and p90 it exceeds (0, 1 or 2), so a slower median and a slower tail are both seen,
whatever the spread; non-inferiority scores the candidate's latencies divided by ``1 + margin``. A **mean** of a
heavy-tailed metric (handle time, cost) is compared on the log scale (the ratio of geometric means), whose interval
keeps its level at small shares where a mean's does not.

**The tests** each guardrail runs, its ``alpha / k`` (``k`` guardrails on) split so that the family's errors add up
to at most ``alpha``:

* *harm since arming* (half): every stratum since the candidate was armed (the rollout's first call, or the
  operator's ``rearm``), across epochs;
* *harm in the last step* (the other half): the last step's epoch alone (its holdout keeps the safe variant's
  calls), so a candidate that degrades after its promotion is not diluted by the good calls before;
* *non-inferiority* (its own ``alpha / k``: a false promotion is the other kind of error).

**Sample ratio**: each epoch's counts per variant against the shares of its weights, a Dirichlet-multinomial
e-value multiplied over epochs; past ``1 / srm_alpha`` the engine decides ``srm``: no promotion from then on, rollback
still armed.

**Actions** of a :class:`Decision`: ``rollback`` (the candidate's weight to the safe variant), ``promote`` (the next
step's weights; without ``auto_promote`` only audited), ``srm`` (promotions stop), ``complete`` (the last step has
kept its guard period, ``guard_s``, with nothing found: a person may end the rollout; the engine keeps watching).
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from bridge.rollout import stats
from bridge.rollout.guardrails import FAILED_OUTCOMES, GUARDRAILS, Guardrail, GuardrailSetting, Kind, _failed
from bridge.rollout.stats import Estimate, Strata

__all__ = [
    "FAILED_OUTCOMES",
    "GUARDRAILS",
    "Decision",
    "Engine",
    "ExperimentSpec",
    "Guardrail",
    "GuardrailSetting",
    "Kind",
    "State",
    "epoch_of",
    "shares_of",
    "step_weights",
]

Action = Literal["rollback", "promote", "srm", "complete"]


class State(enum.StrEnum):
    """A candidate's state: tested (at any step, the last included), or rolled back (until a ``rearm``)."""

    TESTING = "testing"
    ROLLED_BACK = "rolled_back"


RESERVOIR = 1000  # the safe variant's latest latencies that set the quantiles a latency is scored against
REFRESH = 50  # the quantiles move every this many safe values
LAST_STEP_ALPHA = 0.5  # the last step's own harm test's share of a guardrail's alpha (the rest: since arming)
PROMOTE_LOOK_S = 60.0  # promotions are looked for at most once a minute (rollbacks after every call)


class ExperimentSpec(BaseModel):
    """The ``experiment`` section of a dialplan's ``rollout`` (each field documented in docs/configuration.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(0.05, gt=0, lt=0.5)  # family-wise: false rollbacks, and false promotions, over all guardrails
    tau: float = Field(0.2, gt=0, le=10)  # mixture spread on the standardized effect
    min_calls: int = Field(50, ge=10)  # values of a metric per variant before its test is checked
    breaker_min_run: int = Field(5, ge=2)
    breaker_per_call: float = Field(1e-6, gt=0, lt=0.01)
    breaker_window_s: float = Field(1800.0, gt=0)  # the safe variant's recent calls the breaker sizes its run on
    promote: bool = True  # decide "promote" at all
    auto_promote: tuple[float, ...] = ()  # candidate weight steps in percent, e.g. (5, 25, 50, 100)
    holdout: float = Field(5.0, ge=0, lt=50)  # percent kept on the safe variant at the last step
    step_min_s: float = Field(3600.0, ge=0)  # the least time on a step before the next
    cycle_s: float = Field(86400.0, ge=0)  # a business cycle: the least time from arming to the last step
    guard_s: float = Field(86400.0, ge=0)  # the last step's guard period before ``complete``
    clear: float = Field(2.0, gt=1, le=20)  # a clear regression, as a multiple of the margin
    power: float = Field(0.8, gt=0.5, lt=1)  # the harm test's power for a clear regression before a step
    stratum_s: float = Field(3600.0, gt=0)  # the time strata within an epoch
    srm_alpha: float = Field(0.01, gt=0, lt=0.5)  # the sample-ratio test's level (over the whole rollout)
    srm_concentration: float = Field(1000.0, gt=0)  # its Dirichlet prior's concentration
    guardrails: dict[str, GuardrailSetting] = Field(default_factory=dict)  # name -> setting; missing: the default
    _active_cache: list[tuple[tuple[Guardrail, float, float], ...]] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _known(self) -> ExperimentSpec:
        unknown = sorted(set(self.guardrails) - set(GUARDRAILS))
        if unknown:
            raise ValueError(f"guardrails: unknown {unknown}; known: {sorted(GUARDRAILS)}")
        steps = self.auto_promote
        if any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
            raise ValueError(f"auto_promote: increasing percentages in (0, 100] (got {list(steps)})")
        if not self.active:
            raise ValueError("guardrails: at least one must be on")
        return self

    @property
    def active(self) -> tuple[tuple[Guardrail, float, float], ...]:
        """The guardrails that are on, each with its relative margin and absolute floor."""
        if not self._active_cache:
            self._active_cache.append(self._active())
        return self._active_cache[0]

    def _active(self) -> tuple[tuple[Guardrail, float, float], ...]:
        out = []
        for name, g in GUARDRAILS.items():
            s = self.guardrails.get(name)
            if (s is None and g.on) or (s is not None and s.on):
                margin = g.margin if s is None or s.margin is None else s.margin
                floor = g.floor if s is None or s.floor is None else s.floor
                out.append((g, margin, floor))
        return tuple(out)

    @property
    def test_alpha(self) -> float:
        """Each guardrail's share of ``alpha`` (Bonferroni); its two harm tests take half each."""
        return self.alpha / len(self.active)

    @property
    def last_share(self) -> float:
        """The candidate's share at the last step: ``100 - holdout``."""
        return 100.0 - self.holdout

    def next_share(self, share: float) -> float | None:
        """The step after ``share`` percent (the last capped at ``100 - holdout``); None: none."""
        step = next((s for s in self.auto_promote if s > share + 1e-9), None)
        if step is None or share >= self.last_share - 1e-9:
            return None
        return min(step, self.last_share)


def step_weights(names: Sequence[str], safe: str, candidate: str, share: float) -> dict[str, float]:
    """``candidate`` at ``share`` percent, the rest on ``safe``, every other variant at 0."""
    return {n: (share if n == candidate else 100.0 - share if n == safe else 0.0) for n in names}


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
    """The safe variant's recent values of one latency and the quantiles a call is scored against."""

    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RESERVOIR))
    added: int = 0
    q50: float | None = None
    q90: float | None = None
    cached: tuple[Any, float] = ((), 0.0)

    def add(self, x: float) -> None:
        self.recent.append(x)
        self.added += 1
        if (self.q50 is None and len(self.recent) >= 20) or self.added % REFRESH == 0:
            self.q50, self.q90 = stats.quantile(self.recent, 0.5), stats.quantile(self.recent, 0.9)

    def score(self, x: float) -> float | None:
        if self.q50 is None or self.q90 is None:
            return None
        return float(x > self.q50) + float(x > self.q90)

    def shift_effect(self, factor: float) -> float:
        """The score's rise were every latency ``factor`` times longer (from the recent safe values; kept until the
        quantiles move)."""
        if self.q50 is None or self.q90 is None or not self.recent:
            return math.inf
        key = (self.added // REFRESH, round(factor, 3))
        if self.cached[0] != key:
            self.cached = (key, self._shift_effect(factor))
        return self.cached[1]

    def _shift_effect(self, factor: float) -> float:
        assert self.q50 is not None and self.q90 is not None
        n = len(self.recent)
        above = sum((x * factor > self.q50) + (x * factor > self.q90) for x in self.recent)
        base = sum((x > self.q50) + (x > self.q90) for x in self.recent)
        return (above - base) / n


@dataclass(slots=True)
class _Tests:
    """One guardrail's strata for one candidate: the test's, non-inferiority's (a latency's candidate values divided
    by its margin), and what the estimates show (a latency's log)."""

    test: Strata
    ni: Strata | None
    show: Strata | None

    @classmethod
    def new(cls, g: Guardrail) -> _Tests:
        prop = g.kind is Kind.PROPORTION
        return cls(
            Strata(prop),
            Strata(prop) if g.kind is Kind.LATENCY else None,
            Strata(False) if g.kind is Kind.LATENCY else None,
        )

    @property
    def shown(self) -> Strata:
        return self.show if self.show is not None else self.test


@dataclass(slots=True)
class _Candidate:
    armed_t: float | None = None
    run: int = 0
    looked: float = -math.inf  # the last look for a promotion
    state: State = State.TESTING
    since: dict[str, _Tests] = field(default_factory=dict)  # since arming
    last: dict[str, _Tests] | None = None  # the last step's epoch
    last_epoch: str | None = None
    last_started: float | None = None
    epoch_calls: int = 0
    decided: set[tuple[str, str]] = field(default_factory=set)  # (epoch, action) already decided
    history: dict[str, list[dict[str, float]]] = field(default_factory=dict)


@dataclass(slots=True)
class _Epoch:
    shares: dict[str, float] | None
    started: float
    first_t: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    log_bf: float = 0.0


class Engine:
    """A plan's guarded rollout, fed one record at a time (:meth:`feed`), and what it decides
    (:class:`bridge.rollout.experiment.Experiment` adds what it shows)."""

    def __init__(
        self,
        spec: ExperimentSpec,
        safe: str,
        variants: Iterable[str],
        *,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        self.spec, self.safe = spec, safe
        self.active, self.alpha_g = spec.active, spec.test_alpha
        self.variants = tuple(dict.fromkeys((*variants, safe)))
        self.epochs: dict[str, _Epoch] = {}
        self.epoch: str | None = None
        self.epoch_started = -math.inf
        self.pending: dict[str, dict[str, float]] = {}  # epoch -> weights, for epochs named before their records
        if weights is not None:  # the plan's weights: known before the first record
            self.known_weights(weights)
        self.cands = {n: self._fresh() for n in self.variants if n != safe}
        self.safe_arm = {g.name: stats.Arm() for g in GUARDRAILS.values()}
        self.calls = {n: 0 for n in self.variants}
        self.latency = {g.name: _Latency() for g in GUARDRAILS.values() if g.kind is Kind.LATENCY}
        self.recent_safe: deque[tuple[float, bool]] = deque()
        self.recent_failures = 0
        self.srm_log_bf = 0.0
        self.srm: Decision | None = None
        self.decisions: list[Decision] = []
        self.t = 0.0
        self._hour: float | None = None

    def _fresh(self) -> _Candidate:
        return _Candidate(since={g.name: _Tests.new(g) for g in GUARDRAILS.values()})

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
        """Count one finished call; the decisions it brings."""
        if "rearm" in record:
            self.rearm(str(record["rearm"]), float(record.get("t") or self.t))
            return []
        variant = str(record.get("variant"))
        if variant not in self.calls:
            return []
        t = float(record.get("t") or 0.0)
        self.t = max(self.t, t)
        epoch_id = str(record.get("epoch", ""))
        started = float(record.get("started") or t)
        epoch = self.epochs.get(epoch_id)
        if epoch_id != self.epoch and self.epoch is not None and started < self.epoch_started:
            # a call drawn under older weights that ended late: its epoch's split counts it, the tests do not
            return self._record(self._count_split(epoch, variant) if epoch is not None else [])
        if epoch_id != self.epoch:  # new weights (a fingerprint seen before is a new epoch all the same)
            epoch = self.epochs[epoch_id] = _Epoch(self._shares(record, epoch_id), started)
            self.epoch, self.epoch_started = epoch_id, started
            for c in self.cands.values():
                c.epoch_calls = 0
        assert epoch is not None
        out = self._count_split(epoch, variant)
        if epoch.first_t is None:
            epoch.first_t = t
        self._count(record, variant, epoch_id, t)
        todo = self.candidates if variant == self.safe else (variant,)
        for name in todo:
            out += self._decide(name, t)
        return self._record(out)

    def _record(self, out: list[Decision]) -> list[Decision]:
        self.decisions += out
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
            self.cands[variant] = self._fresh()
            self.cands[variant].armed_t = t

    def _count_split(self, epoch: _Epoch, variant: str) -> list[Decision]:
        epoch.counts[variant] = epoch.counts.get(variant, 0) + 1
        if epoch.shares is None:
            return []
        before = epoch.log_bf
        epoch.log_bf = stats.log_srm_bf(epoch.counts, epoch.shares, self.spec.srm_concentration)
        self.srm_log_bf += epoch.log_bf - before
        if self.srm is not None or self.srm_log_bf < math.log(1 / self.spec.srm_alpha):
            return []
        n = sum(epoch.counts.get(v, 0) for v in epoch.shares)
        gaps = {v: epoch.counts.get(v, 0) / n - s for v, s in epoch.shares.items()}
        worst = max((v for v in gaps if v != self.safe), key=lambda v: abs(gaps[v]), default=variant)
        evidence = {
            "epoch": self.epoch,
            "log_e_value": round(self.srm_log_bf, 3),
            "threshold": round(math.log(1 / self.spec.srm_alpha), 3),
            "counts": dict(epoch.counts),
            "expected_shares": {v: round(s, 4) for v, s in epoch.shares.items()},
        }
        self.srm = Decision(
            self.t,
            worst,
            "srm",
            f"sample-ratio mismatch: {worst} has {100 * (gaps[worst] + epoch.shares[worst]):.1f} % of the records "
            f"where its weight gives {100 * epoch.shares[worst]:.1f} %; promotions stop, rollback stays armed",
            evidence,
        )
        return [self.srm]

    def _count(self, record: Mapping[str, Any], variant: str, epoch_id: str, t: float) -> None:
        self.calls[variant] += 1
        failed = bool(_failed(record))
        key = (epoch_id, math.floor(t / self.spec.stratum_s))
        is_safe = variant == self.safe
        if is_safe:
            self.recent_safe.append((t, failed))
            self.recent_failures += failed
            while len(self.recent_safe) > 50 and self.recent_safe[0][0] < t - self.spec.breaker_window_s:
                self.recent_failures -= self.recent_safe.popleft()[1]
        else:
            cand = self.cands[variant]
            if cand.armed_t is None:
                cand.armed_t = t
            cand.run = cand.run + 1 if failed else 0
            cand.epoch_calls += 1
        in_last = {n: self._in_last(n, epoch_id) for n in self.cands}
        for g in GUARDRAILS.values():
            raw = g.value(record)
            if raw is None:
                continue
            x = g.scale(raw)
            if is_safe:
                self.safe_arm[g.name].add(math.log(max(raw, 1.0)) if g.kind is Kind.LATENCY else x)
            targets = self.cands.items() if is_safe else ((variant, self.cands[variant]),)
            score = ni_score = None
            if g.kind is Kind.LATENCY:
                lat = self.latency[g.name]
                score = lat.score(raw)
                ni_score = score if is_safe else lat.score(raw / self._latency_factor(g))
            for name, cand in targets:
                sets = [cand.since[g.name]]
                if in_last[name] and cand.last is not None:
                    sets.append(cand.last[g.name])
                for tests in sets:
                    if g.kind is Kind.LATENCY:
                        if score is not None and ni_score is not None and tests.ni is not None:
                            tests.test.add(key, not is_safe, score)
                            tests.ni.add(key, not is_safe, ni_score)
                        assert tests.show is not None
                        tests.show.add(key, not is_safe, math.log(max(raw, 1.0)))
                    else:
                        tests.test.add(key, not is_safe, x)
            if g.kind is Kind.LATENCY and is_safe:
                self.latency[g.name].add(raw)
        hour = math.floor(t / self.spec.stratum_s)
        if hour != self._hour:
            self._hour = hour
            self.hour(t)

    def _in_last(self, name: str, epoch_id: str) -> bool:
        """Is ``epoch_id`` the candidate's last step (its share at least ``100 - holdout``)? Starts its tests."""
        cand = self.cands[name]
        shares = self.epochs[epoch_id].shares
        share = 100.0 * shares.get(name, 0.0) if shares is not None else 0.0
        if share < self.spec.last_share - 1e-6:
            return False
        if cand.last_epoch != epoch_id:
            cand.last = {g.name: _Tests.new(g) for g in GUARDRAILS.values()}
            cand.last_epoch, cand.last_started = epoch_id, self.t
        return True

    def _latency_factor(self, g: Guardrail) -> float:
        """The non-inferiority divisor of a latency: ``1 + margin`` (at least the floor over the safe median)."""
        _, margin, floor = self._setting(g)
        q50 = self.latency[g.name].q50 or 0.0
        return 1.0 + max(margin, floor / q50 if q50 > 0 else 0.0)

    def _setting(self, g: Guardrail) -> tuple[Guardrail, float, float]:
        for a in self.active:
            if a[0].name == g.name:
                return a
        return (g, g.margin, g.floor)

    # ------------------------------------------------------------------------------------------- deciding
    def margin_abs(self, g: Guardrail) -> float:
        """The margin in the test's scale: a proportion's points, a mean's log ratio (a latency's is in its
        non-inferiority scores, whose line is 0)."""
        _, margin, floor = self._setting(g)
        safe = self.safe_arm[g.name]
        if g.kind is Kind.PROPORTION:
            return max(margin * safe.mean(), floor)
        if g.kind is Kind.MEAN:
            geo = math.exp(safe.mean()) - g.offset if safe.n else 0.0
            return math.log1p(max(margin, floor / geo if geo > 0 else 0.0))
        return 0.0

    def _ready(self, e: Estimate | None) -> bool:
        return e is not None and min(e.calls) >= self.spec.min_calls

    def harm(self, name: str) -> list[tuple[Guardrail, str, Estimate]]:
        """The guardrails on which ``name`` is surely worse: (guardrail, which test, its estimate)."""
        cand, found = self.cands[name], []
        shares = (("since arming", cand.since, 1 - LAST_STEP_ALPHA), ("last step", cand.last, LAST_STEP_ALPHA))
        for g, _, _ in self.active:
            for which, sets, share in shares:
                if sets is None:
                    continue
                e = sets[g.name].test.estimate(cand.since[g.name].test)
                if self._ready(e) and e is not None and e.harm(self.spec.tau, self.alpha_g * share):
                    found.append((g, which, e))
                    break
        return found

    def _decide(self, name: str, t: float) -> list[Decision]:
        cand, spec = self.cands[name], self.spec
        if cand.state is not State.TESTING:
            return []
        need = stats.breaker_need(
            self.recent_failures, len(self.recent_safe), spec.breaker_min_run, spec.breaker_per_call
        )
        if cand.run >= need:
            evidence = {
                "epoch": self.epoch,
                "breaker": {
                    "consecutive_failures": cand.run,
                    "trip_at": int(need),
                    "safe_recent_failures": self.recent_failures,
                    "safe_recent_calls": len(self.recent_safe),
                },
            }
            why = (
                f"{name}: {cand.run} calls failed in a row while the safe variant's recent calls failed "
                f"{self.recent_failures} of {len(self.recent_safe)}"
            )
            return [self._rollback(name, t, why, evidence)]
        found = self.harm(name)
        if found:
            why = "; ".join(_worse(g, which, e, self.spec.tau, self.alpha_g) for g, which, e in found)
            return [self._rollback(name, t, f"{name}: {why}", self._evidence(name))]
        if not spec.promote or self.srm is not None or t - cand.looked < PROMOTE_LOOK_S:
            return self._complete(name, t)
        cand.looked = t
        promote = self._promotion(name, t)
        return [promote] if promote is not None else self._complete(name, t)

    def _rollback(self, name: str, t: float, why: str, evidence: dict[str, Any]) -> Decision:
        cand = self.cands[name]
        cand.state = State.ROLLED_BACK
        weights = self.weights()
        if weights is not None:
            weights[self.safe] = weights.get(self.safe, 0.0) + weights.get(name, 0.0)
            weights[name] = 0.0
        return self._pend(Decision(t, name, "rollback", why, evidence, weights))

    def _pend(self, d: Decision) -> Decision:
        if d.weights is not None:
            self.known_weights(d.weights)
        return d

    def weights(self) -> dict[str, float] | None:
        """The current epoch's weights in percent (None: not known)."""
        shares = self.epochs[self.epoch].shares if self.epoch in self.epochs else None
        return None if shares is None else {n: 100.0 * shares.get(n, 0.0) for n in self.variants}

    def share(self, name: str) -> float | None:
        w = self.weights()
        return None if w is None else w.get(name, 0.0)

    def _promotion(self, name: str, t: float) -> Decision | None:
        """A promotion due now, or None (each at most once per epoch)."""
        cand, spec, epoch = self.cands[name], self.spec, self.epochs.get(self.epoch or "")
        if epoch is None or (self.epoch, "promote") in cand.decided:
            return None
        share = self.share(name)
        nxt = spec.next_share(share) if share is not None and spec.auto_promote else None
        if spec.auto_promote and nxt is None:
            return None  # the last step: watched until a person ends it
        if epoch.first_t is None or t - epoch.first_t < spec.step_min_s or cand.epoch_calls < spec.min_calls:
            return None
        final = not spec.auto_promote or (nxt is not None and nxt >= spec.last_share - 1e-9)
        if final:
            if cand.armed_t is None or t - cand.armed_t < spec.cycle_s or self.blocking(name, final=True):
                return None
        elif self.blocking(name, final=False):
            return None
        cand.decided.add((self.epoch or "", "promote"))
        weights = step_weights(self.variants, self.safe, name, nxt) if nxt is not None else None
        what = f"to {nxt:g} %" if nxt is not None else "(no auto_promote: audited only)"
        rule = (
            "not worse than the safe variant by its margin on every guardrail, after a business cycle"
            if final
            else "the harm test could have seen a clear regression on every guardrail and saw none"
        )
        return self._pend(
            Decision(t, name, "promote", f"{name}: promote {what}: {rule}", self._evidence(name), weights)
        )

    def blocking(self, name: str, *, final: bool) -> list[str]:
        """What still holds ``name``'s next step: each guardrail not yet shown safe enough, with why."""
        cand, spec = self.cands[name], self.spec
        out = []
        for g, _, _ in self.active:
            tests = cand.since[g.name]
            e = tests.test.estimate()
            if not self._ready(e) or e is None:
                out.append(f"{g.name}: too few calls")
                continue
            if final:
                ok = self._non_inferior(g, tests)
                if not ok:
                    out.append(f"{g.name}: not yet shown within its margin")
            else:
                clear = self._clear_effect(g)
                if e.power_for(clear, spec.tau, self.alpha_g * (1 - LAST_STEP_ALPHA)) < spec.power:
                    out.append(f"{g.name}: not yet the power to see a clear regression")
        return out

    def _non_inferior(self, g: Guardrail, tests: _Tests) -> bool:
        alpha = self.alpha_g
        if g.kind is Kind.LATENCY:
            e = tests.ni.estimate() if tests.ni is not None else None
            return self._ready(e) and e is not None and _below(e, 0.0, self.spec.tau, alpha)
        e = tests.test.estimate()
        return self._ready(e) and e is not None and _below(e, self.margin_abs(g), self.spec.tau, alpha)

    def _clear_effect(self, g: Guardrail) -> float:
        """A clear regression in the test's scale: ``clear`` times the margin."""
        if g.kind is Kind.LATENCY:
            return self.latency[g.name].shift_effect(1.0 + self.spec.clear * (self._latency_factor(g) - 1.0))
        if g.kind is Kind.MEAN:
            return math.log1p(self.spec.clear * math.expm1(self.margin_abs(g)))
        return self.spec.clear * self.margin_abs(g)

    def _complete(self, name: str, t: float) -> list[Decision]:
        cand = self.cands[name]
        if cand.last_started is None or cand.last_epoch != self.epoch or (self.epoch, "complete") in cand.decided:
            return []
        if t - cand.last_started < self.spec.guard_s:
            return []
        cand.decided.add((self.epoch or "", "complete"))
        why = (
            f"{name}: the last step kept its guard period ({self.spec.guard_s / 3600:g} h) with no regression; "
            "the holdout stays and the tests go on until a person ends the rollout"
        )
        return [Decision(t, name, "complete", why, self._evidence(name))]

    # ------------------------------------------------------------------------------------------- showing
    def _evidence(self, name: str) -> dict[str, Any]:
        cand = self.cands[name]
        out: dict[str, Any] = {
            "epoch": self.epoch,
            "alpha": self.alpha_g,
            "tau": self.spec.tau,
            "calls": {name: self.calls[name], self.safe: self.calls[self.safe]},
            "share": self.share(name),
        }
        for g, _, _ in self.active:
            for which, sets in (("since_arming", cand.since), ("last_step", cand.last)):
                e = sets[g.name].test.estimate(cand.since[g.name].test) if sets is not None else None
                if e is None:
                    continue
                w = e.half_width(self.spec.tau, self.alpha_g)
                out.setdefault(g.name, {})[which] = {
                    "diff": round(e.diff, 6),
                    "ci": [round(e.diff - w, 6), round(e.diff + w, 6)],
                    "calls": list(e.calls),
                    "scale": "score above the safe median and p90" if g.kind is Kind.LATENCY else "difference",
                }
            if g.name in out:
                out[g.name]["trend"] = cand.history.get(g.name, [])[-24:]
        return out

    def hour(self, t: float) -> None:
        """Called at the first record of each time stratum (``bridge.rollout.experiment`` keeps the trend)."""


def _worse(g: Guardrail, which: str, e: Estimate, tau: float, alpha: float) -> str:
    lo = e.diff - e.half_width(tau, alpha)
    scale = "score above the safe median and p90" if g.kind is Kind.LATENCY else "difference"
    return (
        f"{g.name} surely worse ({which}): {scale} {e.diff:+.4g}, lower bound {lo:+.4g}, "
        f"{e.calls[0]} vs {e.calls[1]} calls"
    )


def _below(e: Estimate, line: float, tau: float, alpha: float) -> bool:
    """The one-sided test of "not below ``line``" rejects: surely below it."""
    se = math.sqrt(e.var)
    return se > 0 and stats.log_one_sided_lr((line - e.diff) / se, e.rho(tau)) >= math.log(1 / alpha)
