"""Reading ``INFO stats commandstats`` (bridge/devkit/redis_count.py): the reply's text -> calls per command and the
bytes in and out, and the difference of two readings."""

from __future__ import annotations

import pytest

from bridge.devkit.redis_count import INFO_REQUEST, Reading, difference, parse_info

INFO = (
    "# Stats\r\ntotal_connections_received:3\r\ntotal_commands_processed:12\r\ntotal_net_input_bytes:1234\r\n"
    "total_net_output_bytes:5678\r\ninstantaneous_ops_per_sec:0\r\n\r\n# Commandstats\r\n"
    "cmdstat_hset:calls=7,usec=40,usec_per_call=5.71,rejected_calls=0,failed_calls=0\r\n"
    "cmdstat_info:calls=2,usec=90,usec_per_call=45.00,rejected_calls=0,failed_calls=0\r\n"
    "cmdstat_client|setname:calls=1,usec=1,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n"
)


def test_a_reply_gives_the_calls_per_command_and_the_bytes_both_ways() -> None:
    assert parse_info(INFO) == Reading({"hset": 7, "info": 2, "client|setname": 1}, 1234, 5678)
    assert INFO_REQUEST.count(b"\r\n") == 7  # INFO stats commandstats: three bulk strings


def test_a_reply_without_the_byte_counts_is_refused() -> None:
    with pytest.raises(ValueError, match="total_net_input_bytes"):
        parse_info("# Commandstats\r\ncmdstat_get:calls=1,usec=1\r\n")


def test_the_difference_leaves_out_the_readings_own_commands_unless_told_otherwise() -> None:
    before, after = parse_info(INFO), Reading({"hset": 10, "info": 3, "get": 4}, 1300, 6000)
    assert difference(before, after) == Reading({"hset": 3, "get": 4}, 66, 322)
    assert difference(before, after, skip=frozenset()).calls == {"hset": 3, "info": 1, "get": 4}
