"""The console's ``static/kinds.js`` is what ``python -m bridge.supervisor.kinds`` writes from ``bridge/events.py``,
and the scripts take kinds and values from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge import events as ev
from bridge.supervisor import kinds

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "bridge" / "supervisor" / "static"


def test_the_committed_module_is_the_generators_output() -> None:
    assert (ROOT / kinds.KINDS_JS).read_text(encoding="utf-8") == kinds.js_module(), (
        f"regenerate it: python -m bridge.supervisor.kinds --js {kinds.KINDS_JS}"
    )


def test_it_names_every_report_kind_once() -> None:
    block = kinds.js_module().split("export const KIND = Object.freeze({", 1)[1].split("});", 1)[0]
    pairs = re.findall(r'^  (\w+): "(\w+)",$', block, flags=re.M)
    assert sorted(kind for _, kind in pairs) == sorted(ev.REPORTS)
    assert all(name == kind.upper() for name, kind in pairs)


def test_every_constant_a_script_uses_is_in_the_module() -> None:
    module = kinds.js_module()
    used = {
        (group, name)
        for path in STATIC.glob("*.js")
        for group, name in re.findall(r"\b(KIND|PHASE|ITEM_TYPE|ROW_STATUS|EDITOR)\.(\w+)", path.read_text())
    }
    assert used, "no script uses kinds.js"
    for group, name in sorted(used):
        block = module.split(f"export const {group} = Object.freeze({{", 1)[1].split("});", 1)[0]
        assert re.search(rf"^  {name}: ", block, flags=re.M), f"{group}.{name}"


def test_it_prints_or_writes_the_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert kinds.main([]) == 0
    assert capsys.readouterr().out == kinds.js_module()
    assert kinds.main(["--js", str(tmp_path / "kinds.js")]) == 0
    assert (tmp_path / "kinds.js").read_text(encoding="utf-8") == kinds.js_module()
