"""``deploy/constraints.txt``, the versions operators install with (``pip install callbridge-*.whl -c
deploy/constraints.txt``): it pins every runtime dependency of pyproject.toml and all of theirs, and the environment
the suite runs in holds exactly those versions (so the file says what was tested)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from bridge.devkit.constraints import canonical, parse, render, runtime_closure

ROOT = Path(__file__).resolve().parents[3]
CONSTRAINTS = ROOT / "deploy" / "constraints.txt"


def test_every_runtime_dependency_is_pinned() -> None:
    pins = parse(CONSTRAINTS.read_text())
    direct = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    missing = [text for text in direct if canonical(Requirement(text).name) not in pins]
    assert not missing, f"deploy/constraints.txt lacks {missing}"
    for text in direct:  # each pin satisfies pyproject's own range
        req = Requirement(text)
        assert req.specifier.contains(pins[canonical(req.name)], prereleases=True), (text, pins[canonical(req.name)])
    assert "callbridge" not in pins


def test_the_environment_holds_the_pinned_versions() -> None:
    pins, installed = parse(CONSTRAINTS.read_text()), runtime_closure()
    differ = {n: (pins.get(n), installed.get(n)) for n in set(pins) | set(installed) if pins.get(n) != installed.get(n)}
    assert not differ, (
        f"deploy/constraints.txt (pinned, installed) differ: {differ}; "
        "`python -m bridge.devkit.constraints > deploy/constraints.txt` after a dependency change"
    )
    assert CONSTRAINTS.read_text() == render(installed)
