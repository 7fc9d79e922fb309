"""The loop's call counter (``bench calls --count-calls``): calls cut into beats, beats filed by the socket's reads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bridge.runtime.callcount import CallCounter, window, window_by

HERE = "tests/unit/runtime/test_callcount.py"


def _run() -> None:  # a beat starts (the metronome's _run in a worker)
    pass


def beat() -> None:  # one call's beat (bridge.call.perform.beat in a worker)
    _check()


def _check() -> None:
    pass


def data_received() -> None:  # a read of the call's socket
    pass


def _beats(counter: CallCounter) -> None:
    sys.setprofile(counter.profile)
    try:
        for _ in range(3):  # two calls, each read on its beat: the model's audio arriving
            _run()
            beat()
            data_received()
            beat()
            data_received()
            len("x")
        for _ in range(2):  # the same calls, nothing read
            _run()
            beat()
            beat()
        _run()
    finally:
        sys.setprofile(None)


def test_each_beats_calls_are_counted_per_call_and_filed_by_whether_the_socket_brought_anything(tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    counter = CallCounter(out, run=(HERE, "_run"), beat=(HERE, "beat"), read=(HERE, "data_received"), every_s=0)
    _beats(counter)
    # per interval: _run, then beat and _check twice, data_received twice (7 Python calls) and len (1 builtin)
    assert counter.totals["deltas"] == [3, 6, 3 * 7, 3 * 1]
    # _run, beat and _check twice: 5 Python calls, no builtin
    assert counter.totals["none"] == [2, 4, 2 * 5, 0]
    assert counter.totals["some"] == [0, 0, 0, 0]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[-1]["deltas"] == [3, 6, 21, 3] and lines[-1]["none"] == [2, 4, 10, 0]
    # where the deltas intervals' calls were: each function's, named by its file, first line and name
    by = {name.rsplit(":", 1)[1]: n for name, n in lines[-1]["by"].items()}
    assert by == {"_run": 3, "beat": 6, "_check": 6, "data_received": 6}
    assert all(name.startswith("tests/unit/runtime/test_callcount.py:") for name in lines[-1]["by"])


def test_the_window_is_the_growth_between_the_last_lines_written_by_its_edges() -> None:
    def line(t: float, deltas: list[int], by: dict[str, int]) -> dict[str, object]:
        return {"t": t, "deltas": deltas, "some": [0, 0, 0, 0], "none": [0, 0, 0, 0], "by": by}

    lines = [
        line(1.0, [1, 4, 100, 50], {"a": 10}),
        line(2.0, [2, 8, 200, 90], {"a": 20, "b": 5}),
        line(3.0, [5, 20, 500, 200], {"a": 20, "b": 9, "c": 1}),
    ]
    assert window(lines, 2.5, 3.5)["deltas"] == [3, 12, 300, 110]
    assert window(lines, 0.5, 2.0)["deltas"] == [2, 8, 200, 90]  # nothing written by its start: from zero
    assert window_by(lines, 2.5, 3.5) == {"b": 4, "c": 1}  # "a" made no call in the window
    assert window_by(lines, 0.5, 2.0) == {"a": 20, "b": 5}


def test_the_readers_reads_in_c_are_counted_as_its_call_tells_them(tmp_path: Path) -> None:
    from bridge.realtime import readset

    counter = CallCounter(tmp_path / "calls.jsonl", run=(HERE, "_run"), beat=(HERE, "beat"), every_s=3600)
    sys.setprofile(counter.profile)
    try:
        for reads in (2, 1, 0):  # two calls' beats: both sockets read in C, one of them, none
            _run()
            readset._reads_made(reads)
            beat()
            beat()
        _run()
    finally:
        sys.setprofile(None)
    assert [counter.totals[kind][0] for kind in ("deltas", "some", "none")] == [1, 1, 1]
