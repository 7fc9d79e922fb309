"""The node's checks (bridge/serve/nodewatch.py) against a real redis-server: a kill switch that a restarted Redis
lost is detected (``callbridge_rollout_state_missing``, an error naming it), also by a restarted ``serve``, until a
backup is restored; a node of another (fresh) Redis sharing the ``spool_dir`` and a plan the node does not serve are
not reported; Redis down and a worker not ready show in ``callbridge_redis_up`` and ``callbridge_ready``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from bridge.config import Settings
from bridge.devkit.redis_server import EmbeddedRedis
from bridge.serve import rollout_cli
from bridge.serve.nodewatch import SEEN_FILE, NodeWatch, redis_identity
from bridge.store import keys

ROOT = Path(__file__).resolve().parents[3]
DIALPLANS = ["--dialplans", str(ROOT / "dialplans")]

pytestmark = pytest.mark.integration


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def ready_pool() -> dict[str, Any]:
    return {"workers": [{"index": 0, "alive": True, "ready": True, "sip_port": 5070}], "realtime": {"state": "up"}}


async def cli(redis_server: EmbeddedRedis, *argv: str) -> None:
    """``callbridge rollout ...`` (it runs its own event loop: in a thread)."""
    assert await asyncio.to_thread(rollout_cli.main, [*argv, *DIALPLANS, "--redis-url", redis_server.url]) == 0


async def test_a_kill_switch_lost_with_redis_is_missing_until_restored(
    redis_server: EmbeddedRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(redis_url=redis_server.url, spool_dir=tmp_path / "state", dialplans=ROOT / "dialplans")
    watch = NodeWatch(settings, ready_pool)
    await cli(redis_server, "set", "support", "--kill", "--reason", "bad canary", "--who", "ops")
    await cli(redis_server, "set", "support-ga-to-live", "--weights", "ga=90,live=10", "--reason", "r", "--who", "ops")
    backup = tmp_path / "backup.json"
    await cli(redis_server, "export", str(backup))
    await watch.check()
    assert (gauge("callbridge_ready"), gauge("callbridge_redis_up", redis=redis_identity(redis_server.url))) == (
        1.0,
        1.0,
    )
    assert gauge("callbridge_rollout_state_missing", dialplan="support") == 0.0
    assert (tmp_path / "state" / SEEN_FILE.format(redis=redis_identity(redis_server.url))).exists()

    redis_server.restart()  # persistence off: the flags are gone
    with caplog.at_level(logging.ERROR, logger="bridge.serve.nodewatch"):
        await watch.check()
    assert gauge("callbridge_rollout_state_missing", dialplan="support") == 1.0
    assert gauge("callbridge_rollout_state_missing", dialplan="support-ga-to-live") == 1.0
    lost = [r.getMessage() for r in caplog.records if "vanished" in r.getMessage()]
    assert any(m.startswith("rollout support:") and "kill switch was ON" in m for m in lost), lost
    assert any(m.startswith("rollout support-ga-to-live:") and "kill switch" not in m for m in lost), lost

    # serve restarted beside its Redis: it still knows what was there
    again = NodeWatch(settings, ready_pool)
    await again.check()
    assert gauge("callbridge_rollout_state_missing", dialplan="support") == 1.0

    await cli(redis_server, "import", str(backup))
    await again.check()
    assert gauge("callbridge_rollout_state_missing", dialplan="support") == 0.0
    assert gauge("callbridge_rollout_state_missing", dialplan="support-ga-to-live") == 0.0


async def test_redis_down_and_a_worker_not_ready_show_in_the_gauges(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    pool = ready_pool()
    watch = NodeWatch(Settings(redis_url=redis_server.url, spool_dir=tmp_path), lambda: pool)
    await watch.check()
    assert (gauge("callbridge_ready"), gauge("callbridge_redis_up", redis=redis_identity(redis_server.url))) == (
        1.0,
        1.0,
    )
    pool["workers"][0]["ready"] = False
    await watch.check()
    assert (gauge("callbridge_ready"), gauge("callbridge_redis_up", redis=redis_identity(redis_server.url))) == (
        0.0,
        1.0,
    )
    pool["workers"][0]["ready"] = True
    redis_server.stop()
    await watch.check()
    assert (gauge("callbridge_ready"), gauge("callbridge_redis_up", redis=redis_identity(redis_server.url))) == (
        0.0,
        0.0,
    )
    redis_server.start()
    await watch.check()
    assert (gauge("callbridge_ready"), gauge("callbridge_redis_up", redis=redis_identity(redis_server.url))) == (
        1.0,
        1.0,
    )


async def test_a_fresh_redis_and_plans_not_served_report_nothing_missing(
    redis_server: EmbeddedRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two nodes share one ``spool_dir``; the second uses a fresh Redis. A flag of a plan no node serves
    (``retired``) lives in the first Redis too."""
    spool = tmp_path / "state"
    first = NodeWatch(Settings(redis_url=redis_server.url, spool_dir=spool, dialplans=ROOT / "dialplans"), ready_pool)
    await cli(redis_server, "set", "support", "--kill", "--reason", "bad canary", "--who", "ops")
    raw = first.redis
    assert raw is not None
    await raw.hset(keys.rollout_flag("retired"), mapping={"kill": "1"})
    await raw.sadd(keys.ROLLOUT_DIALPLANS, "retired")
    await first.check()
    with EmbeddedRedis() as fresh, caplog.at_level(logging.ERROR, logger="bridge.serve.nodewatch"):
        assert redis_identity(fresh.url) != redis_identity(redis_server.url)
        second = NodeWatch(Settings(redis_url=fresh.url, spool_dir=spool, dialplans=ROOT / "dialplans"), ready_pool)
        await second.check()
        assert not [r for r in caplog.records if "vanished" in r.getMessage()]
        assert gauge("callbridge_rollout_state_missing", dialplan="support") == 0.0

        redis_server.restart()  # the first Redis loses its flags: only the served plan is missing
        await first.check()
    lost = [r.getMessage() for r in caplog.records if "vanished" in r.getMessage()]
    assert len(lost) == 1 and lost[0].startswith("rollout support:"), lost
    assert gauge("callbridge_rollout_state_missing", dialplan="support") == 1.0
    # never watched, never missing (a serve in this process may have primed it at 0 for a plan of that name)
    assert gauge("callbridge_rollout_state_missing", dialplan="retired") in (None, 0.0)
