"""Redis: every key in one place (:mod:`.keys`), per-call state written off the media path, its read side for
the console and ``callbridge calls``, and what keeps it whole when Redis fails over or a worker dies.

::

    calls.py       per-call state in Redis, written off the media path by a batching writer that never blocks or
                   fails a call
    channels.py    following a Redis pub/sub channel for as long as a worker runs: subscribed again after Redis was
                   lost
    cli.py         ``callbridge calls``: the supervisor's first view of live calls, read from Redis across every
                   worker
    connection.py  connections to Redis, and what the callers of :mod:`bridge.store` make of their failures
    dialogseal.py  A call's SIP dialog as its Redis hash keeps it (``sip_dialog``): sealed, so that Redis holds no
                   caller's number
    ended.py       ended calls still in Redis: the index every writer adds to, paged and searched by the console
    failover.py    following a Sentinel-managed primary as it moves, and the writer's record of when its writes wait
    keys.py        every Redis key name and TTL the bridge uses, in one place
    liveness.py    is a worker whose heartbeat expired dead, or only cut off from Redis? Ask the worker itself, over
                   SIP
    pending.py     what the call state writer holds in memory and has not written yet (no Redis, no asyncio: the
                   writer's pure half)
    read.py        the read side of per-call state: live calls, one call's hash and events, the events after one
    record.py      what every record of a call says (report line, ended row, call.ended, a dead worker's line), pure
    reaper.py      dead workers found and their calls ended: the reaper every worker's writer runs, and its helpers
    reportfile.py  the report file (``Settings.report_file``): one JSON line per finished call, appended by every
                   worker of a node
    spool.py       the final state a stopping worker could not write to Redis, kept in a local spool file until
                   Redis takes it
    times.py       one time format in the JSON the product writes: ISO 8601 in UTC, ``<name>_unix`` beside (pure)
"""
