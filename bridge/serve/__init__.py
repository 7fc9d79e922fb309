"""``callbridge serve``: the node. The pool of worker processes, each a SIP user agent with its own calls; the
front (Kamailio) before them; drains, reloads and rolling restarts; the node's health, webhooks and rollout
records.

::

    actions.py         supervisor actions on live calls, the worker's side: signed requests on Redis pub/sub, into
                       the call's session
    breaker.py         A circuit breaker for one worker's Realtime connections, as a pure state machine (no clock,
                       no I/O)
    broker.py          the credential broker: the one process that holds the long-lived API key, minting short-lived
                       credentials for workers that never see it
    calltraces.py      a worker's calls as OpenTelemetry traces (tracing: otlp): the process's tracing, each call's
                       trace started as it arrives
    config_cli.py      ``callbridge config show``: the settings ``serve`` would run with, each with its source,
                       secrets masked
    control.py         how ``serve`` drains, stops, reloads and replaces its workers, and its local control socket
    control_cli.py     ``callbridge reload``, ``restart --rolling`` and ``users unlock``, through serve's control
                       socket
    drain_cli.py       ``callbridge drain``: a node or a worker behind the front out of new calls (or back), through
                       the front's control socket
    experiment_cli.py  ``callbridge rollout records`` and ``callbridge rollout evaluate``: a plan's outcome records,
                       and their replay through the decision engine
    front.py           the front door: Kamailio in front of the workers, so that one SIP address reaches every
                       worker of every node; its start, supervision, metrics and stop
    front_conns.py     the TCP and TLS connections one source may hold at the front, closed beyond that
    front_dialogs.py   where the front keeps its dialogs: Redis (db_redis) or Kamailio's memory, and why
    front_edge.py      what the front refuses before a worker sees it (the edge), its connection limits, and its
                       ``front.sources`` and ``front.users``
    front_files.py     what the front's run directory holds for the routing script: ``dispatcher.list``,
                       ``front.defs``, ``tls.cfg``
    front_process.py   Kamailio's process: its environment, its process group, its log relayed, the SIP probe
    front_rpc.py       the front's control socket: the workers' dispatcher states, drains, the edge's counters
    health.py          ``callbridge health``: is the ``serve`` of these settings healthy? The container's
                       HEALTHCHECK and a monitor's probe
    listen.py          listen-in, the worker's side: the calls' taps (:class:`bridge.call.tap.ListenTap`) and their
                       audio on Redis pub/sub
    lost.py            the record of every call whose worker died, closed by the pool (and at start for a previous
                       run)
    nodewatch.py       the node's own checks as metrics, so that Prometheus alerts on what ``/healthz`` says
    outcome.py         a finished rollout call as its outcome record, and the plan's experiment after it
    pool.py            ``callbridge serve``: the worker pool
    preflight.py       the start-up check of ``callbridge serve``: can this node reach its Realtime endpoint with
                       its credential?
    probe.py           a probe of a rollout's safe variant's model: a session opened and closed, its answer, its bound
    ready.py           A worker's readiness, on a channel of its own, and what its process prints, forwarded to the
                       log
    rollout_cli.py     ``callbridge rollout``: show and change the variant weights of each rollout dialplan
    stopping.py        A worker's part in a drain, a graceful stop and a rolling restart: what it takes, and when it
                       exits
    takeover.py        take-over, the worker's side: the calls' take-over legs
                       (:class:`bridge.call.takeover.TakeOverLeg`) and the supervisor's audio on Redis pub/sub
    trunks.py          the start-up line that says what holds an unlisted trunk's SBC (sip_trunk_sources)
    variant.py         one call on its variant: the connector, the credential source, the profile, health and cost
    webhooks.py        signed webhooks in ``serve`` and its workers (the package: ``bridge.webhooks``)
    worker.py          one worker process: a SIP user agent on its own port, a few calls, one asyncio loop
    zygote.py          workers forked from a preloaded parent, sharing its pages copy-on-write (``worker_start:
                       preload``)
"""
