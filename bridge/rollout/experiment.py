"""The guarded rollout as people see it (``rollout show``, the console, ``/metrics``): the engine
(:class:`bridge.rollout.engine.Engine`, whose docstring has the rules and the statistics) with each variant's
metrics, a candidate's difference from the safe variant with its always-valid 95 % interval in the metric's own unit,
its trend across the steps, and its verdict: what the engine will do next, why, and the calls that needs.

A guardrail's **trend** has a point at the first call of each hour (the engine's ``history``, which a decision's
evidence carries), a point each time the candidate's calls of that guardrail have grown by ``POINT_CALLS`` or
``POINT_GROWTH`` of them (whichever is more), so a busy first hour has points too, and last the current estimate: the
chart ends on the figure the table shows. Each of the candidate's **marks** (steps, decisions, re-arms) carries the
candidate's calls of each guardrail at that moment (``calls``), its place on the charts' axis; marks before the
candidate's last re-arm have none (that axis starts again at the re-arm).
Pure."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.rollout import stats
from bridge.rollout.engine import (
    FAILED_OUTCOMES,
    GUARDRAILS,
    Action,
    Decision,
    Engine,
    ExperimentSpec,
    Guardrail,
    GuardrailSetting,
    Kind,
    State,
    epoch_of,
    shares_of,
    step_weights,
)
from bridge.rollout.evidence import _Candidate
from bridge.rollout.guardrails import DISPLAY_ALPHA, span

__all__ = [
    "DISPLAY_ALPHA",
    "FAILED_OUTCOMES",
    "GUARDRAILS",
    "Action",
    "Decision",
    "Experiment",
    "ExperimentSpec",
    "Guardrail",
    "GuardrailSetting",
    "Kind",
    "epoch_of",
    "shares_of",
    "step_weights",
]
FIRST_STEPS = (5.0, 10.0, 20.0, 25.0, 50.0)  # the first steps a low-traffic plan is offered
SLOW_CYCLES = 2  # a first step that would take more than this many business cycles gets a suggestion
STUCK_CYCLES = 7  # a step before the last is stuck when the wait ahead is more than this many business cycles
HISTORY = 240  # points per guardrail in a candidate's trend (halved when full)
POINT_CALLS = 10  # a trend point once a guardrail has this many more candidate calls ...
POINT_GROWTH = 0.1  # ... or this share more, whichever is more


@dataclass
class _Drawn:
    """What the charts draw of one candidate beyond the engine's hourly history, since its arming."""

    cand: _Candidate  # the evidence these belong to (a re-arm starts another)
    points: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # by calls, per guardrail
    next_at: dict[str, int] = field(default_factory=dict)  # the calls of the next such point, per guardrail
    marks: list[dict[str, int]] = field(default_factory=list)  # the calls per guardrail at each of the marks


class Experiment(Engine):
    """A plan's guarded rollout and what it shows."""

    def __init__(
        self,
        spec: ExperimentSpec,
        safe: str,
        variants: Iterable[str],
        *,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(spec, safe, variants, weights=weights)
        self.drawn: dict[str, _Drawn] = {}

    def feed(self, record: Mapping[str, Any]) -> list[Decision]:
        out = super().feed(record)
        for name, cand in self.cands.items():
            self._draw(name, cand)
        return out

    def _calls(self, g: Guardrail, cand: _Candidate) -> int:
        """The candidate's calls with a value of ``g`` since its arming: the charts' axis."""
        arm = cand.since[g.name].shown.arm_c
        return arm.n if arm is not None else 0

    def _draw(self, name: str, cand: _Candidate) -> None:
        """After each record: the calls at the candidate's new marks, and a trend point where its calls have grown."""
        drawn = self.drawn.get(name)
        if drawn is None or drawn.cand is not cand:
            marks = drawn.marks if drawn is not None else []
            drawn = self.drawn[name] = _Drawn(cand, marks=marks)
        while len(drawn.marks) < len(cand.marks):
            drawn.marks.append({g.name: self._calls(g, cand) for g, _, _ in self.active})
        if cand.armed_t is None:
            return
        for g, _, _ in self.active:
            n = self._calls(g, cand)
            if n < drawn.next_at.get(g.name, self.spec.min_calls):
                continue
            got = self._interval(g, cand)
            if got is None:
                continue
            points = drawn.points.setdefault(g.name, [])
            points.append({"t": round(self.t, 3), "calls": float(n), **got})
            if len(points) > HISTORY:
                del points[1::2]
            drawn.next_at[g.name] = n + max(POINT_CALLS, math.ceil(POINT_GROWTH * n))

    def trend(self, g: Guardrail, name: str) -> list[dict[str, float]]:
        """The guardrail's points in time order (hourly and by calls; one per number of calls), then the current
        estimate (the table's) as the last point."""
        cand = self.cands[name]
        drawn = self.drawn.get(name)
        extra = drawn.points.get(g.name, []) if drawn is not None and drawn.cand is cand else []
        out: list[dict[str, float]] = []
        for point in sorted([*cand.history.get(g.name, []), *extra], key=lambda p: p["t"]):
            if out and out[-1]["calls"] == point["calls"]:
                out[-1] = point  # the same calls: the later look
            else:
                out.append(point)
        got = self._interval(g, cand)
        if got is not None:
            now = {"t": round(self.t, 3), "calls": float(self._calls(g, cand)), **got}
            if out and out[-1]["calls"] == now["calls"]:
                out[-1] = now
            else:
                out.append(now)
        return out

    def marks(self, name: str) -> list[dict[str, Any]]:
        """The candidate's steps, decisions and re-arms, each with its calls per guardrail since the candidate's last
        arming (none before it)."""
        marks = self.cands[name].marks
        drawn = self.drawn.get(name)
        calls = drawn.marks if drawn is not None else []
        armed = max((i for i, m in enumerate(marks) if m.get("action") == "rearm"), default=0)
        return [{**m, **({"calls": calls[i]} if armed <= i < len(calls) else {})} for i, m in enumerate(marks)]

    def _interval(self, g: Guardrail, cand: _Candidate) -> dict[str, float] | None:
        """A guardrail's difference in its own unit, with the always-valid 95 % interval; None: too few calls."""
        e = cand.since[g.name].shown.estimate()
        if e is None or min(e.calls) < self.spec.min_calls:
            return None
        w = e.half_width(self.spec.tau, DISPLAY_ALPHA)
        lo, d, hi = e.diff - w, e.diff, e.diff + w
        if g.kind is Kind.LATENCY:  # shown as the ratio of geometric means, in ms at the safe variant's
            base = self._value(g, self.safe) or 0.0
            lo, d, hi = (base * math.expm1(x) for x in (lo, d, hi))
        return {"diff": _round(d), "lo": _round(lo), "hi": _round(hi)}

    def _value(self, g: Guardrail, variant: str) -> float | None:
        shown = self.cands[variant].since[g.name].shown.arm_c if variant != self.safe else self.safe_arm[g.name]
        arm = shown or stats.Arm()
        if not arm.n:
            return None
        if g.kind is Kind.LATENCY:
            return _round(math.exp(arm.mean()))
        return _round(arm.mean())

    def _display_margin(self, g: Guardrail) -> float:
        if g.kind is Kind.LATENCY:
            return _round((self._value(g, self.safe) or 0.0) * (self._latency_factor(g) - 1.0))
        return _round(self.margin_abs(g))

    def hour(self, t: float) -> None:
        super().hour(t)
        active = {g.name for g, _, _ in self.active}
        for cand in self.cands.values():
            if cand.armed_t is None:
                continue
            for g in GUARDRAILS.values():
                if g.name not in active:
                    continue
                got = self._interval(g, cand)
                if got is None:
                    continue
                calls = cand.since[g.name].shown.arm_c
                points = cand.history.setdefault(g.name, [])
                points.append({"t": round(t, 3), "calls": float(calls.n if calls else 0), **got})
                if len(points) > HISTORY:
                    del points[1::2]

    def estimates(self) -> dict[str, Any]:
        """Each variant's calls and metrics; a candidate's difference from the safe variant with its always-valid
        95 % interval (``vs_safe``; None with ``too_few`` below ``min_calls``), and the candidate's verdict."""
        out: dict[str, Any] = {}
        active = {g.name: (m, f) for g, m, f in self.active}
        for name in self.variants:
            row: dict[str, Any] = {"calls": self.calls[name]}
            for g in GUARDRAILS.values():
                metric: dict[str, Any] = {"value": self._value(g, name)}
                if name != self.safe:
                    cand = self.cands[name]
                    got = self._interval(g, cand)
                    metric["vs_safe"] = None if got is None else {"diff": got["diff"], "ci95": [got["lo"], got["hi"]]}
                    if got is not None and g.name in active:
                        metric["reading"] = _reading(got, self._display_margin(g))
                    if got is None:
                        e = cand.since[g.name].shown.estimate()
                        have = min(e.calls) if e is not None else 0
                        metric["too_few"] = max(0, self.spec.min_calls - have)
                    if g.name in active:
                        metric["margin"] = self._display_margin(g)
                        metric["trend"] = self.trend(g, name)
                row[g.name] = metric
            if name != self.safe:
                row["verdict"] = self.verdict(name) | {
                    "marks": self.marks(name),  # steps and decisions, for the chart
                    "callers": {v: self.callers(v) for v in (name, self.safe)},
                }
            out[name] = row
        return out

    def callers(self, variant: str) -> int:
        """The callers (each caller's first call of an epoch, and anonymous calls) the variant had."""
        return sum(e.counts.get(variant, 0) for e in self.epochs.values())

    def verdict(self, name: str) -> dict[str, Any]:
        """What the engine will do next with ``name``, why, and about how many more of its calls it needs."""
        cand, spec = self.cands[name], self.spec
        share = self.share(name)
        base: dict[str, Any] = {
            "state": str(cand.state),
            "share": share,
            "holdout": spec.holdout if self._at_last(name, self.epoch) else None,
            "srm": self.srm is not None,
            "srm_log_e_value": round(self.srm_log_bf, 3),
            "watch": self.watch_state(name),  # each guardrail's change detector on its step
            "probe": self.probes[-1].to_json() if self.probes else None,  # the latest of the safe model (the breaker's)
        }
        if cand.state is State.ROLLED_BACK:
            return {
                **base,
                "next": "none: rolled back (`callbridge rollout rearm` tests it afresh)",
                "more_calls": None,
            }
        if self.srm is not None:
            return {
                **base,
                "next": "hold: the observed split does not match the weights; promotion stopped",
                "more_calls": None,
            }
        nxt, held = self.next_step(name)
        if held is not None:
            return {**base, "next": f"hold: {held}", "more_calls": None}
        if spec.auto_promote and nxt is None:
            left = None
            if cand.last_started is not None:
                left = max(0.0, spec.guard_s - (self.t - cand.last_started))
            what = "watch: last step, rollback armed" + (f"; guard period ends in {span(left)}" if left else "")
            return {**base, "next": what, "more_calls": None}
        final = self.final_step(name, nxt)
        blocking = self.blocking(name, final=final)
        waits = []
        if final and (cand.armed_t is None or self.t - cand.armed_t < spec.cycle_s):
            waits.append(f"a business cycle ({span(spec.cycle_s)}) since the first call")
        epoch = self.epochs.get(self.epoch or "")
        if epoch is not None and epoch.first_t is not None and self.t - epoch.first_t < spec.step_min_s:
            waits.append(f"{span(spec.step_min_s)} on this step")
        target = f"promote to {nxt:g} %" if nxt is not None else "promote (audited)"
        more = self._more_calls(name, final)
        rate = self._rate(name)
        more_time = round(more / rate) if more is not None and rate else None
        out = {**base, "next": target, "waiting_for": blocking + waits, "more_calls": more, "more_time_s": more_time}
        cycled = final and epoch is not None and epoch.first_t is not None and self.t - epoch.first_t >= spec.cycle_s
        if cycled and (more is None or (more_time is not None and more_time > STUCK_CYCLES * spec.cycle_s)):
            out |= self._stuck(name, nxt, more, more_time)
        if not final and more is not None and rate and share is not None and epoch is not None:
            out |= self._first_step(name, share, more / rate, epoch.first_t)
        return out

    def _first_step(self, name: str, share: float, left_s: float, since: float | None) -> dict[str, Any]:
        """At low traffic, a first step that fits: the harm test's information grows as the calls times
        ``s (1 - s)`` at a share ``s``, so a step at ``s'`` takes ``s (1 - s) / (s' (1 - s'))`` of the time (the
        smallest of ``FIRST_STEPS`` within a business cycle). Empty when the first step takes at most
        ``SLOW_CYCLES`` cycles (or the candidate is past its first step)."""
        cand, spec = self.cands[name], self.spec
        if since is None or any(m.get("action") == "promote" for m in cand.marks) or not 0 < share < 50:
            return {}
        total = self.t - since + left_s
        if total <= SLOW_CYCLES * spec.cycle_s:
            return {}
        fits = next((s for s in FIRST_STEPS if s > share and total * _f(share) / _f(s) <= spec.cycle_s), 50.0)
        return {
            "first_step_time_s": round(total),
            "first_step_suggested": fits,
            "first_step_suggested_time_s": round(total * _f(share) / _f(fits)),
        }

    def _stuck(self, name: str, nxt: float | None, more: int | None, more_time: int | None) -> dict[str, Any]:
        """A candidate a business cycle on the step before the last, neither shown within its margin nor surely
        beyond it: what holds it, and each choice (roll back, accept the step, wait) with its cost."""
        cand, share = self.cands[name], self.share(name) or 0.0
        held = [g for g, _, _ in self.active if not self._non_inferior(g, cand.since[g.name])]
        if not held:
            return {}
        shown = {g.name: (self._interval(g, cand), self._display_margin(g)) for g in held}
        worst = "; ".join(
            f"{g}: {got['diff']:+.4g} (up to {got['hi']:+.4g}) against its margin {m:.4g}"
            for g, (got, m) in shown.items()
            if got is not None
        )
        after = step_weights(self.variants, self.safe, name, nxt, self.weights()) if nxt is not None else None
        back = dict(self.weights() or {})
        back[self.safe], back[name] = back.get(self.safe, 0.0) + share, 0.0
        wait = "no end at this estimate: the difference sits at or beyond the margin"
        if more is not None:
            wait = f"about {more:,} more of its calls" + (f" ({more_time / 86400:.0f} days)" if more_time else "")
        choices = [
            {"choice": "roll back", "weights": back, "cost": f"its {share:g} % back on the safe variant"},
            {
                "choice": "accept the step",
                "weights": after,
                "cost": f"{nxt or share:g} % of calls on a candidate that may be as bad as its interval's upper end "
                f"({worst}); the watch and the last step's tests stay armed",
            },
            {"choice": "wait", "weights": None, "cost": f"{wait}, at {share:g} %"},
        ]
        return {
            "next": f"stuck at its margin: {', '.join(g.name for g in held)} neither shown within its margin nor "
            "surely beyond it after a business cycle on this step; a person chooses (`callbridge rollout set`)",
            "stuck": {"guardrails": worst, "choices": choices},
        }

    def _rate(self, name: str) -> float | None:
        """The candidate's calls a second on the current step (None: too few to say)."""
        epoch = self.epochs.get(self.epoch or "")
        cand = self.cands[name]
        if epoch is None or epoch.first_t is None or cand.epoch_calls < 10 or self.t <= epoch.first_t:
            return None
        return cand.epoch_calls / (self.t - epoch.first_t)

    def _more_calls(self, name: str, final: bool) -> int | None:
        """About how many more candidate calls the slowest guardrail needs (the interval narrows as 1/sqrt(n))."""
        cand, worst = self.cands[name], 0
        for g, _, _ in self.active:
            e = cand.since[g.name].test.estimate()
            if e is None or not self._ready(e):
                have = min(e.calls) if e is not None else 0
                worst = max(worst, self.spec.min_calls - have)
                continue
            w = e.half_width(self.spec.tau, self.alpha_g) + stats.Z80 * math.sqrt(e.var)
            gap = (self.margin_abs(g) - e.diff) if final and g.kind is not Kind.LATENCY else self._clear_effect(g)
            if final and g.kind is Kind.LATENCY:
                ni = cand.since[g.name].ni
                en = ni.estimate() if ni is not None else None
                gap = -en.diff if en is not None else 0.0
            if gap <= 0:
                return None
            k = (w / gap) ** 2
            worst = max(worst, math.ceil(e.calls[0] * (k - 1)) if k > 1 else 0)
        return worst


def _f(share: float) -> float:
    """``s (1 - s)`` of a share in percent: how fast a comparison at that share gains information."""
    return share / 100.0 * (1.0 - share / 100.0)


def _reading(got: dict[str, float], margin: float) -> str:
    """A difference read against its margin, in words."""
    if got["lo"] > margin:
        return "worse than its margin"
    if got["lo"] > 0:
        return "slightly worse, within tolerance" if got["diff"] <= margin else "worse, perhaps beyond its margin"
    if got["hi"] < 0:
        return "better"
    return "no clear difference"


def _round(x: float) -> float:
    return round(x, 6)
