"""Every goal of ``bench rollout``: a scenario, what counts as a hit in one rollout, and the rate it must reach."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from bench.rollout.sim import CALLS, DAY_S, PEAK_S, RATE, STEPS, Scenario, Truth

Hit = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class Goal:
    text: str
    scenario: Scenario
    hit: Hit
    at_least: float | None = None  # the rate must be >= this (or <= ``at_most``)
    at_most: float | None = None
    given: Hit | None = None  # the rollouts the rate is over (None: all)


BASE = Truth()


def _reached(r: dict[str, Any]) -> bool:
    return r["last"] is not None


def _rolled_back(r: dict[str, Any]) -> bool:
    return r["rollback"] is not None


def _rolled_back_within(calls: int, of: str) -> Hit:
    def hit(r: dict[str, Any]) -> bool:
        back = r["rollback"]
        if back is None:
            return False
        i, cand, changed, _ = back
        start = changed if changed is not None else (0, 0)
        return bool((cand - start[1] if of == "candidate" else i - start[0]) <= calls)

    return hit


def rolled_back_within_s(seconds: float) -> Hit:
    """Rolled back after the candidate's change and within ``seconds`` of it."""

    def hit(r: dict[str, Any]) -> bool:
        back, changed = r["rollback"], r["changed"]
        return back is not None and changed is not None and back[2] is not None and back[3] - changed[2] <= seconds

    return hit


def has_changed(r: dict[str, Any]) -> bool:
    """The candidate reached the step (or the time) that changes it before any rollback."""
    back = r["rollback"]
    return (back is not None and back[2] is not None) or (back is None and r.get("changed") is not None)


def _covered(name: str) -> Hit:
    return lambda r: bool(r["covered"].get(name))


def _held_back(text: str, name: str, n: int, **worse: float) -> Goal:
    """A candidate worse than the base by ``worse``, which should seldom reach the last step."""
    return Goal(
        f"{text}: reaches the last step", Scenario(name, cand=replace(BASE, **worse), calls=n), _reached, at_most=0.05
    )


def _rolled_back_soon(text: str, name: str, n: int, at_least: float | None, **worse: float) -> Goal:
    """A candidate worse than the base by ``worse``, which should be rolled back within 1,500 of its calls."""
    return Goal(
        f"{text}: rolled back within 1,500 candidate calls",
        Scenario(name, cand=replace(BASE, **worse), calls=n),
        _rolled_back_within(1500, "candidate"),
        at_least=at_least,
    )


def goals(quick: bool) -> list[Goal]:
    """Every goal, each with the scenario that measures it."""
    n = 4000 if quick else CALLS
    return [
        *_ramp_goals(n),
        *_death_goals(n),
        *_latency_goals(n),
        *_split_goals(n),
        *_coverage_goals(n),
        *_traffic_goals(quick),
        *_watch_goals(quick),
        *_busy_goals(quick),
    ]


def _promoted_late(r: dict[str, Any]) -> bool:
    """Promoted to 50 % or beyond 3 h or more after the candidate's change."""
    if r["changed"] is None:
        return False
    changed_t = r["changed"][2]
    return any(
        v == "cand" and share is not None and share >= 50.0 and t >= changed_t + 3 * 3600
        for t, share, v in r["promotions"]
    )


def _traffic_goals(quick: bool) -> list[Goal]:
    """What real traffic brings: shared outages, callers who call back, tolerable regressions, a candidate that
    degrades after a good start, a heavy tail in a mean, replayed records."""
    n = 4000 if quick else CALLS
    outages = [
        Goal(
            f"shared 10-minute outage at the {s:g} % step: rolled back",
            Scenario(f"outage at {s:g}", outage_at=s, calls=n),
            _rolled_back,
            at_most=0.05,
            given=lambda r: r["outage"] is not None,
        )
        for s in STEPS
    ]
    three_days = 4000 if quick else 72_000
    callers = Scenario("callers x5", per_caller=5.0, icc=1 / 3, calls=three_days, stop_at_rollback=False)
    long = 4000 if quick else 60_000
    tolerable = Scenario("greeting 1.1x", cand=replace(BASE, greeting_ms=770.0), calls=long)
    trade = Scenario("half failures, greeting 1.15x", cand=replace(BASE, fail=0.01, greeting_ms=805.0), calls=long)
    degrade = Scenario(
        "degrades after 18 h",
        after=replace(BASE, fail=0.04),
        change_after_s=(1 if quick else 18) * 3600.0,
        calls=n if quick else 18_000 + 20_000,
    )
    tail = Scenario("handle tail", cand=replace(BASE, tail=0.05), handle=True, calls=n)
    copies = Scenario("200 copies", copies=200, calls=min(n, 4000))
    changed: Hit = lambda r: r["changed"] is not None  # noqa: E731
    return [
        *outages,
        Goal(
            "callers call 5 times, ICC 1/3, equal: sample-ratio flag",
            callers,
            lambda r: r["srm"] is not None,
            at_most=0.02,
        ),
        Goal("callers call 5 times, ICC 1/3, equal: rolled back", callers, _rolled_back, at_most=0.05),
        Goal("greeting 10 % slower (margin 25 %): rolled back", tolerable, _rolled_back, at_most=0.05),
        Goal("greeting 10 % slower: reaches the last step within 60,000 calls", tolerable, _reached, at_least=0.8),
        Goal("half the failures, greeting 15 % slower: rolled back", trade, _rolled_back, at_most=0.05),
        Goal("half the failures, greeting 15 % slower: reaches the last step", trade, _reached, at_least=0.8),
        Goal(
            "equal 18 h, then failures doubled: promoted to 50 % or beyond 3 h after",
            degrade,
            _promoted_late,
            at_most=0.05,
            given=changed,
        ),
        Goal(
            "equal 18 h, then failures doubled: rolled back within 20,000 calls of the change",
            degrade,
            _rolled_back_within(20_000, "calls"),
            at_least=0.8,
            given=changed,
        ),
        Goal(
            "5 % of the candidate's calls 10x longer, handle time on: reaches the last step",
            tail,
            _reached,
            at_most=0.05,
        ),
        Goal(
            "200 copies of a signed record: counted once",
            copies,
            lambda r: r["counted_copies"] == 1,
            at_least=1.0,
            given=lambda r: r["counted_copies"] is not None,
        ),
    ]


def _ramp_goals(n: int) -> list[Goal]:
    equal, swing = Scenario("equal", calls=n, stop_at_rollback=False), Scenario("swing", swing=True, calls=n)
    return [
        Goal("equal: reaches the last step", equal, _reached, at_least=0.8),
        Goal("equal: rolled back", equal, _rolled_back, at_most=0.05),
        Goal("equal, daily swing 4-40 %: reaches the last step", swing, _reached, at_least=0.8),
        Goal("equal, daily swing 4-40 %: rolled back", swing, _rolled_back, at_most=0.05),
        _held_back("failures 1.5x", "fail 1.5x", n, fail=0.03),
        _held_back("abandonment 1.5x", "abandon 1.5x", n, abandon=0.12),
    ]


def _death_goals(n: int) -> list[Goal]:
    dies = [
        Goal(
            f"dies at the {s:g} % step: rolled back within 50 of its calls",
            Scenario(f"dies at {s:g}", after=replace(BASE, fail=1.0), change_at=s, calls=n),
            _rolled_back_within(50, "candidate"),
            at_least=0.95,
            given=has_changed,
        )
        for s in STEPS
    ]
    dies[-1] = replace(
        dies[-1],
        text="dies at the last step: rolled back within 100 of its calls",
        hit=_rolled_back_within(100, "candidate"),
    )
    doubles = Goal(
        "failures double at the last step: rolled back within 20,000 calls",
        Scenario("doubles at last", after=replace(BASE, fail=0.04), change_at=100.0, calls=n + 20_000),
        _rolled_back_within(20_000, "calls"),
        at_least=0.8,
        given=has_changed,
    )
    return [*dies, doubles]


def _latency_goals(n: int) -> list[Goal]:
    return [
        _rolled_back_soon("greeting median 50 % slower", "greeting 1.5x", n, 0.8, greeting_ms=1050.0),
        _held_back("at the margin, abandonment 1.25x", "abandon 1.25x", n, abandon=0.10),
        _held_back("at the margin, greeting 1.25x", "greeting 1.25x", n, greeting_ms=875.0),
        _rolled_back_soon(
            "greeting tail heavier, same median (sigma 0.9)", "greeting tail", n, None, greeting_sigma=0.9
        ),
    ]


def _split_goals(n: int) -> list[Goal]:
    flagged: Hit = lambda r: r["srm"] is not None  # noqa: E731
    out = [
        Goal(
            f"10 % of candidate records lost, ramp from {s:g} %: flagged within 10,000 calls",
            Scenario(f"srm {s:g}", lose=0.1, steps=tuple(x for x in STEPS if x >= s), calls=min(n, 10_000)),
            flagged,
            at_least=0.8,
        )
        for s in (25.0, 50.0)
    ]
    from_5 = Scenario("srm 5", lose=0.1, calls=n if n == CALLS else 1500)
    return [
        *out,
        Goal("srm: promoted after the flag", out[0].scenario, lambda r: r["promote_after_srm"] > 0, at_most=0.0),
        Goal(
            "10 % lost, ramp from 5 %: promoted past 25 % before the flag",
            from_5,
            lambda r: r["past_25_before_srm"],
            at_most=0.0,
        ),
        Goal(
            "10 % lost, ramp from 5 %: promoted after the flag",
            from_5,
            lambda r: r["promote_after_srm"] > 0,
            at_most=0.0,
        ),
        Goal("10 % lost, ramp from 5 %: flagged", from_5, flagged, at_least=0.8),
    ]


def _coverage_goals(n: int) -> list[Goal]:
    equal = Scenario("equal", calls=n, stop_at_rollback=False)
    ramp = [
        Goal(f"coverage: {name} interval held at every look (equal ramp)", equal, _covered(name), at_least=0.95)
        for name in ("failure_rate", "abandon_rate", "greeting_ms", "first_reply_ms", "handle_time_s")
    ]
    heavy = [
        Goal(
            f"coverage: handle time (+20 %, sigma {sigma:g}) at a fixed 5 % share",
            Scenario(
                f"handle sigma {sigma:g}",
                cand=replace(BASE, handle_s=216.0, handle_sigma=sigma),
                safe=replace(BASE, handle_sigma=sigma),
                fixed=5.0,
                calls=min(n, 20_000),
                stop_at_rollback=False,
            ),
            _covered("handle_time_s"),
            at_least=0.95,
        )
        for sigma in (1.0, 2.0)
    ]
    return [*ramp, *heavy]


def _watch_goals(quick: bool) -> list[Goal]:
    """The last step left running for weeks: a late doubling caught within a day, an equal candidate kept."""
    per_day = int(RATE * 24)
    out = []
    for days in (1, 3, 7):
        wait = 1800.0 if quick else days * DAY_S
        sc = Scenario(
            f"watch, doubles after {days} d",
            first=100.0,
            after=replace(BASE, fail=0.04),
            change_after_s=wait,
            calls=int(wait / 3600 * RATE) + (1000 if quick else per_day),
        )
        out.append(
            Goal(
                f"watch: failures double {days} d into the last step: rolled back within 24 h of the change",
                sc,
                rolled_back_within_s(DAY_S),
                at_least=0.8,
                given=has_changed,
            )
        )
    equal = Scenario("watch, equal 30 d", first=100.0, calls=1500 if quick else 30 * per_day)
    out.append(
        Goal("watch: equal candidate at the last step for 30 days: rolled back", equal, _rolled_back, at_most=0.05)
    )
    return out


def _busy_goals(quick: bool) -> list[Goal]:
    """A dead candidate with calls in progress, two candidates, a doubling at 50/50."""
    n = 1500 if quick else CALLS
    out = []
    for hour, text in ((PEAK_S, "at the busiest hour (14:00, about 180 calls in progress)"), (2 * 3600.0, "at 02:00")):
        at = hour if not quick else 1200.0
        sc = Scenario(
            f"dies at last {hour / 3600:g}h",
            first=100.0,
            profile=True,
            after=replace(BASE, fail=1.0),
            change_after_s=at + (0.0 if quick or hour > 12 * 3600 else DAY_S),
            calls=n,
        )
        out.append(
            Goal(
                f"dies at the last step {text}: rolled back within 100 of its failed calls (no probes)",
                sc,
                _rolled_back_within(100, "candidate"),
                at_least=0.95,
                given=has_changed,
            )
        )
        out.append(
            Goal(
                f"dies at the last step {text}: rolled back within 50 of its failed calls (probes at 1 a minute)",
                replace(sc, name=f"{sc.name}, probes", probes=1.0),
                _rolled_back_within(50, "candidate"),
                at_least=0.95,
                given=has_changed,
            )
        )
    two = Scenario("two equal candidates", second=BASE, calls=n, stop_at_rollback=False)
    worse = Scenario("two candidates, one 1.5x", cand=replace(BASE, fail=0.03), second=BASE, calls=n)
    fixed = Scenario(
        "5 -> 10 % at 50/50", safe=replace(BASE, fail=0.05), cand=replace(BASE, fail=0.10), fixed=50.0, calls=3000
    )
    return [
        *out,
        Goal(
            "two equal candidates: one leaves the safe variant only the holdout without the last step's checks",
            two,
            lambda r: r["unchecked"],
            at_most=0.0,
        ),
        Goal("two candidates, one at 1.5x failures: it reaches its last step", worse, _reached, at_most=0.05),
        Goal(
            "failures 5 % -> 10 % at a fixed 50/50 split: rolled back within 3,000 calls",
            fixed,
            _rolled_back_within(3000, "calls"),
            at_least=0.8,
        ),
    ]
