"""Pieces of the CLI and of the SIP runner that need no SIP: the progress display and the caller's plan."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from bridge.replay.cli import Progress, build_parser
from bridge.replay.compare import DialectRun
from bridge.replay.direct import run_direct
from bridge.replay.script import load_script
from bridge.replay.sip import heard_spans, numbers, plan_caller, reply_gaps, transfer_targets

SCRIPTS = Path(__file__).resolve().parents[3] / "call_scripts"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal() -> None:
    stream = Tty()
    progress = Progress(4, stream)
    run = DialectRun(script="a", dialect="ga")
    progress("a", "beta", None)
    progress("a", "beta", run)
    progress("a", "ga", run)
    progress.close()
    text = stream.getvalue()
    assert "\r[" + "#" * 7 + "." * 23 + "] 1/4 a beta" in text
    assert "] 2/4 a GA" in text and text.endswith("\r")


def test_dialects_option() -> None:
    assert build_parser().parse_args(["x", "--dialects", "GA, beta"]).dialects == ["ga", "beta"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["x", "--dialects", "gamma"])


def test_the_softphone_plan_follows_the_direct_replay() -> None:
    script = load_script(SCRIPTS / "dtmf_menu")
    ref = run_direct(script, "ga")
    plan = plan_caller(script, "ga", ref)
    [(digit, at)] = plan.dtmf
    direct_dtmf = next(s for s in ref.caller_spans if s[2] == "DTMF 2")
    assert digit == "2" and at == pytest.approx(direct_dtmf[0] / 1000, abs=0.02)
    hangup = next(s for s in ref.caller_spans if s[2] == "hangup")
    assert plan.hangup_after == pytest.approx(hangup[0] / 1000, abs=0.02)
    speech = next(s for s in ref.caller_spans if s[2].startswith("turn"))
    start = round(speech[0] / 1000 * 8000) * 2
    assert plan.audio[start : start + len(script.caller_audio[1])] == script.caller_audio[1]
    assert not any(plan.audio[: start - 2])  # silence before the turn


def test_heard_spans_and_reply_gaps() -> None:
    tone = (np.sin(np.arange(1600) / 3.0) * 8000).astype("<i2").tobytes()  # 200 ms
    pcm = bytes(3200) + tone + bytes(8000) + tone
    spans = heard_spans(pcm, offset_ms=10.0)
    assert spans == [(210.0, 410.0), (910.0, 1110.0)]
    assert reply_gaps([(0.0, 150.0, "turn 0: hi"), (500.0, 500.0, "hangup")], spans) == [60.0]


def test_numbers_and_transfer_targets() -> None:
    scripts = [load_script(SCRIPTS / n) for n in ("question_answer", "transfer")]
    assert numbers(scripts, ["beta", "ga"]) == {
        ("question_answer", "beta"): "70000",
        ("question_answer", "ga"): "70001",
        ("transfer", "beta"): "70010",
        ("transfer", "ga"): "70011",
    }
    assert transfer_targets(scripts, ["beta", "ga"]) == {5090: "sip:agent@127.0.0.1:5090"}
