"""A call whose model the service refuses moves to the next healthy variant of its dialect, at once (no socket here:
``VariantCall.refused`` is what the call session asks when a session is refused)."""

from __future__ import annotations

import asyncio

from bridge import events as ev
from bridge.dialplan import Dialplan
from bridge.errors import ModelRefused
from bridge.realtime.credentials import Sources
from bridge.rollout import catalog
from bridge.rollout.policy import Decision, decide
from bridge.serve.variant import VariantCall

PLAN = Dialplan.model_validate(
    {
        "name": "p", "match": ["1"], "dialect": "rollout",
        "rollout": {"safe": "a", "variants": [
            {"name": "a", "dialect": "ga", "model": "gpt-realtime", "weight": 0},
            {"name": "live", "dialect": "live", "model": "gpt-live-1", "weight": 0},
            {"name": "b", "dialect": "ga", "model": "gpt-realtime-2.1", "weight": 100},
            {"name": "c", "dialect": "ga", "model": "gpt-realtime-2.1-mini", "voice": "verse", "weight": 0},
        ]},
    }
)  # fmt: skip


def test_a_refused_model_moves_the_call_to_the_next_healthy_variant_of_its_dialect() -> None:
    spec = PLAN.rollout_spec
    assert spec is not None
    flag = spec.default_flag()
    decision = decide(spec, flag, "+15550001", "c1")
    assert decision.variant == "b"
    vc = VariantCall(
        PLAN, decision, variant=spec.variant("b"), fallback_voice="alloy", realtime_url="ws://127.0.0.1:9/v1",
        sources=Sources.from_environment("ws://127.0.0.1:9/v1", "sk-test"), prices=catalog.load_prices(),
        rollout=(spec, flag),
    )  # fmt: skip
    vc.known_refused = frozenset({"a"})  # another worker marked the safe one refused
    told: list[tuple[str, str]] = []
    moved: list[Decision] = []
    vc.on_refusal.append(lambda name, exc: told.append((name, exc.code)))
    vc.on_fallback.append(moved.append)

    assert asyncio.run(vc.refused(ModelRefused("gpt-realtime-2.1", "model_not_found")))
    assert told == [("b", "model_not_found")]
    assert [(d.variant, d.model, d.voice) for d in moved] == [("c", "gpt-realtime-2.1-mini", "verse")]
    assert vc.decision.reason.endswith("gpt-realtime-2.1 refused (model_not_found) -> c")
    assert vc.profile().model == "gpt-realtime-2.1-mini" and vc.credentials is not None
    # c refused too: the Live variant is healthy but of another dialect, so the call set up for GA gives up
    assert not asyncio.run(vc.refused(ModelRefused("gpt-realtime-2.1-mini", "model_not_found")))
    assert vc.report_fields()["refused"] == ["b", "c"] and isinstance(moved[0], Decision)
    assert ev.ErrorClass.PROTOCOL is ModelRefused("m", "invalid_model").error_class
