"""The Redis key names: what other processes (the console, an older worker, an operator's redis-cli) read."""

from __future__ import annotations

from redis.crc import key_slot

from bridge.store import keys


def test_a_calls_and_a_workers_keys_share_their_hash_tag() -> None:
    assert [keys.call("c1"), keys.call_events("c1"), keys.listen_audio("c1"), keys.takeover_audio("c1")] == [
        "cb:call:{c1}",
        "cb:call:{c1}:events",
        "cb:listen:{c1}:audio",
        "cb:actions:{c1}:takeover",
    ]
    assert [keys.worker_calls("w-1"), keys.worker_heartbeat("w-1")] == ["cb:worker:{w-1}:calls", "cb:worker:{w-1}:hb"]


def test_a_flag_its_refusals_and_the_audit_share_one_slot_and_the_call_windows_spread() -> None:
    assert [keys.rollout_flag("support"), keys.rollout_refused("support"), keys.variant_calls("support", "ga")] == [
        "cb:{rollout}:flag:support",
        "cb:{rollout}:refused:support",
        "cb:rollout:{support:ga}:calls",
    ]
    together = {
        key_slot(k.encode()) for k in (keys.rollout_flag("support"), keys.ROLLOUT_AUDIT, keys.ROLLOUT_DIALPLANS)
    }
    assert len(together) == 1  # one MULTI on a cluster
    windows = {key_slot(keys.variant_calls(dp, v).encode()) for dp in ("support", "sales") for v in ("ga", "beta")}
    assert len(windows) == 4


def test_every_key_has_a_kind_for_counting() -> None:
    assert [
        keys.kind_of(k)
        for k in (
            keys.call("c1"),
            keys.call_events("c1"),
            keys.ENDED_CALLS,
            keys.WORKERS,
            keys.worker_calls("w"),
            keys.worker_heartbeat("w"),
            keys.rollout_flag("p"),
            keys.variant_calls("p", "v"),
            keys.LISTEN_AUDIT,
            keys.call_action_ack("r"),
            "other:thing",
        )
    ] == [
        "call hash",
        "call stream",
        "ended index",
        "workers",
        "worker live set",
        "worker heartbeat",
        "rollout",
        "rollout",
        "listen-in",
        "actions",
        "other",
    ]
