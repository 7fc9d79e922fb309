"""The C parts (``bridge/native/*.c``) compiled into the wheel: each a plain shared library beside its source in the
package, named as ``bridge/native/build.py`` looks it up (``<part>-<version>.so``) and compiled by the same command as
its first-use build there. They use no Python API (ctypes loads them), so the wheel is tagged ``py3-none-<platform>``.
Without a working compiler (an sdist or editable install on such a machine) the build goes on without them and they
are compiled on first use instead."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError

ROOT = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("callbridge_native_build", ROOT / "bridge" / "native" / "build.py")
assert _spec is not None and _spec.loader is not None
native: Any = importlib.util.module_from_spec(_spec)  # the package's own module, without importing the package
_spec.loader.exec_module(native)

PARTS = {f"bridge.native.{native.library_name(s)[: -len('.so')]}": s for s in native.SOURCES}


def _remove_parts(folder: Path, keep: frozenset[str] = frozenset()) -> None:
    """The parts' libraries in ``folder`` removed, but those named in ``keep``."""
    for source in native.SOURCES:
        for found in folder.glob(f"{source.stem}-*.so"):
            if found.name not in keep:
                found.unlink()


class BuildParts(build_ext):
    """Each part compiled by ``bridge/native/build.py``'s command into ``bridge/native/<part>-<version>.so``; none
    left from an earlier build (a part that fails now is not in the wheel)."""

    def run(self) -> None:
        _remove_parts(Path(self.build_lib, "bridge", "native"))
        super().run()

    def get_ext_filename(self, fullname: str) -> str:
        return str(Path(*fullname.split("."))) + ".so"

    def build_extension(self, ext: Extension) -> None:
        output = Path(self.get_ext_fullpath(ext.name))
        output.parent.mkdir(parents=True, exist_ok=True)
        try:
            native.compile_library(PARTS[ext.name], output)
        except OSError as exc:  # optional: the build warns and goes on without it
            raise CompileError(f"{ext.name}: {exc}; it is compiled on first use instead") from exc

    def copy_extensions_to_source(self) -> None:
        """An editable install's parts, beside their sources: those of an older version of a source removed."""
        super().copy_extensions_to_source()
        _remove_parts(native.HERE, frozenset(Path(self.get_ext_filename(name)).name for name in PARTS))


class PlatformWheel(bdist_wheel):
    """Any Python 3 the package supports, this platform only: the libraries link to no libpython."""

    def get_tag(self) -> tuple[str, str, str]:
        return "py3", "none", super().get_tag()[2]


setup(
    ext_modules=[Extension(name, [str(s.relative_to(ROOT))], optional=True) for name, s in PARTS.items()],
    cmdclass={"build_ext": BuildParts, "bdist_wheel": PlatformWheel},
)
