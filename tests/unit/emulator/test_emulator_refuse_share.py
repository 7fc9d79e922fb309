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


def test_refuse_spell_s_gives_every_connection_of_a_spell_the_spells_draw() -> None:
    faults = Faults(refuse_models="m", refuse_share=0.3, refuse_spell_s=0.5)
    draws = [faults.refusal_draw(0.99, at, "seed") for at in (0.0, 0.2, 0.49)]
    assert len(set(draws)) == 1  # one spell: one draw, whatever each connection's own
    spells = [faults.refusal_draw(0.0, 0.5 * n + 0.1, "seed") for n in range(400)]
    assert spells == [faults.refusal_draw(0.5, 0.5 * n + 0.4, "seed") for n in range(400)]  # reproducible per spell
    refused = sum(faults.refusal_status("m", d) is not None for d in spells)
    assert 80 <= refused <= 160, refused  # about 30 % of 400 spells (a binomial's 99.99 % range)
    assert Faults(refuse_share=0.3).refusal_draw(0.42, 1.0, "seed") == 0.42  # no spells: the connection's draw


def test_a_negative_spell_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="refuse_spell_s"):
        Faults(refuse_spell_s=-1.0)
