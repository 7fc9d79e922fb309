"""The house's guard: rooms small enough to hold in one's head, packages on floors, seams that stay seams, and a
map that matches the tree. Everything is read with :mod:`ast` or as text; nothing here is imported.

- no class in ``bridge/`` or ``bench/`` over 400 lines, no function over 80;
- the packages of ``bridge/`` sit on floors (:data:`FLOORS`): a package imports only packages on lower floors, so
  no arrow runs back up and the package graph has no circle;
- ``bench/`` reaches pjsua2 only through ``bridge/sip/``;
- the call session's fields are assigned in ``bridge/call/session.py`` only; its collaborators own their state
  behind methods (the call's report is a record its parts fill in);
- every path the README's map and ``docs/media.md`` name exists.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_layout import find_cycle, graph

ROOT = Path(__file__).resolve().parents[2]
MAX_CLASS_LINES = 400
MAX_FUNCTION_LINES = 80

# Lowest floor first. A package (or top-level module) of bridge/ may import only what stands on a lower floor.
# ``bridge.cli`` loads its subcommands by name (importlib), so it imports nothing of ours: the subcommands may use
# its parser builder.
FLOORS: tuple[frozenset[str], ...] = (
    frozenset({"bridge", "bridge.cli", "bridge.events", "bridge.native", "bridge.privacy", "bridge.meaning"}),
    frozenset({"bridge.errors", "bridge.metrics", "bridge.audio"}),
    frozenset({"bridge.realtime", "bridge.runtime", "bridge.config", "bridge.store", "bridge.orchestrator"}),
    frozenset({"bridge.sip", "bridge.emulator", "bridge.rollout", "bridge.tools"}),
    frozenset({"bridge.webhooks"}),
    frozenset({"bridge.dialplan"}),
    frozenset({"bridge.call"}),
    frozenset({"bridge.supervisor"}),
    frozenset({"bridge.serve"}),
    frozenset({"bridge.devkit"}),
    frozenset({"bridge.replay"}),
    frozenset({"bridge.__main__"}),
)

# Names under which the call session's collaborators hold the call: what they must not assign to.
SESSION_NAMES = frozenset({"call", "session", "_call", "_session"})
# The call's record, which its parts fill in (``call.report.reconnects += 1``): a record, not the session's state.
RECORDS = frozenset({"report"})
# Where the call session is handed around (the SIP package's and the store's own "call" objects are other things).
SESSION_USERS = ("bridge/call", "bridge/serve", "bridge/replay", "bridge/supervisor")


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def _sources(*roots: str) -> Iterator[Path]:
    for root in roots:
        yield from sorted((ROOT / root).rglob("*.py"))


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _floor(package: str) -> int:
    for i, floor in enumerate(FLOORS):
        if package in floor:
            return i
    raise AssertionError(f"{package} stands on no floor: add it to FLOORS in {Path(__file__).name}")


def _oversized(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
            if lines > limit:
                yield f"{_name(path)}:{node.lineno} {node.name} is {lines} lines (at most {limit})"


def test_the_size_check_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    probe = tmp_path / "long.py"
    probe.write_text(f"def f() -> None:\n{body}\n")
    assert [line.split(" ", 1)[1] for line in _oversized(probe)] == [
        f"f is {MAX_FUNCTION_LINES + 1} lines (at most 80)"
    ]


def test_no_class_over_400_lines_and_no_function_over_80() -> None:
    found = [line for path in _sources("bridge", "bench") for line in _oversized(path)]
    assert not found, "rooms too big to hold in one's head:\n" + "\n".join(found)


def test_every_package_stands_on_a_floor_and_imports_only_below_it() -> None:
    up = []
    for module, deps in graph().items():
        here = _package(module)
        for dep in deps:
            there = _package(dep)
            if there != here and _floor(there) >= _floor(here):
                up.append(f"{module} -> {dep} ({here} on floor {_floor(here)}, {there} on {_floor(there)})")
    assert not up, "imports that run back up:\n" + "\n".join(sorted(up))


def test_the_package_graph_has_no_circle() -> None:
    packages: dict[str, set[str]] = {}
    for module, deps in graph().items():
        packages.setdefault(_package(module), set()).update(
            _package(d) for d in deps if _package(d) != _package(module)
        )
    cycle = find_cycle({k: frozenset(v) for k, v in packages.items()})
    assert cycle is None, "package circle: " + " -> ".join(cycle or ())


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_bench_reaches_pjsua2_only_through_the_sip_package() -> None:
    direct = sorted(
        str(p.relative_to(ROOT)) for p in _sources("bench") if any(m.split(".")[0] == "pjsua2" for m in _imports(p))
    )
    assert not direct, f"bench imports pjsua2 itself: {direct}"


def _session_writes(path: Path) -> Iterator[str]:
    """Assignments to an attribute of the call session (``call.x = ...``, ``self._call.x.y = ...``)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            for t in target.elts if isinstance(target, ast.Tuple) else [target]:
                if isinstance(t, ast.Attribute) and _rooted_at_session(t.value):
                    yield f"{_name(path)}:{t.lineno} {ast.unparse(t)}"


def _rooted_at_session(node: ast.expr) -> bool:
    while isinstance(node, ast.Attribute):
        if node.attr in RECORDS:
            return False
        if node.attr in SESSION_NAMES and isinstance(node.value, ast.Name) and node.value.id == "self":
            return True
        node = node.value
    return isinstance(node, ast.Name) and node.id in SESSION_NAMES


def test_only_the_session_assigns_to_its_fields() -> None:
    session = ROOT / "bridge" / "call" / "session.py"
    writers = [w for p in _sources(*SESSION_USERS) if p != session for w in _session_writes(p)]
    assert not writers, "the call session's state written from outside it:\n" + "\n".join(writers)


def test_the_session_write_check_sees_a_write(tmp_path: Path) -> None:
    probe = tmp_path / "writes.py"
    probe.write_text("def f(call, self):\n    call.client = None\n    self._call.recovery.answer_owed = True\n")
    assert len(list(_session_writes(probe))) == 2


def test_call_parts_is_gone_or_narrow() -> None:
    parts = ROOT / "bridge" / "call" / "parts.py"
    if not parts.exists():
        return
    for node in ast.walk(ast.parse(parts.read_text())):
        if isinstance(node, ast.ClassDef) and node.name == "CallParts":
            members = [n for n in node.body if isinstance(n, ast.AnnAssign | ast.FunctionDef | ast.AsyncFunctionDef)]
            assert len(members) <= 8, f"CallParts has {len(members)} members (at most 8)"


def _map_paths(readme: str) -> Iterator[str]:
    """The paths of the README's map: an entry's first word at an indentation of 0, 2 or 4; nesting by indent."""
    block = readme.split("## Map of the tree", 1)[1].split("```", 2)[1]
    parents: dict[int, str] = {}
    for line in block.splitlines()[1:]:
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if not stripped or indent > 4 or indent % 2:
            continue
        word = stripped.split()[0]
        if not re.fullmatch(r"[\w.\-]+/?", word) or not ("/" in word or "." in word or word == "dev"):
            continue
        parent = parents.get(indent - 2, "") if indent else ""
        path = parent + word
        parents[indent] = path if path.endswith("/") else parents.get(indent, "")
        yield path


def test_the_readme_map_names_only_what_exists() -> None:
    paths = list(_map_paths((ROOT / "README.md").read_text()))
    assert len(paths) > 20, paths  # the map was read
    assert "bridge/call/" in paths and "bridge/cli.py" in paths
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"the README's map names what is not in the tree: {missing}"


@pytest.mark.parametrize("doc", ["docs/media.md", "docs/call.md"])
def test_the_docs_name_only_files_that_exist(doc: str) -> None:
    text = (ROOT / doc).read_text()
    named = set(re.findall(r"`((?:bridge|bench|tests|deploy|docs)/[\w/.\-]*)`", text))
    assert named, f"{doc} names no file"
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"{doc} names what is not in the tree: {missing}"


def _names(doc: str, package: str, stem: str) -> bool:
    """The docstring names the module: ``stem.py``, ``:mod:`.stem```, ``bridge.package.stem`` or a map's row."""
    forms = (rf"(?<![\w/.]){stem}\.py\b", rf"`\.{stem}`", rf"``{stem}``", rf"bridge\.{package}\.{stem}\b")
    forms += (rf"^\s+{stem}\s",)
    return any(re.search(form, doc, flags=re.MULTILINE) for form in forms)


def _package_modules(package: Path) -> list[str]:
    return sorted(p.name for p in package.glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize(
    "package", sorted(p.parent.name for p in (ROOT / "bridge").glob("*/__init__.py")), ids=lambda name: name
)
def test_each_package_docstring_maps_every_module(package: str) -> None:
    """A newcomer reads a package's docstring first: it names every module of the package, none that is gone."""
    path = ROOT / "bridge" / package
    doc = ast.get_docstring(ast.parse((path / "__init__.py").read_text())) or ""
    modules = _package_modules(path)
    missing = [name for name in modules if not _names(doc, package, name.removesuffix(".py"))]
    assert not missing, f"bridge/{package}/__init__.py does not name {missing}"
    named = set(re.findall(r"^\s{4}(\w+\.py)\b", doc, flags=re.MULTILINE))
    gone = sorted(named - set(modules))
    assert not gone, f"bridge/{package}/__init__.py names modules that are not there: {gone}"
