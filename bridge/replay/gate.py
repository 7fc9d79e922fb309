"""The gate: whether a replay passes, and each reason it does not in one line (text, HTML and JUnit read them).

Red, besides a script that failed or differs unexpectedly (``bridge/replay/compare.py``) or got worse than the
baseline beyond the budget (``bridge/replay/history.py``):

* **removed**: a script the baseline ran that did not run now, or a run (dialect or variant) of a script that the
  baseline had and this run has not, unless ``--accept-removed NAME`` names the script, the run (every script's) or
  ``SCRIPT/RUN``: deleting the failing script is no way through the gate;
* **unjudged**: against the emulator, a run told other instructions or another voice than in the baseline. The
  emulator answers from the script's annotations, whatever the prompt says, so the change is judged only by a
  replay against the real model: ``--judged-by DIR`` names the report of one (``--target openai``, green) that ran
  the same instructions (by digest) with the same voice; ``--accept-unjudged REASON`` lets it through, the reason
  kept in the report and the history.

* **refused**: the plan a script names falls back on a model past its announced shutdown date
  (``bridge.dialplan.shutdown_errors``, what ``dialplan check`` refuses; ``--today`` judges as of another day).

Every accept that let something through is recorded (``meta.gate.accepts`` and the history's index). A red run
never becomes a baseline: a history's baseline moves only by ``--accept-baseline`` on a green run, and
``--baseline DIR`` refuses a red report (:func:`check_green`).

Pure: report data in, reasons out (:func:`load_judged` reads a report).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bridge.errors import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
RED_STATUSES: Final = frozenset({"failed", "unexpected"})
ERROR: Final = "error"  # the status of a script that could not be loaded (bridge.replay.compare.STATUSES)


@dataclass(frozen=True)
class Judged:
    """A real-model replay's report: what it ran, as (instructions digest, voice) pairs."""

    directory: Path
    ran: frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Accepts:
    """What the command line lets through the gate, each recorded where it was used."""

    removed: tuple[str, ...] = ()
    unjudged: str | None = None  # --accept-unjudged REASON
    judged: tuple[Judged, ...] = ()  # --judged-by DIR
    answers: tuple[str, ...] = ()  # --accept SCRIPT[:TURN] (bridge/replay/drift.py)


@dataclass
class Gate:
    exit: int = EXIT_OK
    red: list[str] = field(default_factory=list)  # one line each
    accepts: list[dict[str, str]] = field(default_factory=list)
    own: list[str] = field(default_factory=list)  # the red reasons no run's test case carries (JUnit: a case each)
    unpriced: list[str] = field(default_factory=list)  # models whose calls the cost (and its budget) leaves out

    def to_json(self) -> dict[str, Any]:
        return {
            "exit": self.exit,
            "red": list(self.red),
            "accepts": list(self.accepts),
            "own": list(self.own),
            "unpriced": list(self.unpriced),
        }


def _report(directory: Path, option: str) -> dict[str, Any]:
    path = directory / "report.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), option, "no such file: a replay report's directory is needed") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(str(path), option, f"cannot read the report: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("scripts"), list):
        raise ConfigError(str(path), option, "not a replay report")
    return data


def run_exit(data: Mapping[str, Any]) -> tuple[int, str]:
    """A report's own verdict: (exit, the first red reason). Reports that recorded their gate say it; older ones are
    judged by their scripts' statuses and regressions."""
    gate = (data.get("meta") or {}).get("gate")
    if isinstance(gate, Mapping) and isinstance(gate.get("exit"), int):
        red = list(gate.get("red") or [])
        return int(gate["exit"]), str(red[0]) if red else ""
    for script in data.get("scripts") or []:
        status = str(script.get("status"))
        if status == ERROR:
            return EXIT_USAGE, f"{script.get('script')}: error"
        if status in RED_STATUSES or script.get("regressions"):
            return EXIT_FAILED, f"{script.get('script')}: {status}"
    return EXIT_OK, ""


def check_green(data: Mapping[str, Any], where: str) -> None:
    """A ConfigError unless the report is of a green run: a red run is no baseline."""
    code, first = run_exit(data)
    if code != EXIT_OK:
        raise ConfigError(where, "--baseline", f"a red run is no baseline (exit {code}: {first or 'red'})")


def load_judged(directory: Path) -> Judged:
    """``--judged-by DIR``: a green replay against the real model; a ConfigError names what it is not."""
    data = _report(directory, "--judged-by")
    where = str(directory / "report.json")
    target = (data.get("meta") or {}).get("target")
    if target != "openai":
        raise ConfigError(where, "meta.target", f"not a real-model replay (target {target}): replay --target openai")
    code, first = run_exit(data)
    if code != EXIT_OK:
        raise ConfigError(where, "meta.gate", f"a red run judges nothing (exit {code}: {first or 'red'})")
    ran = {
        (str(cfg.get("instructions_sha", "")), str(cfg.get("voice", "")))
        for script in data["scripts"]
        for run in (script.get("runs") or {}).values()
        if (cfg := run.get("config") or {})
    }
    return Judged(directory, frozenset(ran))


def parse_accepts(
    removed: Sequence[str], unjudged: str | None, judged_by: Sequence[Path], answers: Sequence[str] = ()
) -> Accepts:
    if unjudged is not None and not unjudged.strip():
        raise ConfigError("--accept-unjudged", "REASON", "give the reason the change needs no real-model replay")
    return Accepts(
        removed=tuple(n.strip() for n in removed if n.strip()),
        unjudged=None if unjudged is None else unjudged.strip(),
        judged=tuple(load_judged(d) for d in judged_by),
        answers=tuple(a.strip() for a in answers if a.strip()),
    )


def _removed(data: Mapping[str, Any], then: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str | None]]:
    """(script, None) per baseline script not run now; (script, run) per baseline run of a script run now that is
    gone."""
    now = {str(s.get("script")): s for s in data.get("scripts") or []}
    out: list[tuple[str, str | None]] = []
    for name, script in then.items():
        if name not in now:
            out.append((name, None))
            continue
        if now[name].get("status") == ERROR:
            continue  # the script did not load: that is red already (exit 2)
        runs_now = now[name].get("runs") or {}
        out += [(name, run) for run in (script.get("runs") or {}) if run not in runs_now]
    return out


def _told(run: Mapping[str, Any]) -> tuple[str, str] | None:
    cfg = run.get("config") or {}
    return (str(cfg.get("instructions_sha", "")), str(cfg.get("voice", ""))) if cfg else None


def unjudged(data: Mapping[str, Any], then: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(script, run, what changed) for each emulator run told other instructions or another voice than the
    baseline's run of it."""
    out: list[tuple[str, str, str]] = []
    for script in data.get("scripts") or []:
        name = str(script.get("script"))
        runs_then = (then.get(name) or {}).get("runs") or {}
        for run, body in (script.get("runs") or {}).items():
            if body.get("target", "emulator") != "emulator" or run not in runs_then:
                continue
            now, before = _told(body), _told(runs_then[run])
            if now is None or before is None or now == before:
                continue
            what = []
            if now[0] != before[0]:
                what.append(f"instructions #{before[0]} -> #{now[0]}")
            if now[1] != before[1]:
                what.append(f"voice {before[1] or '-'} -> {now[1] or '-'}")
            out.append((name, run, ", ".join(what)))
    return out


def _accepted_removal(accepts: Accepts, script: str, run: str | None) -> str | None:
    names = {script} if run is None else {script, run, f"{script}/{run}"}
    return next((n for n in accepts.removed if n in names), None)


def judge(
    data: Mapping[str, Any],
    baseline: Mapping[str, Mapping[str, Any]] | None,
    accepts: Accepts,
    fail_on: str = "unexpected",
) -> Gate:
    """The gate of a run (its report's data, with what changed since the baseline applied): exit 2 when a script
    could not be loaded, 1 when anything is red, else 0; the red reasons, one line each, and the accepts used."""
    from bridge.replay.compare import label

    gate = Gate(unpriced=list(((data.get("meta") or {}).get("prices") or {}).get("unpriced") or []))
    statuses = RED_STATUSES | ({"expected"} if fail_on == "any" else set())
    for script in data.get("scripts") or []:
        name, status = str(script.get("script")), str(script.get("status"))
        why = [*(script.get("errors") or []), *(script.get("failures") or []), *(script.get("unexpected") or [])]
        if status == ERROR or status in statuses:  # each reason a line of its own
            gate.red += [f"{name}: {status.replace('_', ' ')}: {w}" for w in why or script.get("expected") or [""]]
        for worse in script.get("regressions") or []:
            gate.red.append(f"{name}: worse than the baseline: {worse}")
        gate.own += [f"{name}: {line}" for line in script.get("answer_red") or []]
    gate.accepts += [dict(a) for s in data.get("scripts") or [] for a in s.get("answer_accepts") or []]
    for name, refused in ((data.get("meta") or {}).get("refused") or {}).items():
        gate.own += [f"{name}: refused: {why}" for why in refused]  # the service would refuse the plan's calls
    if baseline is not None:
        for script, run in _removed(data, baseline):
            what = script if run is None else f"{script}/{run}"
            used = _accepted_removal(accepts, script, run)
            if used is not None:
                gate.accepts.append({"kind": "removed", "name": what, "by": f"--accept-removed {used}"})
                continue
            gone = "in the baseline, not run now" if run is None else f"its {label(run)} run is in the baseline only"
            gate.own.append(f"{script}: removed: {gone} (--accept-removed {what} accepts it)")
        if (data.get("meta") or {}).get("target", "emulator") == "emulator":
            gate.own += _unjudged_reds(data, baseline, accepts, gate)
    gate.red += gate.own
    if any(s.get("status") == ERROR for s in data.get("scripts") or []):
        gate.exit = EXIT_USAGE
    elif gate.red:
        gate.exit = EXIT_FAILED
    return gate


def _unjudged_reds(
    data: Mapping[str, Any], baseline: Mapping[str, Mapping[str, Any]], accepts: Accepts, gate: Gate
) -> list[str]:
    from bridge.replay.compare import label

    red: list[str] = []
    runs = {(s.get("script"), n): b for s in data.get("scripts") or [] for n, b in (s.get("runs") or {}).items()}
    for script, run, what in unjudged(data, baseline):
        told = _told(runs[(script, run)])
        judged = next((j for j in accepts.judged if told in j.ran), None)
        if judged is not None:
            gate.accepts.append({"kind": "judged", "name": f"{script}/{run}", "by": f"--judged-by {judged.directory}"})
        elif accepts.unjudged is not None:
            gate.accepts.append(
                {"kind": "unjudged", "name": f"{script}/{run}", "by": "--accept-unjudged", "reason": accepts.unjudged}
            )
        else:
            red.append(
                f"{script}: unjudged: {label(run)} {what}: the emulator cannot judge it (--judged-by a real-model "
                "replay of it, or --accept-unjudged REASON)"
            )
    return red
