"""The layout's guard: the import graph of ``bridge/``, read with :mod:`ast` (nothing is imported): every import
statement that can run, those inside functions included; those under ``if TYPE_CHECKING:`` never run and are left
out.

- no import cycle among modules;
- at most 8 modules at the top of ``bridge/``;
- only ``bridge/sip/`` imports pjsua2;
- the pure modules reach none of asyncio, pjsua2, redis, websockets, aiohttp, not even through other modules of ours
  (the package ``__init__`` files that an import runs included);
- the product's packages never import the development harness ``bridge.devkit`` (replay may: it drives it).

A package's ``__init__`` running before its modules is not an edge of the graph (``from bridge.emulator import
voice`` depends on ``bridge.emulator.voice``), or every package that re-exports its modules would be a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = ROOT / "bridge"

# Modules with no I/O runtime: they compute on values handed to them. Patterns match module names (a package's
# own name stands for its ``__init__``).
PURE = (
    "bridge.audio",
    "bridge.audio.*",
    "bridge.events",
    "bridge.errors",
    "bridge.rollout.policy",
    "bridge.rollout.experiment",
    "bridge.realtime.protocol",
    "bridge.realtime.dialects*",
    "bridge.call.retry",
    "bridge.realtime.profile",
    "bridge.sip.sipmsg",
    "bridge.sip.access",
    "bridge.sip.identity",
    "bridge.sip.reason",
    "bridge.call.state",
    "bridge.call.builtin_tools",
    "bridge.call.postcall",
    "bridge.call.checks",
    "bridge.store.keys",
    "bridge.dialplan",
    "bridge.tools",
    "bridge.tools.spec",
    "bridge.webhooks",
    "bridge.webhooks.signing",
    "bridge.webhooks.body",
    "bridge.webhooks.schedule",
    "bridge.webhooks.endpoints",
)
IMPURE_LIBRARIES = frozenset({"asyncio", "pjsua2", "redis", "websockets", "aiohttp"})
MAX_TOP_LEVEL_MODULES = 8
DEVKIT_USERS = ("bridge.devkit", "bridge.replay")  # packages allowed to import bridge.devkit


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(BRIDGE.rglob("*.py"))}


def _imported_names(module: str, path: Path) -> Iterator[str]:
    """Every dotted name an import statement of ``module`` names, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in _runnable(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield f"{base}.{alias.name}"  # a module, or a name in ``base`` (resolved below)


def _runnable(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (their ``else`` runs)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _ours(name: str) -> str | None:
    """The module of ours that ``name`` lives in (the longest known prefix), or None."""
    sources = _sources()
    while name and name not in sources:
        name = name.rpartition(".")[0]
    return name or None


@cache
def graph() -> dict[str, frozenset[str]]:
    """module -> the modules of ours it imports."""
    out: dict[str, frozenset[str]] = {}
    for module, path in _sources().items():
        deps = {_ours(name) for name in _imported_names(module, path)}
        out[module] = frozenset(d for d in deps if d is not None and d != module)
    return out


@cache
def libraries(module: str) -> frozenset[str]:
    """The top-level names of the libraries ``module`` imports (not ours)."""
    names = (n.split(".")[0] for n in _imported_names(module, _sources()[module]))
    return frozenset(n for n in names if n and n != "bridge")


def _matches(module: str, patterns: tuple[str, ...]) -> bool:
    from fnmatch import fnmatchcase

    return any(fnmatchcase(module, p) for p in patterns)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _packages_run(module: str) -> list[str]:
    """The package ``__init__`` modules that importing ``module`` runs first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def find_cycle(edges: dict[str, frozenset[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search, iterative)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(edges):
        if start in state:
            continue
        path: list[str] = [start]
        todo: list[Iterator[str]] = [iter(sorted(edges[start]))]
        state[start] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                todo.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                todo.append(iter(sorted(edges.get(nxt, ()))))
    return None


def reach(module: str) -> dict[str, list[str]]:
    """Every module of ours that importing ``module`` runs, with the chain of imports that gets there."""
    chains = {module: [module]}
    todo = [module]
    while todo:
        current = todo.pop()
        for dep in sorted(graph()[current] | set(_packages_run(current))):
            if dep not in chains:
                chains[dep] = [*chains[current], dep]
                todo.append(dep)
    return chains


def test_the_graph_is_read() -> None:
    g = graph()
    assert "bridge.call.session" in g and "bridge.sip.gateway" in g
    assert "bridge.realtime.protocol" in g["bridge.realtime.client"]
    assert "pjsua2" in libraries("bridge.sip.endpoint")


def test_the_cycle_finder_finds_a_cycle() -> None:
    edges = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset({"a"})}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle({"a": frozenset({"b"}), "b": frozenset()}) is None


def test_no_import_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_few_modules_at_the_top_of_bridge() -> None:
    top = sorted(p.name for p in BRIDGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_only_the_sip_package_imports_pjsua2() -> None:
    importers = sorted(m for m in graph() if "pjsua2" in libraries(m))
    assert importers, "no module imports pjsua2: is the graph read?"
    outside = [m for m in importers if not m.startswith("bridge.sip.")]
    assert not outside, f"pjsua2 imported outside bridge/sip/: {outside}"


@pytest.mark.parametrize("pattern", PURE)
def test_pure_modules_import_no_io_runtime(pattern: str) -> None:
    modules = [m for m in graph() if _matches(m, (pattern,))]
    assert modules, f"{pattern} names no module: keep the list of pure modules honest"
    found = []
    for module in modules:
        for dep, chain in reach(module).items():
            if bad := libraries(dep) & IMPURE_LIBRARIES:
                found.append(f"{' -> '.join(chain)} imports {', '.join(sorted(bad))}")
    assert not found, "\n".join(found)


def test_the_product_never_imports_the_devkit() -> None:
    found = [
        f"{module} imports {dep}"
        for module, deps in graph().items()
        if not any(_within(module, user) for user in DEVKIT_USERS)
        for dep in deps
        if _within(dep, "bridge.devkit")
    ]
    assert not found, found
