"""``callbridge replay`` and ``callbridge scripts``.

::

    callbridge replay PATHS... [--dialects beta,ga | --variants DIALPLAN[,DIALPLAN]] [--via direct|sip]
                               [--target emulator|openai] [--report DIR] [--json] [--fail-on-differs]
    callbridge scripts check PATHS...
    callbridge scripts from-recording REC --out call_scripts/NAME

``--variants support`` runs every script through each variant of the rollout dialplan ``support`` (from
``--dialplans``) and compares each with the safe one (``bridge/replay/variants.py``; direct runs only); the report
has a column per variant.

Exit status of ``replay``: 0 when every expectation holds (verdicts ``same`` or ``differs``), 1 when one fails
(``failed``; with ``--fail-on-differs`` also on ``differs``), 2 for a bad command line or a malformed script (the
message names the file and the field).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from bridge.errors import BridgeError, ConfigError, redact
from bridge.replay.compare import DialectRun, ScriptResult, label, summarize
from bridge.replay.script import DEFAULT_DIALECTS, DIALECT_NAMES, CallScript, find_scripts, load_script

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
BAR_WIDTH = 30


class Progress:
    """A progress bar on stderr when it is a terminal; otherwise one line per finished script."""

    def __init__(self, total_calls: int, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total = max(1, total_calls)
        self.done = 0
        self._runs: dict[str, list[DialectRun]] = {}

    def __call__(self, script: str, dialect: str, run: DialectRun | None) -> None:
        if run is None:
            if self.tty:
                self._bar(f"{script} {label(dialect)}")
            return
        self.done += 1
        self._runs.setdefault(script, []).append(run)
        if self.tty:
            self._bar(f"{script} {label(dialect)}")

    def script_done(self, result: ScriptResult) -> None:
        if self.tty:
            return
        parts = [f"{label(d)} {'ok' if r.ok else 'FAILED'} {r.wall_s:.2f} s" for d, r in result.runs.items()]
        print(f"replay: {result.script}: {result.verdict} ({', '.join(parts)})", file=self.stream, flush=True)

    def _bar(self, what: str) -> None:
        filled = BAR_WIDTH * self.done // self.total
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} {what[:40]:<40}")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
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
    p.add_argument("--via", choices=("direct", "sip"), default="direct", help="direct: virtual time, no SIP")
    p.add_argument("--target", choices=("emulator", "openai"), default="emulator", help="the model service")
    p.add_argument("--report", type=Path, metavar="DIR", help="write report.json and report.html here")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--fail-on-differs", action="store_true", help="exit 1 on 'differs' too")
    p.add_argument("--dialplans", type=Path, help="where named dialplans live (default: ./dialplans)")
    sip = p.add_argument_group("--via sip")
    sip.add_argument("--bridge", metavar="sip:HOST:PORT", help="use this running `callbridge serve`")
    sip.add_argument("--bridge-reports", type=Path, metavar="FILE", help="its --report-file (with --bridge)")
    sip.add_argument("--emulator-url", metavar="URL", help="its emulator's http://HOST:PORT (with --bridge)")
    sip.add_argument("--workers", type=int, default=1, help="workers of the bridge started here")
    return p


def _load(paths: Sequence[Path], dialplans: Path | None) -> list[CallScript]:
    return [load_script(p, dialplans) for p in find_scripts(paths)]


def _openai_key() -> str:
    key = os.environ.get("OPENAI_API_KEY", "").strip()
    if not key:
        raise ConfigError("environment", "OPENAI_API_KEY", "--target openai needs the key in the environment")
    return key


def run(args: argparse.Namespace) -> tuple[list[ScriptResult], dict[str, Any]]:
    scripts = _load(args.paths, args.dialplans)
    if not scripts:
        raise ConfigError(", ".join(map(str, args.paths)), "(path)", "no call scripts found")
    if args.variants is not None:
        return _run_variants(args, scripts)
    dialects: list[str] = args.dialects or list(DEFAULT_DIALECTS)
    progress = Progress(len(scripts) * len(dialects))
    t0 = time.perf_counter()
    try:
        if args.via == "direct":
            from bridge.replay.direct import DirectOptions, openai_connector, replay_direct

            options = DirectOptions()
            if args.target == "openai":
                from bridge.config import OPENAI_URL

                options = DirectOptions(connector=openai_connector(OPENAI_URL, _openai_key()), target="openai")
            results = []
            for script in scripts:
                [result] = replay_direct(
                    [script], dialects, options=options, progress=progress, virtual=args.target == "emulator"
                )
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
            )
            results = replay_sip(scripts, dialects, opts, progress=progress, on_result=progress.script_done)
    finally:
        progress.close()
    return results, _meta(args, results, time.perf_counter() - t0, dialects=dialects)


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
    from bridge.replay.direct import DirectOptions, openai_connector
    from bridge.replay.script import default_dialplans_dir
    from bridge.replay.variants import load_rollouts, replay_variants

    if args.dialects is not None:
        raise ConfigError("replay", "--variants", "give either --dialects or --variants")
    if args.via != "direct":
        raise ConfigError("replay", "--variants", "variants replay direct only (--via direct)")
    rollouts = load_rollouts(args.variants, args.dialplans or default_dialplans_dir())
    options = DirectOptions()
    if args.target == "openai":
        from bridge.config import OPENAI_URL

        options = DirectOptions(connector=openai_connector(OPENAI_URL, _openai_key()), target="openai")
    # the report's columns: the safe variant of each rollout first, as the runs are
    variants = list(dict.fromkeys(v.name for _, spec in rollouts for v in (spec.variant(spec.safe), *spec.variants)))
    progress = Progress(len(scripts) * sum(len(spec.variants) for _, spec in rollouts))
    t0 = time.perf_counter()
    try:
        results = []
        for script in scripts:
            found = replay_variants([script], rollouts, options=options, progress=progress,
                                    virtual=args.target == "emulator")  # fmt: skip
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
    try:
        results, meta = run(args)
    except (ConfigError, BridgeError, ValueError) as exc:
        print(f"callbridge replay: {redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    if args.report is not None:
        from bridge.replay.report import write_report

        page = write_report(results, args.report, meta)
        print(f"report: {page}", file=sys.stderr)
    counts = summarize(results)
    if args.json:
        from bridge.replay.report import report_json

        print(json.dumps(report_json(results, meta), default=str))
    else:
        for r in results:
            print(f"{r.verdict:<8} {r.script}")
            if r.verdict == "differs" and r.expected_comparison == "differs":
                print(f"         = as the script expects: {r.because or 'a known difference'}")
            for reason in r.failures:
                print(f"         ✗ {reason}")
            for reason in r.differences:
                print(f"         ≠ {reason}")
            for reason in r.by_design:
                print(f"         ~ by design: {reason}")
        columns = f"{len(meta['variants'])} variant(s)" if "variants" in meta else f"{len(meta['dialects'])} dialect(s)"
        expected = sum(r.verdict == "differs" and r.expected_comparison == "differs" for r in results)
        print(
            f"{len(results)} script(s) x {columns}: {counts['same']} same, "
            f"{counts['differs']} differ ({expected} as their scripts expect, {counts['differs'] - expected} not), "
            f"{counts['failed']} failed; {meta['call_s']:.1f} s of calls in "
            f"{meta['wall_s']:.2f} s ({meta['speed_x']}x real time)"
        )
    if counts["failed"] or (args.fail_on_differs and counts["differs"]):
        return EXIT_FAILED
    return EXIT_OK


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
    rec.add_argument("--json", action="store_true", help="{wrote: DIR} as JSON")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.action == "check":
        return _check_scripts(args.paths, args.dialplans, args.json)
    from bridge.replay.from_recording import script_from_recording

    try:
        out = script_from_recording(
            args.recording, args.out, name=args.name, dialplan=args.dialplan, overwrite=args.force
        )
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
