"""The front's connection limits: the kernel's socket table read, the connections over a source's limit, the limits'
checks and the shared memory they need."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.serve.front_conns import connections, over_limit
from bridge.serve.front_edge import READ_BUFFER, Conns
from bridge.serve.front_files import Listen, front_defs

HEAD = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def row(local: str, remote: str, state: str, inode: int) -> str:
    return f"   0: {local} {remote} {state} 00000000:00000000 00:00000000 00000000 0 0 {inode} 1 0 100 0 0 10 0\n"


# 127.0.0.2:5060 (the front) <- 127.0.0.5 and ::1 (as the kernel prints them: each 32-bit word little-endian)
FRONT = "0200007F:13C4"
TABLE = (
    HEAD
    + row(FRONT, "0500007F:9C41", "01", 30)
    + row(FRONT, "0500007F:9C40", "01", 20)
    + row(FRONT, "0500007F:9C42", "08", 40)  # CLOSE_WAIT: on its way out
    + row("0200007F:13C5", "0500007F:9C43", "01", 50)  # a worker's port, not the front's
    + row(FRONT, "00000000:0000", "0A", 10)  # the listener
)
TABLE6 = HEAD + row("00000000000000000000000002000000:13C4", "00000000000000000000000001000000:A000", "01", 60)


def test_the_socket_table_gives_the_fronts_established_connections_oldest_first() -> None:
    assert connections(TABLE, [5060]) == [("127.0.0.5", 40000, 20), ("127.0.0.5", 40001, 30)]
    assert connections(TABLE, [5061]) == [("127.0.0.5", 40003, 50)]
    assert connections(TABLE6, [5060]) == [("::1", 40960, 60)]
    assert connections(HEAD + "garbage line\n", [5060]) == []


def test_a_source_over_its_limit_has_its_newest_connections_named() -> None:
    held = [("127.0.0.5", 40000 + i, 100 - i) for i in range(5)] + [("10.0.0.9", 1, 1), ("::1", 7, 2), ("::1", 8, 3)]
    assert over_limit(held, 2, []) == {"127.0.0.5": ["127.0.0.5:40002", "127.0.0.5:40001", "127.0.0.5:40000"]}
    assert over_limit(held, 1, []) == {
        "127.0.0.5": ["127.0.0.5:40003", "127.0.0.5:40002", "127.0.0.5:40001", "127.0.0.5:40000"],
        "::1": ["[::1]:8"],
    }
    assert over_limit(held, 1, ["127.0.0.0/24", "::1"]) == {}
    assert over_limit(held, 5, []) == {}


def test_the_limits_are_checked_and_the_shared_memory_covers_them() -> None:
    conns = Conns.from_settings(Settings())
    assert conns.memory_mb == conns.needed_mb > 64 + 1024 * READ_BUFFER // (1 << 20)
    assert Conns.from_settings(Settings(front_shm_mb=4096)).memory_mb == 4096
    for bad, field in (
        ({"front_tls_max_connections": 2000}, "front_tls_max_connections"),
        ({"front_connections_per_source": 256}, "front_connections_per_source"),
        ({"front_shm_mb": 64}, "front_shm_mb"),
    ):
        with pytest.raises(ConfigError, match=field):
            Conns.from_settings(Settings(**bad))  # type: ignore[arg-type]  # each a field of Settings
    defs = front_defs(Listen("127.0.0.2", 5060), Path("/run/x"), 5, conns=conns)
    assert "#!define FRONT_TCP_MAX 1024" in defs and f"#!define FRONT_TCP_BUF {READ_BUFFER}" in defs
    assert "#!define FRONT_TLS_MAX 256" in defs and "#!define FRONT_TCP_IDLE_S 20" in defs
