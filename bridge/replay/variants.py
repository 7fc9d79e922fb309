"""``callbridge replay --variants DIALPLAN[,DIALPLAN]``: every script through each variant of a rollout dialplan,
each variant compared with the safe one.

A variant's run is the script's own call, on the script's dialplan for the variant's dialect with the variant's
profile overrides, model and voice (the voice made compatible with the model from the rollout's fallback voice, as
a live call's): the same caller, the same emulator annotations, another way of talking to the model. The emulator
answers as that model does (``gpt-realtime-2`` and later: a preamble, then the answer, as two message items).
The safe variant runs first and every other variant is compared with it (:func:`bridge.replay.compare.verdict`);
a script's declared comparison (beta against GA) does not apply to variants. Runs are direct (virtual time).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bridge.dialplan import Dialplan, load_dialplan
from bridge.errors import ConfigError
from bridge.replay.compare import DialectRun, ScriptResult, judge
from bridge.replay.direct import DirectOptions, Progress, in_fresh_loop, replay_call
from bridge.replay.script import CallScript, find_dialplan
from bridge.rollout.policy import RolloutSpec, Variant


def load_rollouts(names: Sequence[str], dialplans_dir: Path) -> list[tuple[str, RolloutSpec]]:
    """Each named dialplan's variants; a ConfigError names one that is missing or not a rollout."""
    out: list[tuple[str, RolloutSpec]] = []
    for name in names:
        path = find_dialplan(name, dialplans_dir)
        if path is None:
            raise ConfigError("--variants", name, f"no dialplan of that name in {dialplans_dir}")
        spec = load_dialplan(path).rollout_spec
        if spec is None:
            raise ConfigError("--variants", name, f"not a rollout dialplan ({path}: dialect is not rollout)")
        out.append((name, spec))
    return out


def variant_plans(script: CallScript, spec: RolloutSpec) -> list[tuple[Variant, Dialplan]]:
    """The plan of each variant for this script, the safe variant first."""
    ordered = [spec.variant(spec.safe), *(v for v in spec.variants if v.name != spec.safe)]
    return [(variant, script.variant_plan(variant, spec)) for variant in ordered]


def replay_variants(
    scripts: Sequence[CallScript],
    rollouts: Sequence[tuple[str, RolloutSpec]],
    *,
    options: DirectOptions | None = None,
    progress: Progress | None = None,
    virtual: bool = True,
    tolerance_ms: float | None = None,
) -> list[ScriptResult]:
    """Every script through every variant of every rollout; one result per (script, rollout), named after the script
    (and the rollout, when there are several)."""
    results: list[ScriptResult] = []
    for script in scripts:
        for name, spec in rollouts:
            runs: dict[str, DialectRun] = {}
            for variant, plan in variant_plans(script, spec):
                if progress is not None:
                    progress(script.name, variant.name, None)
                call = replay_call(script, variant.dialect, options, plan=plan, variant=variant.name)
                runs[variant.name] = in_fresh_loop(call, virtual)
                if progress is not None:
                    progress(script.name, variant.name, runs[variant.name])
            label = script.name if len(rollouts) == 1 else f"{script.name} ({name})"
            results.append(judge(script, runs, name=label, tolerance_ms=tolerance_ms))
    return results
