"""``deploy/constraints.txt``: the versions of every runtime dependency the test suite ran with, for operators
(``pip install callbridge-*.whl -c deploy/constraints.txt``).

The runtime dependencies are callbridge's own (``[project] dependencies``, no extras) and theirs, to the bottom,
with their environment markers evaluated here; the versions are those installed in this environment (the
project's venv). ``python -m bridge.devkit.constraints > deploy/constraints.txt`` writes the file again;
tests/unit/deploy/test_constraints.py checks that it is current.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys

from packaging.requirements import Requirement

HEADER = """\
# The versions of callbridge's runtime dependencies (and theirs) the test suite ran with.
#   pip install callbridge-*.whl -c deploy/constraints.txt
# Written by `python -m bridge.devkit.constraints > deploy/constraints.txt` (docs/operating.md, Installing).
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure(root: str = "callbridge") -> dict[str, str]:
    """Every distribution ``root`` needs at run time (not ``root`` itself) -> its installed version."""
    found: dict[str, str] = {}
    todo = [(root, frozenset[str]())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (canonical(name), extras) in seen:
            continue
        seen.add((canonical(name), extras))
        dist = md.distribution(name)
        if canonical(name) != canonical(root):
            found[canonical(dist.metadata["Name"])] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            wanted = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in wanted):
                continue
            todo.append((req.name, frozenset(req.extras)))
    return found


def render(pins: dict[str, str]) -> str:
    return HEADER + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def parse(text: str) -> dict[str, str]:
    """``name==version`` lines -> {canonical name: version}."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep:
                raise ValueError(f"not name==version: {line!r}")
            pins[canonical(name)] = version.strip()
    return pins


if __name__ == "__main__":
    sys.stdout.write(render(runtime_closure()))
