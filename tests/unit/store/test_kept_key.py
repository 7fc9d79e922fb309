"""The node's kept key (bridge/store/spool.py ``kept_key``): made once (0600, in a 0700 directory), the same for every
later reader, and a file that is not such a key refused with its path."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bridge.store.spool import kept_key


def test_a_kept_key_is_made_once_private_and_read_again(tmp_path: Path) -> None:
    first = kept_key(tmp_path / "spool", "listen_key")
    assert len(first) == 64 and int(first, 16) >= 0
    assert kept_key(tmp_path / "spool", "listen_key") == first  # a restart reads it
    assert stat.S_IMODE((tmp_path / "spool" / "listen_key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    (tmp_path / "spool" / "listen_key").write_text("not a key\n")
    with pytest.raises(OSError, match="listen_key: not a key"):
        kept_key(tmp_path / "spool", "listen_key")
