"""``python -m bridge.devkit.native_check --packaged``: what ``.ci/installed`` and the image rely on to prove the C
parts came from the installed package. Here the package's libraries are hidden (as in an sdist) and there is no
compiler: every part runs its Python version, and the check fails saying so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DRIVER = """
import sys
from bridge.native import build
build.library = build.build  # as an sdist: the package has no library of its own
from bridge.devkit import native_check
sys.exit(native_check.main(sys.argv[1:]))
"""


def _check(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CC=str(tmp_path / "no-such-cc"), CALLBRIDGE_CACHE=str(tmp_path / "cache"))
    return subprocess.run(
        [sys.executable, "-c", DRIVER, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_packaged_fails_when_a_part_did_not_come_from_the_package(tmp_path: Path) -> None:
    done = _check(tmp_path, "--packaged")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "!! 6 of 6 C parts did not come from the installed package"
    assert len(lines) == 7 and all("unavailable (" in line and "Python version is used" in line for line in lines[:6])
    assert "no-such-cc" in lines[0]  # the media port says why: the compiler named by CC is missing
    assert not list((tmp_path / "cache").glob("*.so"))  # nothing compiled


def test_without_packaged_the_python_versions_are_not_a_failure(tmp_path: Path) -> None:
    done = _check(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(done.stdout.splitlines()) == 6
