"""The emulator's ``refuse_models`` fault with ``refuse_share``: only that share of a model's connections refused."""

from __future__ import annotations

import pytest

from bridge.emulator.faults import Faults


def test_refuse_share_refuses_the_draws_below_it_and_only_for_the_named_models() -> None:
    faults = Faults(refuse_models="gpt-realtime-2*", refuse_share=0.3, refuse_status=503)
    assert [faults.refusal_status("gpt-realtime-2.1", d) for d in (0.0, 0.29, 0.3, 0.9)] == [503, 503, None, None]
    assert faults.refusal_status("gpt-realtime", 0.0) is None
    assert Faults(refuse_models="m").refusal_status("m", 0.999) == 503  # the default share: every connection


def test_a_share_outside_zero_to_one_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="refuse_share"):
        Faults(refuse_share=1.5)
