"""docs/configuration.md names every environment variable the code reads and every settings and dialplan field.

The names come from the code itself, not from a list kept here:

* environment variables: an AST pass over ``bridge/`` and ``bench/`` finds every access to the environment
  (``os.environ.get(X)``, ``os.getenv(X)``, ``environ[X]``, ``X in env``, ``env.setdefault(X, ...)``,
  ``env.pop(X)``, the keys of ``{**os.environ, X: ...}``, the values of a module-level ``ENV``/``*_ENV`` table),
  where ``X`` is a string literal or a module-level string constant such as ``BROKER_URL_ENV``; every string literal
  that is a whole ``CALLBRIDGE_*`` name; ``getenv("X")`` in the C sources; ``${X:-...}`` in ``dev``;
* fields: ``Settings.model_fields`` and ``Dialplan.model_fields``, descending into nested models with dotted
  paths (``profile.turn_detection.threshold``).

A name counts as documented when it appears in backticks in the page, alone or followed by ``=``, ``:`` or a space
(```CALLBRIDGE_CLOCK_RT=0```).
"""

from __future__ import annotations

import ast
import re
import types
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel

from bridge.config import Settings
from bridge.dialplan import Dialplan

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
SCANNED = (ROOT / "bridge", ROOT / "bench")

_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_CALLBRIDGE_NAME = re.compile(r"^CALLBRIDGE_[A-Z0-9_]+$")
_C_GETENV = re.compile(r"\bgetenv\(\s*\"([A-Za-z_][A-Za-z0-9_]*)\"\s*\)")
_SHELL_DEFAULT = re.compile(r"\$\{([A-Z][A-Z0-9_]*):-")
_BACKTICKED = re.compile(r"`([^`\n]+)`")


# -- environment variables ------------------------------------------------------------------------------------


def _python_files() -> list[Path]:
    return sorted(p for root in SCANNED for p in root.rglob("*.py"))


def _string_constants(trees: Iterable[ast.Module]) -> dict[str, set[str]]:
    """Module-level ``NAME = "TEXT"`` (annotated or not) of every module: NAME -> its values."""
    out: dict[str, set[str]] = {}
    for tree in trees:
        for node in tree.body:
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            else:
                continue
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                for target in targets:
                    if isinstance(target, ast.Name):
                        out.setdefault(target.id, set()).add(value.value)
    return out


def _is_environment(node: ast.expr) -> bool:
    """``os.environ``, ``environ``, ``env``, ``self.env``, ``child_env``: a mapping of environment variables."""
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
    return name in {"environ", "env"} or name.endswith("_env")


def _names_of(node: ast.expr, constants: dict[str, set[str]]) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Name):
        return constants.get(node.id, set())
    return set()


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring nodes of a module (their prose may quote names the code does not read)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _read_by(node: ast.AST, constants: dict[str, set[str]], docstrings: set[int]) -> set[str]:
    """The environment variables one AST node reads, if it is an access to the environment."""
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        getenv = (isinstance(func, ast.Attribute) and func.attr == "getenv") or (
            isinstance(func, ast.Name) and func.id == "getenv"
        )
        accessor = (
            isinstance(func, ast.Attribute)
            and func.attr in {"get", "setdefault", "pop", "__getitem__"}
            and _is_environment(func.value)
        )
        return _names_of(node.args[0], constants) if getenv or accessor else set()
    if isinstance(node, ast.Subscript) and _is_environment(node.value):
        return _names_of(node.slice, constants)
    if isinstance(node, ast.Compare) and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops):
        return _names_of(node.left, constants) if any(_is_environment(c) for c in node.comparators) else set()
    if isinstance(node, ast.Dict):  # {**os.environ, "NAME": value}: the environment of a child process
        pairs = zip(node.keys, node.values, strict=True)
        if any(key is None and _is_environment(value) for key, value in pairs):
            return {name for key in node.keys if key is not None for name in _names_of(key, constants)}
        return set()
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
        return {node.value} if _CALLBRIDGE_NAME.match(node.value) else set()
    return set()


def _environment_reads(tree: ast.Module, constants: dict[str, set[str]]) -> Iterator[str]:
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        yield from _read_by(node, constants, docstrings)
    for stmt in tree.body:  # ENV = {"setting": "VARIABLE", ...} tables (bridge/config.py)
        if not (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Dict)):
            continue
        if any(isinstance(t, ast.Name) and (t.id == "ENV" or t.id.endswith("_ENV")) for t in stmt.targets):
            for value in stmt.value.values:
                yield from _names_of(value, constants)


def environment_variables() -> set[str]:
    """Every environment variable name the code reads (or hands to a child process)."""
    trees = [ast.parse(p.read_text(encoding="utf-8"), str(p)) for p in _python_files()]
    constants = _string_constants(trees)
    found: set[str] = set()
    for tree in trees:
        found.update(_environment_reads(tree, constants))
    for root in SCANNED:
        for source in sorted(root.rglob("*.[ch]")):
            found.update(_C_GETENV.findall(source.read_text(encoding="utf-8")))
    found.update(_SHELL_DEFAULT.findall((ROOT / "dev").read_text(encoding="utf-8")))
    return {name for name in found if _ENV_NAME.match(name)}


# -- settings and dialplan fields -----------------------------------------------------------------------------


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """The pydantic models an annotation stands for directly (``M``, ``M | None``, ``Annotated[A | B, ...]``);
    containers (``tuple[M, ...]``, ``dict``) are not descended into."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def field_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Dotted paths of a model's fields and of its nested models' fields; excluded (internal) fields left out."""
    out: set[str] = set()
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        path = f"{prefix}{name}"
        out.add(path)
        for nested in _models_in(info.annotation):
            out |= field_paths(nested, f"{path}.")
    return out


# -- the page -------------------------------------------------------------------------------------------------


def documented_names(text: str) -> set[str]:
    """What the page names in backticks: the whole span, and its head before ``=``, ``:`` or a space."""
    out: set[str] = set()
    for span in _BACKTICKED.findall(text):
        out.add(span)
        out.add(re.split(r"[=:\s]", span, maxsplit=1)[0])
    return out


def missing(names: Iterable[str], text: str) -> list[str]:
    documented = documented_names(text)
    return sorted(set(names) - documented)


# -- tests ----------------------------------------------------------------------------------------------------


def test_the_scanner_finds_the_ways_the_code_reads_the_environment() -> None:
    """Each form of access is found: a literal, a constant from another module, the ENV table, a child's env."""
    found = environment_variables()
    assert "CALLBRIDGE_SUPERVISOR_TOKEN" in found  # os.environ.get("...")
    assert "CALLBRIDGE_BROKER_URL" in found  # env.get(BROKER_URL_ENV), the constant imported from credentials.py
    assert "CALLBRIDGE_MEDIA_BEAT" in found  # only in bridge/config.py's ENV table
    assert "OMP_NUM_THREADS" in found  # {**os.environ, "OMP_NUM_THREADS": "1"} for the workers
    assert "CALLBRIDGE_VENV" in found  # ${CALLBRIDGE_VENV:-...} in dev
    assert "CC" in found and "PYTHONPATH" in found  # os.environ.get("CC"); env["PYTHONPATH"] = ...
    assert "PATH" not in found and "CALLBRIDGE" not in found


def test_dialplan_fields_include_nested_models() -> None:
    paths = field_paths(Dialplan)
    assert {"match", "recording.consent_prompt", "profile.voice", "profile.turn_detection.eagerness"} <= paths
    assert "source_file" not in paths  # internal: excluded from the model's dump


def test_a_missing_name_is_reported() -> None:
    """The check can fail: the page without the lines that name a variable and a field reports both."""
    text = DOC.read_text(encoding="utf-8")
    cut = "\n".join(
        line for line in text.splitlines() if "`CALLBRIDGE_CLOCK_RT" not in line and "`profile.speed`" not in line
    )
    reported = missing(["CALLBRIDGE_CLOCK_RT", "profile.speed", "sip_port"], cut)
    assert reported == ["CALLBRIDGE_CLOCK_RT", "profile.speed"]


def test_every_environment_variable_is_documented() -> None:
    absent = missing(environment_variables(), DOC.read_text(encoding="utf-8"))
    assert not absent, f"docs/configuration.md does not name these environment variables: {', '.join(absent)}"


def test_every_settings_field_is_documented() -> None:
    absent = missing(field_paths(Settings), DOC.read_text(encoding="utf-8"))
    assert not absent, f"docs/configuration.md does not name these Settings fields: {', '.join(absent)}"


def test_every_dialplan_field_is_documented() -> None:
    absent = missing(field_paths(Dialplan), DOC.read_text(encoding="utf-8"))
    assert not absent, f"docs/configuration.md does not name these dialplan fields: {', '.join(absent)}"
