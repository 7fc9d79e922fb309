"""Dialplans are read through libyaml's safe loader where PyYAML has it: the same data as the pure Python safe
loader for every shipped plan, and for a file either refuses, the pure loader's problem and line in the error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bridge import dialplan
from bridge.dialplan import _load_yaml, check_file

SHIPPED = sorted(Path("dialplans").glob("*.yaml"))
BROKEN = (
    "name: x\nmatch: ['1'\n",
    "name: x\n  match: y\n",
    "name: x\nmatch:\n\t- '1'\n",
    "name: [x\nmatch: y: z\n",
    "name: x\n- y\n",
)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_plans_load_as_the_pure_loader_reads_them(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert _load_yaml(text) == yaml.safe_load(text)


def test_the_fast_loader_is_used_where_there_is_one() -> None:
    assert dialplan._FAST_LOADER is getattr(yaml, "CSafeLoader", None)


@pytest.mark.parametrize("text", BROKEN)
def test_errors_are_the_pure_loaders(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    fast = [str(e) for e in check_file(path)]
    monkeypatch.setattr(dialplan, "_FAST_LOADER", None)
    pure = [str(e) for e in check_file(path)]
    assert fast == pure
    assert "invalid YAML" in fast[0]
