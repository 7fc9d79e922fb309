"""The house's seams, read with :mod:`ast` and as text (nothing here is imported):

- no import circle among the modules of ``bridge/``, counting what type checkers read (``if TYPE_CHECKING:``) and
  imports inside functions: a circle hidden from the interpreter is still one for a reader;
- no import back up between packages, counting the same (the floors of ``test_house.py``);
- no function or constructor in ``bridge/`` with more than 8 parameters besides ``self``/``cls``: a longer list is a
  record waiting to be named;
- no comparison of a kind, outcome, state, phase or status with a string literal in ``bridge/`` or in the console's
  scripts: those are closed sets, and an enum (or the generated ``kinds.js``) names their values once;
- ``# fmt: skip`` does not spread.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_house import FLOORS
from test_layout import find_cycle

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = ROOT / "bridge"
MAX_PARAMETERS = 8
# Names whose values are closed sets of ours.
CLOSED = frozenset({"kind", "outcome", "state", "phase", "status"})
MAX_FMT_SKIP = 80


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _sources() -> dict[str, Path]:
    return {_module(p): p for p in sorted(BRIDGE.rglob("*.py"))}


def _ours(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def every_import_graph() -> dict[str, frozenset[str]]:
    """module -> the modules of ours it names in any import statement (type-only and in-function ones too)."""
    known = _sources()
    out: dict[str, frozenset[str]] = {}
    for module, path in known.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        names: list[str] = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                names += [f"{base}.{a.name}" for a in node.names]
        deps = {_ours(n, known) for n in names}
        # a package's own __init__ runs before its modules: not an edge (see test_layout.py)
        out[module] = frozenset(d for d in deps if d is not None and d != module and not module.startswith(d + "."))
    return out


def _floor(package: str) -> int:
    for i, floor in enumerate(FLOORS):
        if package in floor:
            return i
    raise AssertionError(f"{package} stands on no floor (tests/unit/test_house.py FLOORS)")


def test_no_import_circle_counting_type_only_and_lazy_imports() -> None:
    cycle = find_cycle(every_import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or ())


def test_no_import_back_up_between_packages_counting_type_only_imports() -> None:
    up = []
    for module, deps in every_import_graph().items():
        here = ".".join(module.split(".")[:2])
        for dep in deps:
            there = ".".join(dep.split(".")[:2])
            if there != here and _floor(there) >= _floor(here):
                up.append(f"{module} -> {dep}")
    assert not up, "imports that run back up (type-only included):\n" + "\n".join(sorted(up))


def _long_signatures(path: Path) -> Iterator[str]:
    """``line name takes N`` for each function of ``path`` with too many parameters."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
            if names and names[0] in ("self", "cls"):
                names = names[1:]
            if len(names) > MAX_PARAMETERS:
                yield f"{node.lineno} {node.name} takes {len(names)}"


def test_the_parameter_check_sees_a_long_list(tmp_path: Path) -> None:
    probe = tmp_path / "wide.py"
    probe.write_text("class A:\n    def __init__(self, a, b, c, d, e, f, g, h, *, i=0):\n        pass\n")
    assert list(_long_signatures(probe)) == ["2 __init__ takes 9"]


def test_no_function_takes_more_than_eight_parameters() -> None:
    found = [f"{_name(p)}:{line}" for p in sorted(BRIDGE.rglob("*.py")) for line in _long_signatures(p)]
    assert not found, "parameter lists waiting to be a record:\n" + "\n".join(found)


def _closed_name(node: ast.expr) -> str | None:
    """The closed-set name ``node`` reads (``x.kind``, ``kind``, ``d['state']``, ``d.get('phase')``), or None."""
    if isinstance(node, ast.Attribute):
        name = node.attr
    elif isinstance(node, ast.Name):
        name = node.id
    elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        name = str(node.slice.value)
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    ):
        name = str(node.args[0].value)
    else:
        return None
    return name if name in CLOSED else None


def _string_comparisons(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            literal = any(isinstance(s, ast.Constant) and isinstance(s.value, str) for s in sides)
            if literal and any(_closed_name(s) for s in sides):
                yield f"{node.lineno} {ast.unparse(node)}"


def test_the_string_comparison_check_sees_one(tmp_path: Path) -> None:
    probe = tmp_path / "compare.py"
    probe.write_text("def f(e, d):\n    return e.kind == 'start' or d.get('phase') != 'ENDED' or e.kind is K.A\n")
    assert list(_string_comparisons(probe)) == ["2 e.kind == 'start'", "2 d.get('phase') != 'ENDED'"]


def test_no_kind_outcome_state_phase_or_status_is_compared_with_a_string() -> None:
    found = [f"{_name(p)}:{line}" for p in sorted(BRIDGE.rglob("*.py")) for line in _string_comparisons(p)]
    assert not found, "closed sets compared as strings (use the enum):\n" + "\n".join(found)


JS_COMPARISON = re.compile(
    r"\b(kind|outcome|state|phase|status)\s*[!=]==?\s*['\"`]|['\"`]\s*[!=]==?\s*[\w.?]*\b(kind|outcome|state|phase|status)\b"
)


def test_the_console_scripts_compare_no_kind_with_a_string() -> None:
    found = []
    for path in sorted((BRIDGE / "supervisor" / "static").glob("*.js")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if JS_COMPARISON.search(line):
                found.append(f"{path.relative_to(ROOT)}:{n} {line.strip()}")
    assert not found, "the console compares kinds as strings (use kinds.js):\n" + "\n".join(found)


def test_fmt_skip_does_not_spread() -> None:
    count = sum(p.read_text().count("# fmt: skip") for root in ("bridge", "bench") for p in (ROOT / root).rglob("*.py"))
    assert count <= MAX_FMT_SKIP, f"{count} '# fmt: skip' in bridge/ and bench/ (at most {MAX_FMT_SKIP})"
