"""``replay --junit FILE``: the results as JUnit XML, for CI systems that show test reports.

One ``<testsuite>`` (``callbridge replay``) with a ``<testcase>`` per script and run: ``classname`` is the script,
``name`` the dialect or variant. A run's failed expectations are a ``<failure>``; the differences of a run from the
first run of its script (the reference, GA against beta or a variant against the safe one) are a ``<failure>`` where
one is unexpected, and are listed in ``<system-out>`` where all are declared (by the script or by design). A script
that could not be loaded is one ``<testcase name="load">`` with an ``<error>`` naming the file and the field. With a
baseline, a run worse than it beyond the budget is a ``<failure>`` too, and what changed since (instructions, voice,
model, tools, emulator settings) is a ``since_baseline.<script>`` property each; what is red at the gate alone (a
script the baseline had and this run has not, a prompt or voice change nobody judged: ``bridge/replay/gate.py``) is
a ``<testcase name="gate: ...">`` with its ``<failure>`` each, the reason in one line.
"""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge.replay.compare import ScriptResult, label


def _case(suite: ET.Element, classname: str, name: str, seconds: float) -> ET.Element:
    return ET.SubElement(suite, "testcase", classname=classname, name=name, time=f"{seconds:.3f}")


def _mine(reasons: Sequence[str], run_label: str) -> list[str]:
    """The comparison reasons that name this run (a difference names both runs; a failure starts with its run)."""
    return [r for r in reasons if run_label in r]


def junit_xml(
    results: Sequence[ScriptResult], meta: Mapping[str, Any], data: Mapping[str, Any] | None = None
) -> ET.Element:
    created = str(meta.get("created", "")).replace(" ", "T")  # ISO 8601, as the Ant JUnit schema has it
    suite = ET.Element("testsuite", name="callbridge replay", timestamp=created, hostname=socket.gethostname())
    properties = ET.SubElement(suite, "properties")
    for key in ("via", "target", "tolerance_ms"):
        if key in meta:
            ET.SubElement(properties, "property", name=key, value=str(meta[key]))
    scripts = {str(s.get("script")): s for s in (data or {}).get("scripts", [])}
    for name, script in scripts.items():  # what changed since the baseline, named (a prompt, a voice, a model)
        for change in script.get("since_baseline") or []:
            ET.SubElement(properties, "property", name=f"since_baseline.{name}", value=change)
    tests = failures = errors = 0
    for result in results:
        if result.errors:
            case = _case(suite, result.script, "load", 0.0)
            ET.SubElement(case, "error", message=result.errors[0], type="ConfigError").text = "\n".join(result.errors)
            tests, errors = tests + 1, errors + 1
            continue
        names = list(result.runs)
        compare_failures = [f for f in result.failures if f.startswith("compare:")]
        for i, name in enumerate(names):
            run = result.runs[name]
            case = _case(suite, result.script, label(name), run.wall_s)
            tests += 1
            bad = [f"{c.name}: {c.detail}" for c in run.checks if not c.ok]
            unexpected = _mine(result.unexpected, label(name)) if i else []
            declared = [*_mine(result.expected, label(name)), *_mine(result.by_design, label(name))] if i else []
            if i:
                bad += compare_failures
            worse = _mine((scripts.get(result.script) or {}).get("regressions") or [], label(name))
            bad += [f"worse than the baseline: {w}" for w in worse]
            problems = [*bad, *(f"unexpected: {u}" for u in unexpected)]
            if problems:
                failures += 1
                kind = "expectation" if bad else "unexpected difference"
                ET.SubElement(case, "failure", message=problems[0], type=kind).text = "\n".join(problems)
            if declared:
                ET.SubElement(case, "system-out").text = "\n".join(f"declared: {d}" for d in declared)
    for line in ((data or {}).get("meta") or {}).get("gate", {}).get("own") or []:
        # red at the gate (a removed script, an unjudged prompt change): a case each, its reason in one line
        script, _, why = line.partition(": ")
        case = _case(suite, script, f"gate: {why.split(':', 1)[0]}", 0.0)
        ET.SubElement(case, "failure", message=line, type="gate").text = line
        tests, failures = tests + 1, failures + 1
    ET.SubElement(suite, "system-out")
    ET.SubElement(suite, "system-err")
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", "0")
    suite.set("time", f"{float(meta.get('wall_s') or 0.0):.3f}")
    return suite


def write_junit(
    results: Sequence[ScriptResult], path: Path, meta: Mapping[str, Any], data: Mapping[str, Any] | None = None
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    root = ET.Element("testsuites", name="callbridge replay")
    suite = junit_xml(results, meta, data)
    root.append(suite)
    for key in ("tests", "failures", "errors", "time"):
        root.set(key, suite.get(key, "0"))
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
