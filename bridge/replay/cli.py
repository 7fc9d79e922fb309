"""``callbridge replay`` and ``callbridge scripts``.

::

    callbridge replay PATHS... [--dialects beta,ga | --variants DIALPLAN[,DIALPLAN]] [--models safe|dialect]
                               [--via direct|sip]
                               [--target emulator|openai] [--report DIR] [--json] [--junit FILE]
                               [--fail-on unexpected|any] [--timing-tolerance-ms MS] [--baseline DIR]
                               [--history DIR [--accept-baseline]] [--budget NAME=VALUE]
                               [--emulator-set [SCOPE:]NAME=VALUE] [--accept-removed NAME] [--judged-by DIR]
                               [--accept-unjudged REASON] [--accept SCRIPT[:TURN]]
                               [--grader-model MODEL [--grader-url URL]]
    callbridge scripts check PATHS...
    callbridge scripts from-recording REC --out call_scripts/NAME [--keep-expectations]

A script that names a rollout plan (``dialplan: support``) runs, in the dialect of the plan's safe variant, that
variant's model, voice and profile overrides: the calls production falls back on (``--models dialect``: each
dialect's default model instead).

``--variants support`` runs every script through each variant of the rollout dialplan ``support`` (from
``--dialplans``) and compares each with the safe one (``bridge/replay/variants.py``; direct runs only); the report
has a column per variant.

``--emulator-set [SCOPE:]NAME=VALUE`` (repeatable) sets an emulator setting over the scripts' own, for every run or
for the runs of one model (a name or fnmatch pattern), rollout variant or dialect (``bridge/replay/emulation.py``):
``--variants support --emulator-set gpt-realtime-2.1-mini:response_latency_ms=8150`` makes the candidate 2 s slower.

``--baseline DIR`` compares the run with an earlier one (per script what changed since; the report links it);
``--history DIR`` keeps each run's report in a directory of its own and an index of the runs
(``bridge/replay/history.py``); its baseline moves only by ``--accept-baseline`` on a green run. A script the baseline
ran that is gone, and a prompt or voice change the emulator cannot judge, are red (``bridge/replay/gate.py``).

``--grader-model MODEL`` judges the scripts' ``means``, ``must_not_mean`` and ``rubric`` with a text model through
the Responses API (``bridge/replay/grader.py``; against the emulator, its deterministic rule); off without it.

Each script gets a status: ``same``; ``by_design`` (the runs differ only as the dialects' capabilities declare);
``expected`` (differences the script declares in ``compare``); ``unexpected`` (a difference nobody declared, timing
beyond the tolerance included); ``failed`` (an expectation or a bound failed); ``error`` (the script could not be
loaded: its row names the file and the field, and every other script still runs).

Exit status of ``replay``: 0 when nothing fails the gate; 1 with ``--fail-on unexpected`` (the default) when a
script is ``failed`` or ``unexpected``, or (with a baseline) worse than it beyond ``--budget``, removed or unjudged
(each red reason one line: ``RED ...``), with ``--fail-on
any`` (alias ``--fail-on-differs``) also on ``expected``;
2 for a bad command line, or when a script could not be loaded (after the others ran and the report was written).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from bridge.errors import BridgeError, ConfigError, redact
from bridge.replay.compare import DialectRun, ScriptResult, check_rows, error_result, label, summarize
from bridge.replay.script import DEFAULT_DIALECTS, DIALECT_NAMES, CallScript, find_scripts, load_script
from bridge.replay.timing import DEFAULT_TOLERANCE_MS

if TYPE_CHECKING:
    from bridge.replay.history import Baseline

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
BAR_WIDTH = 30


class Progress:
    """A progress bar on stderr when it is a terminal; otherwise one line per finished script."""

    def __init__(self, total_calls: int, stream: IO[str] | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.quiet = quiet  # --quiet: nothing at all
        self.total = max(1, total_calls)
        self.done = 0
        self._runs: dict[str, list[DialectRun]] = {}

    def __call__(self, script: str, dialect: str, run: DialectRun | None) -> None:
        if self.quiet:
            return
        if run is None:
            if self.tty:
                self._bar(f"{script} {label(dialect)}")
            return
        self.done += 1
        self._runs.setdefault(script, []).append(run)
        if self.tty:
            self._bar(f"{script} {label(dialect)}")

    def script_done(self, result: ScriptResult) -> None:
        if self.tty or self.quiet:
            return
        parts = [f"{label(d)} {'ok' if r.ok else 'FAILED'} {r.wall_s:.2f} s" for d, r in result.runs.items()]
        print(f"replay: {result.script}: {result.status} ({', '.join(parts)})", file=self.stream, flush=True)

    def _bar(self, what: str) -> None:
        filled = BAR_WIDTH * self.done // self.total
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} {what[:40]:<40}")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\r" + " " * (BAR_WIDTH + 60) + "\r")
            self.stream.flush()


def _dialects(text: str) -> list[str]:
    names = [d.strip().lower() for d in text.split(",") if d.strip()]
    bad = [d for d in names if d not in DIALECT_NAMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown dialect(s) {bad or text!r}; expected some of {list(DIALECT_NAMES)}")
    return list(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    from bridge.cli import build_parser as base

    p = base("replay", "replay call scripts through the beta and GA dialects and compare them")
    p.add_argument("paths", nargs="+", type=Path, help="script directories, or directories of scripts")
    p.add_argument("--dialects", type=_dialects, help="comma-separated, of beta,ga,live (default: beta,ga)")
    p.add_argument(
        "--variants",
        type=lambda text: [n.strip() for n in text.split(",") if n.strip()],
        metavar="DIALPLAN[,DIALPLAN]",
        help="instead of the dialects: every variant of these rollout dialplans, each against the safe one",
    )
    p.add_argument(
        "--models",
        choices=("safe", "dialect"),
        default="safe",
        help="safe (default): a script naming a rollout plan runs its safe variant (model, voice, overrides) in that "
        "variant's dialect; dialect: each dialect's default model",
    )
    p.add_argument("--via", choices=("direct", "sip"), default="direct", help="direct: virtual time, no SIP")
    p.add_argument("--target", choices=("emulator", "openai"), default="emulator", help="the model service")
    p.add_argument("--report", type=Path, metavar="DIR", help="write report.json and report.html here")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument(
        "--quiet", action="store_true", help="no progress and no INFO log lines on stderr: only the report, errors"
    )
    p.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML: a test case per script and run")
    p.add_argument(
        "--fail-on",
        choices=("unexpected", "any"),
        default="unexpected",
        help="exit 1 on failures and unexpected differences (default), or on any difference the script declares too",
    )
    p.add_argument("--fail-on-differs", dest="fail_on", action="store_const", const="any", help="--fail-on any")
    p.add_argument(
        "--timing-tolerance-ms",
        type=float,
        default=DEFAULT_TOLERANCE_MS,
        metavar="MS",
        help=f"timing figures closer than this are alike, unless a script says (default {DEFAULT_TOLERANCE_MS:g})",
    )
    p.add_argument("--dialplans", type=Path, help="where named dialplans live (default: ./dialplans)")
    p.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="compare with an earlier green run: its --report directory, or a --history directory (its accepted "
        "baseline)",
    )
    p.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="how much worse than the baseline a run may get before the gate fails (repeatable): reply_gap_ms "
        "(500), reply_gap_p90_ms (1000), greeting_ms (500), barge_in_cut_ms (300), cost_rise (0.10), by_design (0)",
    )
    _emulator_set_option(p)
    _grader_options(p)
    _gate_options(p)
    _history_options(p)
    sip = p.add_argument_group("--via sip")
    sip.add_argument("--bridge", metavar="sip:HOST:PORT", help="use this running `callbridge serve`")
    sip.add_argument("--bridge-reports", type=Path, metavar="FILE", help="its --report-file (with --bridge)")
    sip.add_argument("--emulator-url", metavar="URL", help="its emulator's http://HOST:PORT (with --bridge)")
    sip.add_argument("--workers", type=int, default=1, help="workers of the bridge started here")
    return p


def _emulator_set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--emulator-set",
        action="append",
        default=[],
        metavar="[SCOPE:]NAME=VALUE",
        help="an emulator setting over the scripts' own (repeatable): for every run, or for the runs of one model "
        "(name or fnmatch pattern), rollout variant or dialect, e.g. gpt-realtime-2.1-mini:response_latency_ms=8150",
    )


def _grader_options(p: argparse.ArgumentParser) -> None:
    """The grader of ``means``, ``must_not_mean`` and ``rubric`` (``bridge/replay/grader.py``): off unless named."""
    p.add_argument(
        "--grader-model",
        default=os.environ.get("CALLBRIDGE_GRADER_MODEL") or None,  # bridge.replay.grader.MODEL_ENV
        metavar="MODEL",
        help="judge the scripts' means, must_not_mean and rubric with this text model (default: "
        "$CALLBRIDGE_GRADER_MODEL; none: not judged)",
    )
    p.add_argument(
        "--grader-url",
        default=os.environ.get("CALLBRIDGE_GRADER_URL") or None,  # bridge.replay.grader.URL_ENV
        metavar="URL",
        help="the Responses API's base URL (default: $CALLBRIDGE_GRADER_URL, else the emulator's rule with --target "
        "emulator and https://api.openai.com/v1 with --target openai); 'emulator': the emulator's rule",
    )


def _grader_config(args: argparse.Namespace) -> Any:
    """The grader's configuration (None: off); a ConfigError naming the setting when it cannot work."""
    from bridge.replay.grader import EMULATOR, OPENAI_API, GraderConfig

    if not args.grader_model:
        if args.grader_url:
            raise ConfigError("--grader-url", args.grader_url, "names no model: give --grader-model too")
        return None
    url = args.grader_url or (EMULATOR if args.target == "emulator" else OPENAI_API)
    if url != EMULATOR and not url.startswith(("http://", "https://")):
        raise ConfigError("--grader-url", url, "expected http(s)://HOST[:PORT]/v1 or 'emulator'")
    key = os.environ.get("OPENAI_API_KEY", "").strip() or None
    if key is None and url.startswith(OPENAI_API):
        raise ConfigError("environment", "OPENAI_API_KEY", f"the grader at {OPENAI_API} needs the key")
    return GraderConfig(args.grader_model, url, None if url == EMULATOR else key)


def _grade(args: argparse.Namespace, scripts: Sequence[CallScript], results: Sequence[ScriptResult]) -> Any:
    """The grader's verdicts on the results (their checks and failures), and the report's ``meta.grader``."""
    from bridge.replay import grader

    config = getattr(args, "grader", None)  # set by main (_grader_config)
    if config is None:
        return grader.off(scripts)
    by_source = {str(s.source): s for s in scripts}
    pairs = [(by_source[r.source], r) for r in results if r.source in by_source]
    return grader.grade(pairs, config, args.emulator_url if args.target == "emulator" else None)


def _history_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--baseline-tolerance-ms",
        type=float,
        default=150.0,  # bridge.replay.history.BASELINE_TOLERANCE_MS (not imported: the parser loads fast)
        metavar="MS",
        help="with a baseline: list every caller-felt figure that moved further than this, within the budget or "
        "not (default 150; the budget, --budget, decides red)",
    )
    p.add_argument(
        "--history",
        type=Path,
        metavar="DIR",
        help="keep the report in DIR/<time>/ and add the run to DIR/index.json and index.html (default "
        "--baseline: the history's accepted baseline)",
    )
    p.add_argument(
        "--keep-audio",
        type=int,
        default=10,
        metavar="N",
        help="--history: keep the recordings of the newest N runs only (older runs keep their reports; default 10)",
    )
    p.add_argument(
        "--keep",
        type=int,
        default=30,
        metavar="N",
        help="--history: keep the newest N run directories only, and the baseline's (the index keeps every run's "
        "figures; default 30)",
    )


def _gate_options(p: argparse.ArgumentParser) -> None:
    """What may let a run through the gate against its baseline (``bridge/replay/gate.py``), each recorded."""
    p.add_argument(
        "--today",
        type=lambda text: __import__("datetime").date.fromisoformat(text),
        metavar="YYYY-MM-DD",
        help="judge the plans' models' shutdown dates as of this day (default: today, UTC)",
    )
    p.add_argument(
        "--accept-baseline",
        action="store_true",
        help="--history: make this run the history's baseline if it is green (a red run never is one)",
    )
    p.add_argument(
        "--accept-removed",
        action="append",
        default=[],
        metavar="NAME",
        help="a script (or a run: a dialect or variant, or SCRIPT/RUN) the baseline had and this run has not, on "
        "purpose (repeatable); without it a removed script is red",
    )
    p.add_argument(
        "--judged-by",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="the report of a green real-model replay (--target openai) of the changed instructions and voice: "
        "without it (or --accept-unjudged) a prompt or voice change against the emulator is red",
    )
    p.add_argument(
        "--accept-unjudged",
        metavar="REASON",
        help="let a prompt or voice change through without a real-model replay; the reason is kept in the report",
    )
    p.add_argument(
        "--accept",
        action="append",
        default=[],
        metavar="SCRIPT[:TURN]",
        help="a changed pinned answer of SCRIPT (or of its turn: turns[N], greeting, closing) is on purpose",
    )


def _load(
    paths: Sequence[Path], dialplans: Path | None, safe: bool = False
) -> tuple[list[CallScript], dict[str, ScriptResult]]:
    """The scripts that load (``safe``: each on its rollout plan's safe variant), and an error row for each that
    does not (by its file); a missing path raises."""
    scripts: list[CallScript] = []
    errors: dict[str, ScriptResult] = {}
    for path in find_scripts(paths):
        try:
            script = load_script(path, dialplans)
            scripts.append(script.on_safe_variant() if safe else script)
        except ConfigError as exc:
            errors[exc.source] = error_result(exc.source, redact(str(exc)))
    return scripts, errors


def _in_order(
    paths: Sequence[Path], results: list[ScriptResult], errors: dict[str, ScriptResult]
) -> list[ScriptResult]:
    """The results and the error rows in the order the scripts were found."""
    from bridge.replay.script import script_file

    by_source: dict[str, list[ScriptResult]] = {}
    for r in results:
        by_source.setdefault(r.source, []).append(r)
    out: list[ScriptResult] = []
    for path in find_scripts(paths):
        src = str(script_file(path))
        out += by_source.pop(src, []) + ([errors.pop(src)] if src in errors else [])
    return out + [r for rs in by_source.values() for r in rs] + list(errors.values())


def _openai_key() -> str:
    key = os.environ.get("OPENAI_API_KEY", "").strip()
    if not key:
        raise ConfigError("environment", "OPENAI_API_KEY", "--target openai needs the key in the environment")
    return key


def run(args: argparse.Namespace) -> tuple[list[ScriptResult], dict[str, Any]]:
    scripts, errors = _load(args.paths, args.dialplans, safe=args.models == "safe" and args.variants is None)
    if not scripts and not errors:
        raise ConfigError(", ".join(map(str, args.paths)), "(path)", "no call scripts found")
    args.emulator_sets = _emulator_sets(args, scripts)
    if args.variants is not None:
        results, meta = _run_variants(args, scripts)
    else:
        results, meta = _run_dialects(args, scripts)
    meta["grader"] = _grade(args, scripts, results)
    meta["tolerance_ms"] = args.timing_tolerance_ms
    meta["models"] = "variants" if args.variants is not None else args.models
    meta["refused"] = _refused(scripts, args.today, args.target)
    return _in_order(args.paths, results, errors), meta


def _refused(scripts: Sequence[CallScript], today: Any, target: str = "emulator") -> dict[str, list[str]]:
    """Per script, what the service refuses of the plan it names: a model past its shutdown date that its calls
    fall back on (``bridge.dialplan.shutdown_errors``), and with ``--target openai`` a dialect OpenAI's service no
    longer takes (``service_errors``), as ``dialplan check`` says them."""
    import datetime as dt

    from bridge.config import OPENAI_URL
    from bridge.dialplan import service_errors, shutdown_errors

    day = today or dt.datetime.now(dt.UTC).date()
    url = OPENAI_URL if target == "openai" else None
    out: dict[str, list[str]] = {}
    for script in scripts:
        plan = script.named
        if plan is not None and (found := shutdown_errors(plan, day) + service_errors(plan, url, day)):
            out[script.name] = [f"{e.source}: {e.field}: {e.message}" for e in found]
    return out


def _emulator_sets(args: argparse.Namespace, scripts: Sequence[CallScript]) -> Any:
    """``--emulator-set``, each checked: its form, the setting, and that its scope names a known model, rollout
    variant or dialect (a ConfigError naming the option otherwise)."""
    from bridge.replay.emulation import OPTION, EmulatorSets, known
    from bridge.replay.script import default_dialplans_dir

    if not args.emulator_set:
        return EmulatorSets()
    if args.target != "emulator":
        raise ConfigError(OPTION, args.emulator_set[0], "sets the emulator's settings: not with --target openai")
    if args.bridge is not None and args.emulator_url is None:
        message = "a running bridge's emulator is reached through --emulator-url only: give it"
        raise ConfigError(OPTION, args.emulator_set[0], message)
    plans = [plan for script in scripts for plan in script.plans.values()]
    sets = EmulatorSets.parse(args.emulator_set, known(args.dialplans or default_dialplans_dir(), plans))
    for item in args.emulator_set:
        name = item.split("=", 1)[0].rsplit(":", 1)[-1].strip()
        overridden = [s.name for s in scripts if name in UNAPPLIED and UNAPPLIED[name](s)]
        if overridden:
            why = f"the annotation of {', '.join(overridden)} says it, so the setting would never take effect"
            raise ConfigError(OPTION, item, f"{name}: not applied: {why}")
    return sets


# emulator settings a script's annotations override: set for such a script, nothing would change
UNAPPLIED: Final[dict[str, Any]] = {
    "greeting": lambda s: s.model.emulator.greeting is not None,
}


def _run_dialects(args: argparse.Namespace, scripts: list[CallScript]) -> tuple[list[ScriptResult], dict[str, Any]]:
    dialects: list[str] = args.dialects or list(DEFAULT_DIALECTS)
    progress = Progress(len(scripts) * len(dialects), quiet=args.quiet)
    t0 = time.perf_counter()
    try:
        if args.via == "direct":
            from bridge.replay.direct import replay_direct

            options = _direct_options(args)
            results = []
            for script in scripts:
                [result] = replay_direct(
                    [script], dialects, options=options, progress=progress, virtual=args.target == "emulator",
                    tolerance_ms=args.timing_tolerance_ms,
                )  # fmt: skip
                progress.script_done(result)
                results.append(result)
        else:
            from bridge.replay.sip import SipOptions, replay_sip

            if args.target == "openai":
                _openai_key()  # the workers read it from the environment
            opts = SipOptions(
                bridge=args.bridge,
                bridge_reports=args.bridge_reports,
                emulator_url=args.emulator_url,
                target=args.target,
                workers=args.workers,
                tolerance_ms=args.timing_tolerance_ms,
                emulator_sets=args.emulator_sets,
            )
            results = replay_sip(scripts, dialects, opts, progress=progress, on_result=progress.script_done)
    finally:
        progress.close()
    return results, _meta(args, results, time.perf_counter() - t0, dialects=dialects)


def _direct_options(args: argparse.Namespace) -> Any:
    """The direct runner's options: the real service with ``--target openai``; with ``--report DIR`` every call is
    recorded into ``DIR/audio/<script>-<run>/`` (the report plays it)."""
    from bridge.replay.direct import DirectOptions, openai_connector
    from bridge.replay.report import AUDIO_DIR

    record = args.report / AUDIO_DIR if args.report is not None else None
    if args.target != "openai":
        return DirectOptions(record_dir=record, emulator_sets=args.emulator_sets)
    from bridge.config import OPENAI_URL

    return DirectOptions(connector=openai_connector(OPENAI_URL, _openai_key()), target="openai", record_dir=record)


def _meta(args: argparse.Namespace, results: list[ScriptResult], wall: float, **columns: Any) -> dict[str, Any]:
    call_s = sum(r.duration_ms for res in results for r in res.runs.values()) / 1000.0
    return {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "via": args.via,
        "target": args.target,
        **columns,
        "scripts": len(results),
        "wall_s": round(wall, 3),
        "call_s": round(call_s, 3),
        "speed_x": round(call_s / wall, 1) if wall > 0 else None,
    }


def _run_variants(args: argparse.Namespace, scripts: list[CallScript]) -> tuple[list[ScriptResult], dict[str, Any]]:
    """``--variants``: every script through each variant of the named rollout dialplans (direct runs)."""
    from bridge.replay.script import default_dialplans_dir
    from bridge.replay.variants import load_rollouts, replay_variants

    if args.dialects is not None:
        raise ConfigError("replay", "--variants", "give either --dialects or --variants")
    if args.via != "direct":
        raise ConfigError("replay", "--variants", "variants replay direct only (--via direct)")
    rollouts = load_rollouts(args.variants, args.dialplans or default_dialplans_dir())
    options = _direct_options(args)
    # the report's columns: the safe variant of each rollout first, as the runs are
    variants = list(dict.fromkeys(v.name for _, spec in rollouts for v in (spec.variant(spec.safe), *spec.variants)))
    progress = Progress(len(scripts) * sum(len(spec.variants) for _, spec in rollouts), quiet=args.quiet)
    t0 = time.perf_counter()
    try:
        results = []
        for script in scripts:
            found = replay_variants(
                [script], rollouts, options=options, progress=progress, virtual=args.target == "emulator",
                tolerance_ms=args.timing_tolerance_ms,
            )  # fmt: skip
            for result in found:
                progress.script_done(result)
            results += found
    finally:
        progress.close()
    safe = {name: spec.safe for name, spec in rollouts}
    return results, _meta(args, results, time.perf_counter() - t0, variants=variants, rollouts=args.variants,
                          safe=safe)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """``callbridge replay ...`` (see the module docstring)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.quiet:
        import logging

        logging.getLogger().setLevel(logging.WARNING)
    try:
        from bridge.replay.gate import parse_accepts
        from bridge.replay.history import Budget

        budget = Budget.parse(args.budget)
        _check_history_options(args)
        accepts = parse_accepts(args.accept_removed, args.accept_unjudged, args.judged_by, args.accept)
        args.grader = _grader_config(args)
        baseline = _baseline(args)
        results, meta = run(args)
    except (ConfigError, BridgeError, ValueError) as exc:
        print(f"callbridge replay: {redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    from bridge.replay.gate import judge
    from bridge.replay.report import report_json

    data = report_json(results, meta, args.report)
    if baseline is not None:
        from bridge.replay.history import apply_baseline

        apply_baseline(data, baseline, args.report, budget, args.baseline_tolerance_ms, accepts.answers)
    gate = judge(data, None if baseline is None else baseline.scripts, accepts, args.fail_on)
    data["meta"]["gate"] = gate.to_json()
    code = gate.exit
    if args.report is not None:
        from bridge.replay.report import write_report

        page = write_report(results, args.report, meta, data=data)
        print(f"report: {page}", file=sys.stderr)
    for result in results:
        for error in result.errors:
            print(f"callbridge replay: {error}", file=sys.stderr)
    if args.junit is not None:
        from bridge.replay.junit import write_junit

        write_junit(results, args.junit, meta, data)
        print(f"junit: {args.junit}", file=sys.stderr)
    if args.history is not None:
        from bridge.replay.history import record_run

        accept = args.accept_baseline and code == EXIT_OK
        page = record_run(
            args.history, data, args.report, code, keep_audio=args.keep_audio, keep=args.keep, accept=accept
        )
        print(f"history: {page}", file=sys.stderr)
    if args.json:
        print(json.dumps(data, default=str))
    else:
        _print_text(results, meta, data)
    if args.accept_baseline and not args.json:
        print("baseline: this run" if code == EXIT_OK else "baseline: not moved: a red run is never a baseline")
    return code


def _check_history_options(args: argparse.Namespace) -> None:
    if args.keep is not None and args.keep < 1:
        raise ConfigError("--keep", "N", f"keep at least the run being recorded (1 or more), not {args.keep}")
    if args.keep_audio < 0:
        raise ConfigError("--keep-audio", "N", f"a number of runs, 0 or more, not {args.keep_audio}")
    if not 0 <= args.baseline_tolerance_ms < float("inf"):
        raise ConfigError("--baseline-tolerance-ms", "MS", f"0 or more, not {args.baseline_tolerance_ms}")
    if args.accept_baseline and args.history is None:
        raise ConfigError("--accept-baseline", "--history", "moves a history's baseline: give --history DIR")


def _baseline(args: argparse.Namespace) -> Baseline | None:
    """The run to compare with (``--baseline``, else the history's baseline: its newest accepted run), read before
    this run starts; with ``--history`` and no ``--report``, this run's report directory in the history
    (``args.report`` set)."""
    from bridge.replay.history import latest_run, load_baseline, new_run_dir

    path: Path | None = args.baseline
    if args.history is not None:
        if args.history.exists() and not args.history.is_dir():
            raise ConfigError(str(args.history), "--history", "not a directory")
        path = path or latest_run(args.history)
        if args.report is None:
            args.report = new_run_dir(args.history)
    return None if path is None else load_baseline(path)


def _print_text(results: Sequence[ScriptResult], meta: dict[str, Any], data: dict[str, Any]) -> None:
    counts = summarize(results)
    since = {s["script"]: s.get("since_baseline") for s in data.get("scripts", [])}
    regressed = {s["script"]: s.get("regressions") for s in data.get("scripts", [])}
    diffs = {s["script"]: s.get("instructions_diff") for s in data.get("scripts", [])}
    for r in results:
        print(f"{r.status:<10} {r.script}")
        for reason in r.errors:
            print(f"           ! {reason}")
        for reason in r.failures:
            print(f"           ✗ {reason}")
        if r.expected:
            print(f"           as the script expects: {r.because or 'a known difference'}")
        for reason in r.differences:
            print(f"           {'=' if reason in r.expected else '≠'} {reason}")
        for reason in r.by_design:
            print(f"           ~ by design: {reason}")
        for row in check_rows(r.runs):
            mark = "pass" if row["passed"] else "FAIL"
            print(f"           check {row['check']} on {label(row['run'])}: {mark} ({row['detail']})")
        for change in since.get(r.script) or []:
            print(f"           since the baseline: {change}")
        for regression in regressed.get(r.script) or []:
            print(f"           ✗ worse than the baseline: {regression}")
        for run_name, diff in (diffs.get(r.script) or {}).items():
            print(f"           instructions of {label(run_name)} since the baseline:")
            for line in diff.splitlines():
                print(f"             {line}")
    baseline = data["meta"].get("baseline")
    if baseline:
        gone = f"; not run now: {', '.join(baseline['missing'])}" if baseline["missing"] else ""
        worse = f", {baseline['regressed']} worse beyond the budget" if baseline.get("regressed") else ""
        print(
            f"baseline {baseline['dir']} ({baseline['created']}): {baseline['changed']} script(s) changed since the "
            f"baseline{worse}{gone}"
        )
    _print_cost(data["meta"])
    from bridge.replay.grader import grader_lines

    for line in grader_lines(data["meta"].get("grader") or {}):
        print(line)
    columns = f"{len(meta['variants'])} variant(s)" if "variants" in meta else f"{len(meta['dialects'])} dialect(s)"
    print(
        f"{len(results)} script(s) x {columns}: {counts['status_same']} same, {counts['status_by_design']} by design, "
        f"{counts['status_expected']} expected, {counts['status_unexpected']} unexpected, "
        f"{counts['status_failed']} failed, {counts['status_error']} error(s); {meta['call_s']:.1f} s of calls in "
        f"{meta['wall_s']:.2f} s ({meta['speed_x']}x real time)"
    )
    _print_gate(data["meta"].get("gate") or {})


def _print_gate(gate: Mapping[str, Any]) -> None:
    """The accepts that let something through, then each red reason on a line of its own, then the verdict."""
    for accept in gate.get("accepts") or []:
        reason = f": {accept['reason']}" if accept.get("reason") else ""
        print(f"accepted ({accept.get('kind')}): {accept.get('name')} by {accept.get('by')}{reason}")
    for line in gate.get("red") or []:
        print(f"RED {line}")
    red = len(gate.get("red") or [])
    unpriced = f" (cost not judged: no price for {', '.join(gate['unpriced'])})" if gate.get("unpriced") else ""
    print(f"gate: red, {red} reason(s){unpriced}" if red else f"gate: green{unpriced}")


def _print_cost(meta: Mapping[str, Any]) -> None:
    """The cost of each column's calls, where the prices come from, and a warning for each rate that is assumed."""
    costs, prices = meta.get("cost_usd") or {}, meta.get("prices") or {}
    if costs:
        each = ", ".join(f"{label(name)} ${cost:.4f}" for name, cost in costs.items())
        print(f"cost: {each} (prices as of {prices.get('as_of', '?')}, {prices.get('source', '?')})")
    if prices.get("assumed"):
        assumed = ", ".join(prices["assumed"])
        print(f"warning: assumed prices for {assumed} (not published when the table was dated): set price_table")
    if prices.get("unpriced"):
        print(f"warning: no price for {', '.join(prices['unpriced'])}: its calls are left out of the cost")


# --------------------------------------------------------------------------------------------------------------
# callbridge scripts


def scripts_main(argv: Sequence[str] | None = None) -> int:
    """``callbridge scripts check PATHS...`` and ``callbridge scripts from-recording REC --out DIR``."""
    from bridge.cli import build_parser as base

    parser = base("scripts", "call-script tools")
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser("check", help="validate call scripts; name the file and field of each error")
    check.add_argument("paths", nargs="+", type=Path, help="call-script directories or files")
    check.add_argument("--dialplans", type=Path, help="check each script's dialplan against these files")
    check.add_argument("--json", action="store_true", help="{ok, errors} as JSON")
    rec = sub.add_parser("from-recording", help="turn a call recording into a call script")
    rec.add_argument("recording", type=Path, help="a recording directory (audio.wav + events.jsonl)")
    rec.add_argument("--out", type=Path, required=True, help="the new script directory, e.g. call_scripts/NAME")
    rec.add_argument("--name", help="script name (default: the --out directory's name)")
    rec.add_argument("--dialplan", help="dialplan name (default: the one the recorded call used)")
    rec.add_argument("--force", action="store_true", help="overwrite an existing script.yaml")
    rec.add_argument(
        "--keep-expectations",
        action="store_true",
        help="also expect what merely held in this call (no tool call, no barge-in, no error, the phases, the end "
        "reason's words)",
    )
    rec.add_argument("--dialplans", type=Path, help="where named dialplans live (default: ./dialplans)")
    rec.add_argument("--json", action="store_true", help="{wrote: DIR} as JSON")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.action == "check":
        return _check_scripts(args.paths, args.dialplans, args.json)
    from bridge.replay.from_recording import script_from_recording

    try:
        out = script_from_recording(
            args.recording, args.out, name=args.name, dialplan=args.dialplan, overwrite=args.force,
            dialplans_dir=args.dialplans, keep_expectations=args.keep_expectations,
        )  # fmt: skip
    except (ConfigError, OSError, ValueError) as exc:
        print(f"callbridge scripts: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps({"wrote": str(out)}) if args.json else f"wrote {out}")
    return EXIT_OK


def _check_scripts(targets: list[Path], dialplans: Path | None, as_json: bool) -> int:
    """``scripts check``: every error, each naming its file and field; a bad script is a configuration error (2)."""
    try:
        paths = find_scripts(targets)
    except ConfigError as exc:
        print(f"ERROR  {exc}", file=sys.stderr)
        return EXIT_USAGE
    ok: list[dict[str, Any]] = []
    errors: list[ConfigError] = []
    for path in paths:
        try:
            script = load_script(path, dialplans)
        except ConfigError as exc:
            errors.append(exc)
        else:
            ok.append({"file": str(script.source), "name": script.name, "turns": len(script.turns)})
    if as_json:
        doc = {"ok": ok, "errors": [{"file": e.source, "field": e.field, "message": e.message} for e in errors]}
        print(json.dumps(doc))
    else:
        for item in ok:
            print(f"ok     {item['file']}: {item['name']} ({item['turns']} turns)")
        for error in errors:
            print(f"ERROR  {error}", file=sys.stderr)
        if not paths:
            print("no call scripts found", file=sys.stderr)
    return EXIT_USAGE if errors or not paths else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
