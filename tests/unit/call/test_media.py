"""The media path is chosen once, before the call (bridge.call.media): the uplink offload and where the echo guard
hears the caller follow from the dialect's capabilities, the audio format and the guard the plan asks for."""

from __future__ import annotations

import dataclasses

import pytest

from bridge.audio.echo_native import native_echo
from bridge.call.echo import guarded
from bridge.call.media import Guarded, choose_media_path
from bridge.dialplan import EchoGuardPlan
from bridge.realtime.dialects import common, live

CAPS = common.CAPABILITIES  # the service's VAD marks turns; the caller's audio need not be paced
needs_c = pytest.mark.skipif(choose_media_path(CAPS, "pcm16").offload is None, reason="no C resampling kernel")


@needs_c
def test_without_a_guard_the_offload_carries_the_upsampler_and_hears_no_guard() -> None:
    path = choose_media_path(CAPS, "pcm16")
    assert path.offload is path.uplink and not path.guard_on_clock


@needs_c
def test_the_c_guard_rides_the_offload_on_the_clock_thread() -> None:
    path = choose_media_path(CAPS, "pcm16", Guarded.ANYWHERE)
    assert path.offload is path.uplink and path.guard_on_clock


def test_a_guard_that_runs_only_on_the_loop_keeps_the_caller_s_frames_there() -> None:
    path = choose_media_path(CAPS, "pcm16", Guarded.ON_LOOP)
    assert path.offload is None and not path.guard_on_clock


@pytest.mark.parametrize("guard", list(Guarded))
def test_no_offload_where_the_frames_must_stay_on_the_loop_or_need_no_upsampling(guard: Guarded) -> None:
    own_vad = dataclasses.replace(CAPS, turn_detection="none")  # each frame also goes to our voice detection
    for caps, fmt in ((live.CAPABILITIES, "pcm16"), (own_vad, "pcm16"), (CAPS, "g711_ulaw")):
        path = choose_media_path(caps, fmt, guard)
        assert path.offload is None and not path.guard_on_clock, (caps, fmt)


def test_the_plan_s_guard_says_where_it_can_hear() -> None:
    assert guarded(EchoGuardPlan(enabled=False)) is Guarded.NO
    c_guard = native_echo().lib is not None
    assert guarded(EchoGuardPlan(enabled=True)) is (Guarded.ANYWHERE if c_guard else Guarded.ON_LOOP)
