"""``bench/``'s layout: it drives the telephone side through ``bridge.sip`` and never touches pjsua2 itself, and
its functions and classes stay small enough to read (read with :mod:`ast`; nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"
MAX_FUNCTION_LINES = 80
MAX_CLASS_LINES = 400
SOURCES = sorted(BENCH.rglob("*.py"))


def _imported(tree: ast.AST) -> set[str]:
    """The top-level names of every import statement, those inside functions included."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(BENCH.parent)))
def test_bench_imports_no_pjsua2(path: Path) -> None:
    assert "pjsua2" not in _imported(ast.parse(path.read_text(), str(path))), "only bridge/sip/ may import pjsua2"


def _limit(node: ast.AST) -> int | None:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return MAX_FUNCTION_LINES
    return MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else None


def test_bench_functions_and_classes_stay_small() -> None:
    too_long = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            limit = _limit(node)
            if limit is None:
                continue
            lines = (getattr(node, "end_lineno", None) or 0) - getattr(node, "lineno", 0) + 1
            if lines > limit:
                too_long.append(f"{path.relative_to(BENCH.parent)}:{getattr(node, 'name', '?')}: {lines} lines")
    assert not too_long, too_long
