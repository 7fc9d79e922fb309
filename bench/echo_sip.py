"""``callbridge bench echo --sip``: the echo guard as a rate, over real SIP calls of seeded turns.

Each call is a variant of the echo set's scripts (``call_scripts/echo/``), drawn from ``--seed``: its line returns the
agent's audio ``ECHO_DB`` down and ``DELAY_MS`` late (uniform over both ranges), with line noise in half the calls
(-55 or -45 dBFS); its turns are the set's questions and answers in a drawn order, each a true barge-in (the caller
speaks ``BARGE_AFTER_MS`` into the agent's audio) with probability ``BARGE_SHARE``, else a question after the agent
is done. The calls are placed as ``callbridge replay --via sip`` places them (pjsua2 softphones whose line returns
what they hear, a worker pool, the emulator as the model), half of them with every RTP packet held a further
0..``--jitter-ms`` both ways by an impairment relay (``bridge/devkit/rtprelay.py``). Scored as ``bench echo`` scores
the direct runs (``bridge/replay/echoset.py``): false barge-ins per echoing agent turn, and the true barge-ins'
delay from the caller's onset to the cut (p50, p95, p99 and the share within :data:`GOAL_DELAY_MS`).

``--busy N`` runs N busy-loop processes beside the calls (a loaded machine); the load average is printed at the
start and the end of the run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import yaml

from bridge.replay.echoset import EchoScore, score

ECHO: Final = Path(__file__).resolve().parent.parent / "call_scripts" / "echo"
ECHO_DB: Final = (-20.0, -6.0)
DELAY_MS: Final = (60.0, 300.0)
NOISE_DBFS: Final = (None, -55.0, -45.0)  # the line's noise, drawn with weights NOISE_WEIGHTS
NOISE_WEIGHTS: Final = (0.5, 0.25, 0.25)
BARGE_SHARE: Final = 0.3
BARGE_AFTER_MS: Final = (600, 1500)
GOAL_DELAY_MS: Final = 250.0  # a true barge-in stopped within this (in >= 99 % of them)
GOAL_FALSE_PER_TURN: Final = 1 / 500  # at most one false barge-in in 500 echoing turns


def variants(seed: int, calls: int, turns: int, into: Path, echo: Path = ECHO) -> list[Path]:
    """``calls`` scripts of ``turns`` answers each, drawn from ``seed`` out of the echo set at ``echo``, written
    under ``into``; the same seed gives the same scripts."""
    template = yaml.safe_load((echo / "barge_in" / "script.yaml").read_text())
    pool = [t for t in yaml.safe_load((echo / "quiet" / "script.yaml").read_text())["turns"] if "say" in t]
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(calls):
        noise = NOISE_DBFS[int(rng.choice(len(NOISE_DBFS), p=NOISE_WEIGHTS))]
        line = {
            "echo_db": round(float(rng.uniform(*ECHO_DB)), 1),
            "echo_delay_ms": round(float(rng.uniform(*DELAY_MS))),
        }
        chosen = []
        for i in rng.choice(len(pool), size=turns, replace=turns > len(pool)):
            turn = dict(pool[int(i)])
            if rng.random() < BARGE_SHARE:
                turn.pop("pause_ms", None)
                turn["barge_in_after_ms"] = int(rng.integers(BARGE_AFTER_MS[0], BARGE_AFTER_MS[1] + 1))
            chosen.append(turn)
        data = dict(template)
        data["name"] = f"echo-{seed}-{k:03d}"
        data["description"] = f"Seeded echo turns: seed {seed}, call {k}."
        data["line"] = line | ({} if noise is None else {"noise_dbfs": noise})
        data["turns"] = [*chosen, {"wait": "agent_done", "pause_ms": 300, "hangup": True}]
        data["expect"] = {"end_reason": "caller hung up", "ended_by": "caller", "max_errors": 0}
        data["max_duration_s"] = 60 + 15 * turns
        home = into / data["name"]
        home.mkdir(parents=True)
        # the set's relative audio paths made absolute, for a copy written elsewhere
        text = yaml.safe_dump(data, sort_keys=False).replace("../../", f"{echo.parent}/")
        (home / "script.yaml").write_text(text)
        paths.append(home)
    return paths


def delays(latencies_ms: Sequence[float]) -> dict[str, Any]:
    """The barge-in delay's distribution: p50, p95, p99 and the share within :data:`GOAL_DELAY_MS`."""
    if not latencies_ms:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "within_goal": None}
    lat = np.asarray(latencies_ms, dtype=np.float64)
    p50, p95, p99 = (round(float(np.percentile(lat, q)), 1) for q in (50, 95, 99))
    return {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "within_goal": round(float(np.mean(lat <= GOAL_DELAY_MS)), 4)}


@contextlib.contextmanager
def busy_loops(count: int) -> Iterator[list[int]]:
    """``count`` busy-loop processes (a loaded machine) while inside; their pids."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def measure(seed: int, calls: int, turns: int, jitter_ms: float, busy: int) -> dict[str, Any]:
    from bridge.replay.script import load_script
    from bridge.replay.sip import SipOptions, replay_sip

    total, failed, rows = EchoScore(), 0, []
    by_jitter: dict[float, EchoScore] = {}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="callbridge-bench-echo-") as tmp, busy_loops(busy):
        scripts = [load_script(p) for p in variants(seed, calls, turns, Path(tmp))]
        half = (len(scripts) + 1) // 2
        for jitter, part in ((0.0, scripts[:half]), (jitter_ms, scripts[half:])):
            if not part:
                continue
            for script, result in zip(part, replay_sip(part, ["ga"], SipOptions(jitter_ms=jitter)), strict=True):
                run = result.runs["ga"]
                failed += bool(run.runner_failures)
                one = score(script, run)
                total.add(one)
                by_jitter.setdefault(jitter, EchoScore()).add(one)
                line = script.model.line
                assert line is not None
                rows.append(
                    {"script": script.name, "echo_db": line.echo_db, "delay_ms": line.echo_delay_ms}
                    | {"noise_dbfs": line.noise_dbfs, "jitter_ms": jitter, **one.summary()}
                    | {"delays_ms": [round(x, 1) for x in one.latencies_ms]}
                )
        load.append(os.getloadavg()[0])
    summary = total.summary()
    rate = total.false_barge_ins / max(1, total.agent_turns)
    return {
        "seed": seed,
        "calls": calls,
        "busy_loops": busy,
        "load_average": load,
        "runner_failures": failed,
        **summary,
        "false_rate": round(rate, 5),
        "goal_false_met": rate <= GOAL_FALSE_PER_TURN,
        "delay": delays(total.latencies_ms),
        "by_jitter_ms": {str(j): {**p.summary(), "delay": delays(p.latencies_ms)} for j, p in by_jitter.items()},
        "per_call": rows,
    }


def human(result: dict[str, Any]) -> str:
    lines = [
        f"{'call':<16} {'echo dB':>7} {'ms':>4} {'noise':>5} {'jitter':>6} {'turns':>5} {'false':>5} {'hits':>4} "
        f"{'resumed':>7}"
    ]
    for row in result["per_call"]:
        noise = "-" if row["noise_dbfs"] is None else f"{row['noise_dbfs']:g}"
        lines.append(
            f"{row['script']:<16} {row['echo_db']:>7g} {row['delay_ms']:>4g} {noise:>5} {row['jitter_ms']:>6g} "
            f"{row['agent_turns']:>5} {row['false_barge_ins']:>5} {round(row['recall'] * row['true_barge_ins']):>4} "
            f"{row['resumed']:>7}"
        )
    for jitter, part in result["by_jitter_ms"].items():
        p = part["delay"]
        lines.append(
            f"jitter 0..{float(jitter):g} ms: {part['false_barge_ins']} false barge-ins in {part['agent_turns']} "
            f"turns; true barge-ins {part['true_barge_ins']}, delay p50 {p['p50_ms']} ms, p95 {p['p95_ms']} ms"
        )
    d, goal = result["delay"], "met" if result["goal_false_met"] else "NOT met"
    within = "-" if d["within_goal"] is None else f"{100 * d['within_goal']:.1f} %"
    lines += [
        f"seed {result['seed']}, {result['calls']} calls, {result['busy_loops']} busy loops, load average "
        f"{result['load_average'][0]:.2f} -> {result['load_average'][-1]:.2f}, runner failures "
        f"{result['runner_failures']}",
        f"false barge-ins: {result['false_barge_ins']} in {result['agent_turns']} echoing agent turns "
        f"({result['false_rate']:.4f} per turn; goal <= 1 in 500: {goal}); pauses resumed (the agent stopped, "
        f"then went on where it was: a gap the caller heard) {result['resumed']}; cuts while the caller said words "
        f"of another turn (talked over, not false) {result.get('talked_over', 0)}",
        f"true barge-ins: {result['true_barge_ins']}, taken {round(result['recall'] * result['true_barge_ins'])}; "
        f"delay onset to cut p50 {d['p50_ms']} ms, p95 {d['p95_ms']} ms, p99 {d['p99_ms']} ms, within "
        f"{GOAL_DELAY_MS:g} ms {within} (goal >= 99 %)",
    ]
    return "\n".join(lines)
