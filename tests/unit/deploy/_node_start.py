"""One process of a node at its start, for test_alerting_series.py: ``ROLE SETTINGS_JSON``, run with
``PROMETHEUS_MULTIPROC_DIR`` set as ``callbridge serve`` sets it for itself and its workers. Each role makes the call
its process makes at start, and nothing else (no socket, no Redis command):

* ``serve``: serve's own process, as :meth:`bridge.serve.pool.Pool.start` announces it;
* ``worker-N``: worker N, as :meth:`bridge.serve.worker.Worker.run` announces it, before its SIP endpoint starts;
* ``front``: the front in serve's process (``front: kamailio``), as :meth:`bridge.serve.front.KamailioFront.start`
  announces it, before Kamailio runs; each of the node's workers reported a cap of :data:`WORKER_CAP` calls.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

WORKER_CAP = 4  # the pjsua2 wheel's call cap per worker process


def main(role: str, settings_json: str) -> None:
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR"), "serve's workers always run in multiprocess mode"
    from bridge.config import Settings

    settings = Settings(**json.loads(settings_json))
    if role == "serve":
        from bridge.serve.pool import announce_node

        announce_node(settings, settings.workers)  # Pool.start: one slot per worker
    elif role.startswith("worker-"):
        from bridge.serve.worker import Worker

        asyncio.run(Worker(settings, int(role.removeprefix("worker-"))).announce_metrics())
    elif role == "front":
        from bridge.serve.front import KamailioFront, node_destinations

        caps = [(settings.worker_sip_port(index), WORKER_CAP) for index in range(settings.workers)]
        KamailioFront(settings, node_destinations(settings, caps), binary="kamailio").announce_metrics()
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
