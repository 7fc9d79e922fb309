"""The guarded rollout: every candidate tested against the safe variant from its first call until a person ends the
rollout, promoted step by step on evidence, rolled back on evidence or by its breaker. Pure.

The data are a plan's outcome records (``bridge.rollout.outcomes``), fed one at a time in the order they were written
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
``repeat_rate``        proportion  ``repeat`` (known 72 h after the call)         25 %          0.01        no
``handle_time_s``      mean        ``handle_time_s``, winsorised                  25 %          5 s         no
``cost_per_call_usd``  mean        ``cost_usd``, winsorised                       25 %          0.005 USD   no
``check_fail_rate``    proportion  ``failed_checks`` names a check               50 %          0.005       no
=====================  ==========  =============================================  ============  ==========  =====

**What "worse" means**, the same for every rule: the candidate's value above the safe variant's, measured against
the safe variant's calls of the same epoch and the same hour (:class:`~bridge.rollout.stats.Strata`). The
**margin** is the regression the operator tolerates: relative (a share of the safe variant's value) with an
absolute **floor**, a candidate worse by less than ``max(margin * safe value, floor)`` is *tolerable* (shown as
"slightly worse, within tolerance", never rolled back).

* a **rollback** takes a candidate that is *surely worse by more than its margin* (the one-sided always-valid test
  of "worse than the margin" rejects "within the margin"; ``bridge.rollout.stats``), or whose last calls all failed
  while the safe variant's calls *of the same moment* are fine (the **breaker**: its calls that ended during the
  candidate's run, and its probes of the safe variant's model, :mod:`bridge.rollout.probes`; an outage that fails
  both variants trips nothing; the run weighed against the calls the candidate began meanwhile, whose fine ones
  have not all ended yet: :meth:`Engine._breaker`);
* a **promotion** to the last step takes a candidate that is *surely not worse by the margin* since it was armed
  (non-inferiority) after a whole business cycle (``cycle_s``); a step before it needs that the harm test has had the
  power to see a clear regression (``clear`` times the margin) and saw none. Every step also needs the current
  step's **own** evidence (its epoch alone) to be surely below a clear regression, so hours of good calls long ago
  cannot carry a candidate that has degraded since. A step never comes before ``step_min_s`` on the current step.

**The caller is the unit.** A record names its caller (a keyed hash; none for a withheld number) and its call.
Each variant's values are grouped by caller (:class:`~bridge.rollout.stats.Clusters`) and every test's variance is
cluster-robust: a caller who calls five times is not five independent calls. The sample-ratio test counts each
caller's first call of an epoch (what the weights randomised), not every call.

Proportions are compared as rates. A **latency** is compared as quantiles: each call scores how many of the safe
variant's recent median, p90 and p99 it exceeds (0 to 3), so a slower median and a slower tail are both seen,
whatever the spread; the margin's tests score the candidate's latencies divided by ``1 + margin``. A **mean** (handle
time, cost: what staffing and the bill scale with) is compared on the arithmetic mean of values winsorised at
``MEAN_CAP`` times the safe variant's recent median (the same cap on both variants), so a heavy tail counts and one
call cannot swing the variance.

**Late outcomes.** A guardrail whose value is known only later (``repeat_rate``: a call back within 72 h) takes its
value from late entries ``{"late": true, "call_id", "t", ...}`` and judges a call only once its window has closed
(``delay_s`` after it ended), in the order the calls ended: the same on every replay of the same stream.

**Each record counts once**: a record whose ``call_id`` was seen is left out and counted (``refused``), as is a
record more than ``FRESH_S`` older than the newest (a replay of an old genuine record), and a ``rearm`` entry is
taken once per ``rearm_id``. A call's own ``repeat`` field is not read where the record names its call: only a late
entry (signed in full) makes a call a repeat.

**The tests** each guardrail runs, its ``alpha / (k c)`` (``k`` guardrails on, ``c`` candidates) split so that the
family's errors add up to at most ``alpha``:

* *harm since arming* (half): every stratum since the candidate was armed (the rollout's first call, or the
  operator's ``rearm``), across epochs;
* *harm where it stays* (the other half): the last step's epoch alone (its holdout keeps the safe variant's
  calls), so a candidate that degrades after its promotion is not diluted by the good calls before, and likewise
  any step of a fixed split (``promote`` off or no ``auto_promote``: the engine never moves its weights); its line
  is the guardrail's ``last_margin`` (the failure rate's 10 %, any other's its margin), the harm line where the
  candidate serves most traffic for long;
* *non-inferiority* and each step's *fresh evidence* (its own ``alpha / (k c)``: a false promotion is the other kind
  of error).

**The watch** (:mod:`bridge.rollout.watch`): from the first step on, each guardrail that is on has a change detector on
its recent evidence beside the cumulative tests (a Shiryaev-Roberts statistic over blocks of each step's hours,
against the ramp's ``margin`` line before the step the candidate stays on and the ``last_margin`` line there, tuned
to a clear regression, ``clear`` times the margin). At the last step, for as long as the
holdout runs, past ``log(24 watch_arl_days k c)`` the candidate is rolled back, the reason naming the watch and its
statistic: at most one false alarm per ``watch_arl_days`` on average for a candidate exactly at its margin, far fewer
for an equal one. Before it, the watch is each step's fresh evidence: a step waits while the statistic stands at
``HOLD_LOG_R`` or above (the recent hours lean toward a clear regression), the first step's included.

**Sample ratio** (:mod:`bridge.rollout.srm`): each caller's first call of the rollout against the shares of the
weights it was drawn under, one loss factor per variant shared by every epoch (a mixture whose ratios multiply over
the steps); past ``1 / srm_alpha`` the engine decides ``srm``: no promotion from then on, rollback still armed.
A step waits while its log e-value stands at ``SRM_HOLD`` (a fifth) of that threshold or above (the split leans
toward a mismatch; a hold spends no error), so a mismatch the small first step cannot yet prove holds the ramp
there. Its evidence holds both splits, of callers and of calls.

**Actions** of a :class:`Decision`: ``rollback`` (the candidate's weight to the safe variant), ``promote`` (the next
step's weights; without ``auto_promote`` only audited; another candidate keeps its weight, a step capped at the
room other candidates leave is taken, and one with no room above the holdout waits; any step that leaves the safe
variant only the holdout is the **final** step, beside other candidates too: a business cycle, non-inferiority, then
the last step's own harm test and guard period), ``srm`` (promotions stop), ``complete`` (the last step has kept
its guard period, ``guard_s``, with nothing found: a person may end the rollout; the engine keeps watching).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.rollout import probes, stats, watch
from bridge.rollout.evidence import (
    FRESH_S,
    MEAN_CAP,
    Action,
    Decision,
    Evidence,
    State,
    _Candidate,
    _Tests,
    epoch_of,
    shares_of,
)
from bridge.rollout.guardrails import (
    FAILED_OUTCOMES,
    GUARDRAILS,
    ExperimentSpec,
    Guardrail,
    GuardrailSetting,
    Kind,
    span,
    step_weights,
)
from bridge.rollout.stats import Estimate

__all__ = [
    "FAILED_OUTCOMES",
    "FRESH_S",
    "GUARDRAILS",
    "MEAN_CAP",
    "Action",
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

LAST_STEP_ALPHA = 0.5  # the last step's own harm test's share of a guardrail's alpha (the rest: since arming)
SRM_HOLD = 0.2  # a step waits while the sample-ratio test's log e-value stands at this share of its threshold


@dataclass(frozen=True, slots=True)
class _Trip:
    """Why the breaker tripped: the candidate's failures in the run since a safe call began, the run they needed,
    the safe variant's failures and calls begun meanwhile and the probes among them; the calls the candidate began
    meanwhile (estimated; None: its rate not known yet) and the safe failures and calls its rate came from."""

    run: int
    need: float
    failed: int
    calls: int
    used: list[probes.Probe]
    began: float | None
    rate: tuple[int, int]


class Engine(Evidence):
    """A plan's guarded rollout, fed one record at a time (:meth:`feed`), and what it decides
    (:class:`bridge.rollout.experiment.Experiment` adds what it shows)."""

    # ------------------------------------------------------------------------------------------- deciding
    def margin_abs(self, g: Guardrail, *, last: bool = False) -> float:
        """The margin in the test's scale: a proportion's points, a mean's unit (a latency's is in its margin
        scores, whose line is 0); ``last``: the harm line where the candidate serves most traffic (``last_margin``)."""
        _, margin, floor = self._setting(g)
        safe = self.safe_arm[g.name]
        if g.kind is Kind.LATENCY:
            return 0.0
        return max((self.spec.last_margin(g) if last else margin) * safe.mean(), floor)

    def _ready(self, e: Estimate | None) -> bool:
        return e is not None and min(e.calls) >= self.spec.min_calls

    def _margin_estimate(
        self, g: Guardrail, tests: _Tests, ref: _Tests, *, last: bool = False
    ) -> tuple[Estimate | None, float]:
        """The estimate the margin is tested on and its line: (a latency's scaled scores, 0) or (the test's, the
        margin; ``last``: the last step's), the estimate's variance carrying the line's own where the line is a share
        of the safe variant's mean (:meth:`Estimate.relative_to`)."""
        if g.kind is Kind.LATENCY:
            return tests.margin_test.estimate(ref.margin_test), 0.0
        e, line = tests.test.estimate(ref.test), self.margin_abs(g, last=last)
        _, margin, floor = self._setting(g)
        if e is not None and line > floor:  # the line is a share of the safe variant's estimated mean
            e = e.relative_to(self.spec.last_margin(g) if last else margin)
        return e, line

    def harm(self, name: str) -> list[tuple[Guardrail, str, Estimate]]:
        """The guardrails on which ``name`` is surely worse by more than its margin: (guardrail, which test, its
        estimate in the margin's scale)."""
        cand, found = self.cands[name], []
        last = cand.step if self._staying(cand) else None
        shares = (("since arming", cand.since, 1 - LAST_STEP_ALPHA), ("last step", last, LAST_STEP_ALPHA))
        for g, _, _ in self.active:
            for which, sets, share in shares:
                if sets is None:
                    continue
                e, line = self._margin_estimate(g, sets[g.name], cand.since[g.name], last=sets is last)
                if self._ready(e) and e is not None and e.harm(self.spec.tau, self.alpha_g * share, above=line):
                    found.append((g, which, e))
                    break
        return found

    def _decide(self, name: str, t: float) -> list[Decision]:
        cand, spec = self.cands[name], self.spec
        if cand.state is not State.TESTING:
            return []
        trip = self._breaker(name, cand) if cand.run >= spec.breaker_min_run else None
        if trip is not None:
            breaker: dict[str, Any] = {
                "consecutive_failures": trip.run,
                "trip_at": int(trip.need),
                "safe_failures_meanwhile": trip.failed,
                "safe_calls_meanwhile": trip.calls,
            }
            why = (
                f"{name}: its last {trip.run} calls failed in a row while the safe variant's calls of the same moment "
                f"failed {trip.failed} of {trip.calls}{probes.describe(trip.used)}"
            )
            if trip.began is not None:
                breaker |= {"calls_begun_meanwhile": round(trip.began, 1), "safe_rate_of": list(trip.rate)}
                why += f", against about {trip.began:.0f} calls it began meanwhile"
                if trip.rate != (trip.failed, trip.calls):
                    why += f" at the safe variant's recent rate ({trip.rate[0]} of its last {trip.rate[1]} failed)"
            used = {"probes": [p.to_json() for p in trip.used]} if trip.used else {}
            evidence = {"epoch": self.epoch, "breaker": breaker | used}
            return [self._rollback(name, t, why, evidence)]
        found = self.harm(name)
        if found:
            why = "; ".join(_worse(g, which, e, self.spec.tau, self.alpha_g, self) for g, which, e in found)
            return [self._rollback(name, t, f"{name}: {why}", self._evidence(name))]
        at_last = cand.last_started is not None and cand.step_epoch == self.epoch
        alarms = self._watched(name, cand).alarms(self.watch_limit) if at_last else []
        if alarms:
            why = watch.describe(alarms, self.watch_limit, spec.watch_arl_days)
            evidence = self._evidence(name) | {"watch_alarm": [g for g, _ in alarms]}
            return [self._rollback(name, t, f"{name}: {why}", evidence)]
        if not spec.promote or self.srm is not None or t - cand.looked < spec.promote_look_s:
            return self._complete(name, t)
        cand.looked = t
        promote = self._promotion(name, t)
        return [promote] if promote is not None else self._complete(name, t)

    def _staying(self, cand: _Candidate) -> bool:
        """Is the candidate on the step it stays on: its last step, or any step of a rollout whose weights the
        engine never moves (``promote`` off or no ``auto_promote``: a fixed split)? There its step's own harm test
        holds it to its ``last_margin``."""
        if cand.step is None or cand.step_epoch != self.epoch:
            return False
        return cand.last_started is not None or not (self.spec.promote and self.spec.auto_promote)

    def _breaker(self, name: str, cand: _Candidate) -> _Trip | None:
        """The breaker trips when the candidate's failures started since some safe call began are more than equal
        variants reach at the safe variant's failure rate of the calls started since then (the comparison is the
        safe variant's calls started during the run, counted by start as the run is: calls in progress when the
        candidate died end fine in both variants and are no evidence about it; none: no trip). A probe of the safe
        variant's model is one such call (:mod:`bridge.rollout.probes`). Where the rate the candidate's calls begin
        at is known, the run is weighed against the calls the candidate began meanwhile, and while every safe call of
        the same moment ended fine the safe variant's rate is its recent one
        (:func:`~bridge.rollout.stats.breaker_need`: fine calls last minutes, so a run of quick failed connects is
        what a candidate that fails often shows before its fine calls end)."""
        spec = self.spec
        if not cand.fails:
            return None
        first, failed = cand.fails[0], 0
        safe = probes.during(self.safe_recent, self.probes, first)
        begins = self._begins(name)
        recent = (sum(bad for _, bad in self.safe_recent), len(self.safe_recent))
        for calls, (started, bad, _) in enumerate(safe, 1):
            failed += bad
            tail = cand.since_start(started)
            began, rate = 0.0, (failed, calls)
            if begins is None:
                need = stats.breaker_need(failed, calls, spec.breaker_min_run, spec.breaker_per_call)
            else:  # the safe variant's recent rate while every call of the same moment ended fine
                began = begins * max(0.0, self.t - started)
                rate = (failed, calls) if failed else recent
                need = stats.breaker_need(*rate, spec.breaker_min_run, spec.breaker_per_call, began)
            if tail >= need:
                used = [p for _, _, p in safe[:calls] if p is not None]
                return _Trip(tail, need, failed, calls, used, None if begins is None else began, rate)
        return None

    def _begins(self, name: str) -> float | None:
        """The rate ``name``'s calls begin at (a second; None: not known yet): the plan's by its share where the
        weights are known (a step's new share counts at once), else its own."""
        weights = self.weights()
        if weights is None:
            return self.arrivals.rate(self.t, name)
        rate = self.arrivals.rate(self.t)
        return None if rate is None else rate * shares_of(weights).get(name, 0.0)

    def _probed(self, record: Mapping[str, Any]) -> list[Decision]:
        """A probe of the safe variant's model: kept for the breaker, then every candidate's decisions."""
        probe = probes.from_entry(record)
        if probe is None or record.get("variant") != self.safe:
            return []
        self.probes.append(probe)
        return [d for name in self.candidates for d in self._decide(name, self.t)]

    def probe_wanted(self) -> str | None:
        """A candidate under test whose run of failures reached ``breaker_min_run`` without tripping the breaker:
        a probe of the safe variant's model would tell its own failure from a shared outage (None: none)."""
        return next(
            (n for n, c in self.cands.items() if c.state is State.TESTING and c.run >= self.spec.breaker_min_run),
            None,
        )

    # ------------------------------------------------------------------------------------------- the watch
    @property
    def watch_limit(self) -> float:
        """The watch's threshold on ``log R``: one false alarm per ``watch_arl_days`` over every detector."""
        return watch.threshold(self.spec.watch_arl_days, len(self.active) * len(self.cands))

    def _watched(self, name: str, cand: _Candidate) -> watch.Watched:
        return watch.watched(self.__dict__.setdefault("watches", {}), name, cand)  # (a state kept before the watch)

    def hour(self, t: float) -> None:
        """At each stratum's first record the watch looks at the hours closed since, for every candidate on its step
        (:mod:`bridge.rollout.watch`); rollback at its next value."""
        for name, cand in self.cands.items():
            if cand.state is State.TESTING and cand.step is not None and cand.step_epoch == self.epoch:
                staying = self._staying(cand)
                for g, _, _ in self.active:
                    detector = self._watched(name, cand).detectors.setdefault(g.name, watch.Detector())
                    line = self._watch_line(g, last=staying)
                    detector.feed(cand.step[g.name].margin_test, cand.since[g.name].margin_test, *line)

    def _watch_line(self, g: Guardrail, *, last: bool) -> tuple[float, float]:
        """The watch's line in the test's scale and the change beyond it it is tuned to: the ramp's ``margin`` on
        the steps before the one the candidate stays on (there the watch only holds a step), ``last``: its
        ``last_margin`` where it stays (there it rolls back); tuned to a clear regression (``clear`` times the larger
        of the two margins) either way. The false alarms hold for any tuning (a candidate within the line is within
        both lines, so the statistic stays a supermartingale for it across the switch); the tuning sets the delay."""
        if g.kind is Kind.LATENCY:  # the margin's scores (latencies over 1 + margin): line 0
            factor = self._latency_factor(g)
            return 0.0, self.latency[g.name].shift_effect((1.0 + self.spec.clear * (factor - 1.0)) / factor)
        line = self.margin_abs(g, last=last)
        return line, self.spec.clear * max(line, self.margin_abs(g)) - line

    def watch_state(self, name: str) -> dict[str, Any]:
        """Each guardrail's watch: its statistic, threshold, blocks and last block."""
        return {g: d.state(self.watch_limit) for g, d in self._watched(name, self.cands[name]).detectors.items()}

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

    def next_step(self, name: str) -> tuple[float | None, str | None]:
        """The share ``name``'s next step takes (None: none), and what holds it when another candidate's weight
        leaves no room above the holdout."""
        share, spec = self.share(name), self.spec
        nxt = spec.next_share(share) if share is not None and spec.auto_promote else None
        if nxt is None or share is None:
            return nxt, None
        weights = self.weights() or {}
        others = sum(w for n, w in weights.items() if n not in (name, self.safe))
        room = 100.0 - spec.holdout - others
        if nxt > room + 1e-9:
            held = {n: round(w, 3) for n, w in weights.items() if n not in (name, self.safe) and w > 0}
            if room <= share + 1e-9:
                return None, f"other candidates hold {held} %: no room above the holdout"
            return room, None
        return nxt, None

    def final_step(self, name: str, nxt: float | None) -> bool:
        """Is the step to ``nxt`` percent ``name``'s final one (its checks: a business cycle, non-inferiority, then
        the last step's own harm test and guard period)? Any step that leaves the safe variant only the holdout is,
        beside other candidates too; without ``auto_promote`` the one decision is."""
        if not self.spec.auto_promote:
            return True
        if nxt is None:
            return False
        return self.spec.at_last(step_weights(self.variants, self.safe, name, nxt, self.weights()), name, self.safe)

    def _promotion(self, name: str, t: float) -> Decision | None:
        """A promotion due now, or None (each at most once per epoch)."""
        cand, spec, epoch = self.cands[name], self.spec, self.epochs.get(self.epoch or "")
        if epoch is None or (self.epoch, "promote") in cand.decided:
            return None
        nxt, _ = self.next_step(name)
        if spec.auto_promote and nxt is None:
            return None  # the last step (watched until a person ends it), or no room
        if epoch.first_t is None or t - epoch.first_t < spec.step_min_s or cand.epoch_calls < spec.min_calls:
            return None
        final = self.final_step(name, nxt)
        if final and (cand.armed_t is None or t - cand.armed_t < spec.cycle_s):
            return None
        if self.blocking(name, final=final):
            return None
        cand.decided.add((self.epoch or "", "promote"))
        weights = step_weights(self.variants, self.safe, name, nxt, self.weights()) if nxt is not None else None
        what = f"to {nxt:g} %" if nxt is not None else "(no auto_promote: audited only)"
        rule = (
            "not worse than the safe variant by its margin on every guardrail, after a business cycle"
            if final
            else "the harm test could have seen a clear regression on every guardrail and saw none"
        )
        rule += "; this step's own calls surely below a clear regression"
        return self._pend(
            Decision(t, name, "promote", f"{name}: promote {what}: {rule}", self._evidence(name), weights)
        )

    def blocking(self, name: str, *, final: bool) -> list[str]:
        """What still holds ``name``'s next step: each guardrail not yet shown safe enough, with why."""
        cand, spec = self.cands[name], self.spec
        out = []
        if self.srm_log_bf >= SRM_HOLD * math.log(1 / spec.srm_alpha):
            out.append(
                f"sample ratio: the split leans toward a mismatch (log e-value {self.srm_log_bf:.2f}; flagged at "
                f"{math.log(1 / spec.srm_alpha):.2f})"
            )
        for g, _, _ in self.active:
            tests = cand.since[g.name]
            e = tests.test.estimate()
            if not self._ready(e) or e is None:
                out.append(f"{g.name}: too few calls")
                continue
            if final:
                if not self._non_inferior(g, tests):
                    out.append(f"{g.name}: not yet shown within its margin")
            else:
                clear = self._clear_effect(g)
                if e.power_for(clear, spec.tau, self.alpha_g * (1 - LAST_STEP_ALPHA)) < spec.power:
                    out.append(f"{g.name}: not yet the power to see a clear regression")
            if not self._fresh_ok(g, cand):
                out.append(f"{g.name}: this step's own calls not yet surely below a clear regression")
            if self._watched(name, cand).detectors.get(g.name, watch.Detector()).log_r >= watch.HOLD_LOG_R:
                out.append(f"{g.name}: the watch's recent hours lean toward a clear regression")
        return out

    def _fresh_ok(self, g: Guardrail, cand: _Candidate) -> bool:
        """The current step's own evidence is surely below a clear regression (``clear`` times the margin)."""
        if cand.step is None or cand.step_epoch != self.epoch:
            return False
        tests = cand.step[g.name]
        e = tests.test.estimate(cand.since[g.name].test)
        return self._ready(e) and e is not None and _below(e, self._clear_effect(g), self.spec.tau, self.alpha_g)

    def _non_inferior(self, g: Guardrail, tests: _Tests) -> bool:
        e, line = self._margin_estimate(g, tests, tests)
        return self._ready(e) and e is not None and _below(e, line, self.spec.tau, self.alpha_g)

    def _clear_effect(self, g: Guardrail) -> float:
        """A clear regression in the test's scale: ``clear`` times the margin."""
        if g.kind is Kind.LATENCY:
            return self.latency[g.name].shift_effect(1.0 + self.spec.clear * (self._latency_factor(g) - 1.0))
        return self.spec.clear * self.margin_abs(g)

    def _complete(self, name: str, t: float) -> list[Decision]:
        cand = self.cands[name]
        if cand.last_started is None or cand.step_epoch != self.epoch or (self.epoch, "complete") in cand.decided:
            return []
        if t - cand.last_started < self.spec.guard_s:
            return []
        cand.decided.add((self.epoch or "", "complete"))
        why = (
            f"{name}: the last step kept its guard period ({span(self.spec.guard_s)}) with no regression; "
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
        last = cand.step if cand.step_epoch == self.epoch else None
        for g, _, _ in self.active:
            for which, sets in (("since_arming", cand.since), ("this_step", last)):
                e = sets[g.name].test.estimate(cand.since[g.name].test) if sets is not None else None
                if e is None:
                    continue
                w = e.half_width(self.spec.tau, self.alpha_g)
                out.setdefault(g.name, {})[which] = {
                    "diff": round(e.diff, 6),
                    "ci": [round(e.diff - w, 6), round(e.diff + w, 6)],
                    "calls": list(e.calls),
                    "scale": "score above the safe median, p90 and p99" if g.kind is Kind.LATENCY else "difference",
                }
            if g.name in out:
                out[g.name]["trend"] = cand.history.get(g.name, [])[-24:]
        out["watch"] = self.watch_state(name)
        return out


def _worse(g: Guardrail, which: str, e: Estimate, tau: float, alpha: float, engine: Engine) -> str:
    lo = e.diff - e.half_width(tau, alpha)
    if g.kind is Kind.LATENCY:
        scale, line = "score above the safe median, p90 and p99 with the margin allowed", ""
    else:
        margin = engine.margin_abs(g, last=which == "last step")
        scale, line = "difference", f" beyond the margin {margin:.4g}"
    return (
        f"{g.name} surely worse{line} ({which}): {scale} {e.diff:+.4g}, lower bound {lo:+.4g}, "
        f"{e.calls[0]} vs {e.calls[1]} calls"
    )


def _below(e: Estimate, line: float, tau: float, alpha: float) -> bool:
    """The one-sided test of "not below ``line``" rejects: surely below it."""
    se = math.sqrt(e.var)
    return se > 0 and stats.log_one_sided_lr((line - e.diff) / se, e.rho(tau)) >= math.log(1 / alpha)
