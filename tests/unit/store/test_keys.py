"""The Redis key names: what other processes (the console, an older worker, an operator's redis-cli) read."""

from __future__ import annotations

from bridge.store import keys


def test_a_calls_and_a_workers_keys_share_their_hash_tag() -> None:
    assert [keys.call("c1"), keys.call_events("c1"), keys.listen_audio("c1"), keys.takeover_audio("c1")] == [
        "cb:call:{c1}",
        "cb:call:{c1}:events",
        "cb:listen:{c1}:audio",
        "cb:actions:{c1}:takeover",
    ]
    assert [keys.worker_calls("w-1"), keys.worker_heartbeat("w-1")] == ["cb:worker:{w-1}:calls", "cb:worker:{w-1}:hb"]


def test_the_rollout_keys_share_one_tag() -> None:
    assert [keys.rollout_flag("support"), keys.rollout_refused("support"), keys.variant_calls("support", "ga")] == [
        "cb:{rollout}:flag:support",
        "cb:{rollout}:refused:support",
        "cb:{rollout}:calls:support:ga",
    ]
