"""Softphone pieces that need no endpoint: argument parsing, the WAV source, the default bind address."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from bridge.audio.frames import FRAME_BYTES, SILENCE
from bridge.audio.line import LineEcho
from bridge.devkit.softphone import (
    PhoneSetup,
    _default_host,
    build_parser,
    call_plan,
    listen_plan,
    parse_dtmf,
    parse_echo,
)
from bridge.sip.phone import CallPlan, EchoingSource, ListenPlan, PcmSource
from bridge.sip.sipconfig import SrtpMode
from bridge.sip.sipmsg import Transport


def test_parse_dtmf() -> None:
    assert parse_dtmf("12#@1.5") == ("12#", 1.5)
    assert parse_dtmf("*") == ("*", 1.0)
    with pytest.raises(argparse.ArgumentTypeError, match="bad DTMF digits"):
        parse_dtmf("12x@1")
    with pytest.raises(argparse.ArgumentTypeError, match="bad time"):
        parse_dtmf("12@soon")


def test_call_arguments() -> None:
    args = build_parser().parse_args(
        [
            "call",
            "sip:100@127.0.0.1:5060",
            "--play",
            "a.wav",
            "--record",
            "b.wav",
            "--dtmf",
            "1@0.5",
            "--dtmf",
            "23@2",
            "--hangup-after",
            "6",
            "--json",
        ]
    )
    assert args.command == "call"
    assert args.uri == "sip:100@127.0.0.1:5060"
    assert args.dtmf == [("1", 0.5), ("23", 2.0)]
    assert args.hangup_after == 6.0
    assert args.json is True


def test_listen_arguments() -> None:
    args = build_parser().parse_args(["listen", "--port", "5070", "--calls", "1", "--answer-after", "0.5"])
    assert (args.command, args.port, args.calls, args.answer_after) == ("listen", 5070, 1, 0.5)
    assert listen_plan(args) == ListenPlan(answer_after=0.5, duration=60.0, calls=1)


def test_call_arguments_become_a_plan_and_a_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CALLBRIDGE_SIP_AUTH", raising=False)
    call = ["call", "sips:100@127.0.0.1:5061", "--play", "a.wav", "--loop", "--dtmf", "9@1", "--timeout", "5"]
    local = ["--local-port", "5099", "--no-plc", "--srtp", "optional", "--auth", "u:p:w", "--tls-ca", "ca.pem"]
    args = build_parser().parse_args([*call, *local])
    plan, setup = call_plan(args)
    assert plan == CallPlan(play="a.wav", loop_play=True, dtmf=[("9", 1.0)], answer_timeout=5.0)
    assert setup == PhoneSetup(port=5099, auth=("u", "p:w"), concealment=False, srtp=SrtpMode.OPTIONAL, tls_ca="ca.pem")
    config = setup.config(args.uri)
    assert (config.host, config.port, config.transports) == ("127.0.0.1", 5099, (Transport.UDP, Transport.TLS))
    assert (config.srtp, config.tls_ca, config.concealment) == (SrtpMode.OPTIONAL, "ca.pem", False)


def test_a_sips_call_gets_mandatory_srtp_a_sip_call_none() -> None:
    assert PhoneSetup().config("sips:100@192.0.2.1").srtp is SrtpMode.MANDATORY
    plain = PhoneSetup().config("sip:100@192.0.2.1")
    assert (plain.srtp, plain.transports, plain.host) == (SrtpMode.OFF, (Transport.UDP,), "0.0.0.0")


def test_an_unknown_srtp_mode_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["call", "sip:1@127.0.0.1", "--srtp", "sometimes"])
    assert "invalid SrtpMode value: 'sometimes'" in capsys.readouterr().err


def test_pcm_source_plays_once_then_silence() -> None:
    source = PcmSource(b"\x01" * 400)
    assert source.pop_frame() == b"\x01" * FRAME_BYTES
    assert source.pop_frame() == b"\x01" * 80 + b"\0" * 240
    assert source.finished
    assert source.pop_frame() == SILENCE


def test_pcm_source_loops() -> None:
    source = PcmSource(b"\x01" * FRAME_BYTES + b"\x02" * FRAME_BYTES, loop=True)
    assert [source.pop_frame()[0] for _ in range(5)] == [1, 2, 1, 2, 1]
    assert not source.finished


@pytest.mark.parametrize(
    ("uri", "host"),
    [
        ("sip:100@127.0.0.1:5060", "127.0.0.1"),
        ("sip:100@localhost", "127.0.0.1"),
        ("sip:100@10.1.2.3", "0.0.0.0"),
        ("sip:100@pbx.example.com", "0.0.0.0"),
    ],
)
def test_default_bind_address_follows_the_target(uri: str, host: str) -> None:
    assert _default_host(uri) == host


def test_parse_echo() -> None:
    assert parse_echo("-14@120") == LineEcho(-14.0, 120.0, None)
    assert parse_echo("-10@250/-55") == LineEcho(-10.0, 250.0, -55.0)
    with pytest.raises(argparse.ArgumentTypeError, match="bad echo '-14'"):
        parse_echo("-14")
    with pytest.raises(argparse.ArgumentTypeError, match=r"echo level_db must be -60\.\.0, got 5"):
        parse_echo("5@100")


def test_an_echoing_line_returns_what_it_heard_at_a_constant_delay_however_it_is_bunched() -> None:
    source = EchoingSource(None, LineEcho(0.0, 0.0))  # no loss, no line delay: only the DEPTH frames
    frames = [np.full(FRAME_BYTES // 2, 100 * (k + 1), dtype="<i2").tobytes() for k in range(30)]
    sent: list[bytes] = []
    k = 0
    for burst in (1, 3, 0, 0, 2, 4, 0, 1, 3, 0, 2, 1, 1, 3, 0, 0, 4):  # the loop hands frames over in bunches
        source.heard(b"".join(frames[k : k + burst]))
        k += burst
        sent.append(source.pop_frame())
    # the n-th frame sent carries the (n - DEPTH)-th frame heard, whatever the bunching
    assert sent[: EchoingSource.DEPTH] == [SILENCE] * EchoingSource.DEPTH
    assert sent[EchoingSource.DEPTH :] == frames[: len(sent) - EchoingSource.DEPTH]
