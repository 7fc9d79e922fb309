"""``callbridge --help`` and ``callbridge bench --help`` name every bench of ``bench.BENCHES`` (issue 62, item 23:
the top-level list named 4 of the 9). ``bridge/cli.py`` imports nothing of ours, so its line is text: this keeps
it in step."""

from __future__ import annotations

import re

import pytest

from bench import BENCHES
from bench import main as bench_main
from bridge.cli import main as cli_main


def test_the_command_list_names_every_bench(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--help"]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("bench ")]
    named = re.findall(r"[a-z]+", line.split(":", 1)[1])
    assert named == list(BENCHES), line


def test_bench_help_names_and_describes_every_bench(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        bench_main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for name, (_module, help_) in BENCHES.items():
        assert re.search(rf"^\s+{name}\s+{re.escape(help_.split()[0])}", out, re.MULTILINE), (name, out)
