"""The C build: every source includes the shared header, and a library's name covers the header as well as the
source, so an edited header rebuilds each. The package's own library is loaded when it has one for this version of the
source; else the part is built once into the cache, which must be this user's only."""

from __future__ import annotations

import ctypes
import logging
import os
import stat
from pathlib import Path

import pytest

from bridge.native import build


def test_both_sources_include_the_shared_header() -> None:
    (header,) = build.HEADERS
    for source in build.SOURCES:
        assert f'#include "{header.name}"' in source.read_text(), source.name


def test_a_changed_header_changes_every_librarys_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    header = tmp_path / "callbridge.h"
    header.write_text(build.HEADERS[0].read_text())
    monkeypatch.setattr(build, "HEADERS", (header,))
    before = {source: build.version(source) for source in build.SOURCES}
    header.write_text(header.read_text() + "\n#define CB_SOMETHING_NEW 1\n")
    after = {source: build.version(source) for source in build.SOURCES}
    assert all(before[s] != after[s] for s in build.SOURCES)
    assert len(set(after.values())) == len(build.SOURCES)  # and each source still has its own


@pytest.fixture
def part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the resampler's source and the header in a folder of their own (a package of its own), and an
    empty cache of this user's."""
    folder = tmp_path / "package"
    folder.mkdir()
    for original in (build.RESAMPLE_SOURCE, *build.HEADERS):
        (folder / original.name).write_bytes(original.read_bytes())
    monkeypatch.setattr(build, "HEADERS", (folder / build.HEADERS[0].name,))
    monkeypatch.setenv("CALLBRIDGE_CACHE", str(tmp_path / "cache"))
    if build.compiler() is None:
        pytest.skip("no C compiler (./dev setup installs gcc)")
    return folder / build.RESAMPLE_SOURCE.name


def test_the_packages_library_is_loaded_and_nothing_is_compiled(part: Path, tmp_path: Path) -> None:
    packaged = part.parent / build.library_name(part)
    build.compile_library(part, packaged)
    assert build.library(part) == packaged and build.origin(part) == (build.PACKAGE, packaged)
    assert build.load(part, [("cbr_up_state_size", ctypes.c_int, [])]).cbr_up_state_size() > 0  # a real library
    assert not (tmp_path / "cache").exists()


def test_without_the_packages_library_it_is_built_once_into_the_cache(part: Path, tmp_path: Path) -> None:
    stale = part.parent / "resample-0000000000000000.so"  # another version of the source's: never loaded
    stale.write_bytes(b"")
    built = build.library(part)
    assert built == tmp_path / "cache" / build.library_name(part) and build.origin(part) == (build.BUILT, built)
    assert built.stat().st_mode & 0o777 == 0o755 and (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    assert build.library(part) == built and build.origin(part) == (build.CACHE, built)


@pytest.mark.parametrize("mode", [0o770, 0o707])
def test_a_cache_other_users_can_write_is_refused_with_a_log_line(
    part: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(mode)
    with caplog.at_level(logging.WARNING, "bridge.native"), pytest.raises(OSError, match="writable by other users"):
        build.library(part)
    assert list(cache.iterdir()) == []  # nothing compiled into it
    assert f"refusing to load a C part from {cache}: {cache} is writable by other users" in caplog.text
    cache.chmod(0o700)
    planted = build.library(part)  # built by this user; then made writable by others: refused from then on
    planted.chmod(0o757)
    with pytest.raises(OSError, match=f"{planted} is writable by other users"):
        build.library(part)


def test_a_cache_below_a_folder_others_can_write_is_refused_unless_sticky(
    part: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("CALLBRIDGE_CACHE", str(shared / "mine" / "cache"))
    with pytest.raises(OSError, match=f"{shared} is writable by other users .*not sticky"):
        build.library(part)
    shared.chmod(0o777 | stat.S_ISVTX)  # as /tmp: only the owner of an entry may rename or remove it
    assert build.library(part).parent == shared / "mine" / "cache"


def test_a_cache_owned_by_another_user_is_refused(part: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o755)
    os.chown(cache, 65534, 65534)
    with pytest.raises(OSError, match=f"{cache} is owned by uid 65534, not this user"):
        build.library(part)
    os.chown(cache, 0, 0)
    library = build.library(part)
    os.chown(library, 65534, 65534)
    with pytest.raises(OSError, match=f"{library} is owned by uid 65534, not this user"):
        build.library(part)


def test_a_cache_reached_through_a_link_is_used_at_its_real_place_and_a_linked_library_refused(
    part: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "real-cache"
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    monkeypatch.setenv("CALLBRIDGE_CACHE", str(tmp_path / "link"))
    built = build.library(part)
    assert built == real / build.library_name(part)  # loaded from where the checks looked, not through the link
    elsewhere = tmp_path / "elsewhere.so"
    built.rename(elsewhere)
    built.symlink_to(elsewhere)
    with pytest.raises(OSError, match=f"{built} is a symbolic link"):
        build.library(part)
