"""The C build: both sources include the shared header, and a library's name covers the header as well as the
source, so an edited header rebuilds both."""

from __future__ import annotations

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
