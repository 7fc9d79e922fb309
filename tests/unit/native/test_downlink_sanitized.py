"""The C downlink under AddressSanitizer and UndefinedBehaviorSanitizer: ``downlink.c`` built with both, loaded into a
Python process started with the ASan runtime preloaded, runs its own tests, a bounded part of the differential fuzz
(``test_downlink_agrees.py``) and the sink's tests (``test_playback_decoded.py``): hostile JSON read past its end, a
misread surrogate or UTF-8 sequence, an overflow in the number or id handling fail the run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.native import build

ROOT = Path(__file__).resolve().parents[3]
DRIVER = """
import sys
from pathlib import Path
import pytest
from bridge.native import build
real = build.library
def sanitized(source):
    return Path(sys.argv[1]) if source.name == "downlink.c" else real(source)
build.library = sanitized
from bridge.realtime import downlink
lib = downlink.load()
print("loaded", lib._name if lib is not None else downlink.problem(), flush=True)
sys.exit(pytest.main([*sys.argv[2:], "-q", "-p", "no:cacheprovider", "-x"]))
"""


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _asan_runtime(cc: str) -> str | None:
    done = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True, check=False)
    path = done.stdout.strip()
    return path if done.returncode == 0 and os.path.isabs(path) and os.path.exists(path) else None


def test_the_downlink_passes_its_tests_and_the_fuzz_under_asan_and_ubsan(tmp_path: Path) -> None:
    cc = _compiler()
    if cc is None:
        pytest.skip("no C compiler (./dev setup installs build-essential)")
    runtime = _asan_runtime(cc)
    if runtime is None:
        pytest.skip(f"{cc} has no AddressSanitizer runtime (libasan: gcc's own, installed with it by ./dev setup)")
    lib = tmp_path / "downlink-sanitized.so"
    flags = ["-O1", "-g", "-std=c11", "-Wall", "-Werror", "-shared", "-fPIC", "-fno-omit-frame-pointer"]
    flags += ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", f"-I{build.HERE}"]
    done = subprocess.run(
        [cc, *flags, str(build.DOWNLINK_SOURCE), "-o", str(lib), "-lm"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    env = {
        **os.environ,
        "LD_PRELOAD": runtime,
        "ASAN_OPTIONS": "detect_leaks=0",  # CPython's own allocations are not this test's
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
        "CALLBRIDGE_FUZZ_SECONDS": "12",
        "CALLBRIDGE_FUZZ_CASES": "2000",
    }
    tests = ["tests/unit/native/test_downlink.py", "tests/unit/native/test_downlink_agrees.py"]
    tests.append("tests/unit/call/test_playback_decoded.py")  # the sink: runs pushed into a playout ring from C
    run = subprocess.run(
        [sys.executable, "-c", DRIVER, str(lib), *tests],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = run.stdout + run.stderr
    assert f"loaded {lib}" in run.stdout, output[-4000:]
    assert run.returncode == 0, output[-4000:]
    assert "passed" in run.stdout and "ERROR: AddressSanitizer" not in output and "runtime error" not in output
