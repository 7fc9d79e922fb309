"""The wheel as ``pip install`` gets it: a platform wheel that carries every C part compiled, which a fresh virtual
environment with no C compiler on ``PATH`` loads from the installed package, compiling nothing. It is built from a copy
of the files the image's build stage copies (so it shares no build folder with another test's build of the checkout).

The fresh environment gets the wheel only; its dependencies come from this checkout's environment through a ``.pth``
line after the wheel's own (``.ci/installed`` installs them too, and runs the same check).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from bridge.native import build

ROOT = Path(__file__).resolve().parents[3]


def _run(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=240, check=False, env=env, cwd=cwd
    )
    assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.timeout(400)
def test_the_wheel_carries_every_c_part_and_a_venv_without_a_compiler_loads_them(tmp_path: Path) -> None:
    if build.compiler() is None:
        pytest.skip("no C compiler to build the wheel with (./dev setup installs gcc)")
    source = tmp_path / "src"  # what the image's build stage copies (deploy/docker/Dockerfile), nothing built before
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("bridge", "bench"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", source)
    (wheel,) = (tmp_path / "dist").glob("callbridge-*.whl")
    python, abi, platform = wheel.stem.split("-")[-3:]
    assert (python, abi) == ("py3", "none")  # ctypes loads the parts: no Python API, any CPython 3
    assert platform == sysconfig.get_platform().replace("-", "_").replace(".", "_")  # not "any": compiled code
    parts = {f"bridge/native/{build.library_name(source)}" for source in build.SOURCES}
    with zipfile.ZipFile(wheel) as archive:
        assert {n for n in archive.namelist() if n.endswith(".so")} == parts
        assert all(archive.read(name)[:4] == b"\x7fELF" for name in parts)

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # after the wheel's own
    _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-deps", wheel)

    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_") and k not in ("CC", "PYTHONPATH")}
    env |= {"PATH": str(venv / "bin"), "CALLBRIDGE_CACHE": str(tmp_path / "cache"), "PYTHONSAFEPATH": "1"}
    assert not [cc for cc in ("cc", "gcc", "clang") if shutil.which(cc, path=env["PATH"])]
    out = _run(venv / "bin" / "python", "-m", "bridge.devkit.native_check", "--packaged", env=env, cwd=tmp_path)
    lines = out.splitlines()
    assert len(lines) == len(build.SOURCES), out
    for line, source in zip(lines, build.SOURCES, strict=True):  # native_check's order: the media port first
        assert f"loaded from the package ({site}/bridge/native/{build.library_name(source)}) and checked" in line, out
    assert not (tmp_path / "cache").exists()  # nothing compiled
