"""The supervisor's console and HTTP API on ``callbridge serve``: accounts and roles, live and ended calls,
actions on a call (listen-in, take-over, whisper, transfer, hang up), the rollout panel and ``/metrics``.
The page itself is plain files in ``static/`` (no build step).

::

    accounts.py      the console's accounts: a users file of names, roles, scrypt password hashes and API-token
                     digests
    action_audit.py  reading the call-actions audit: filtered by who, call and action, and one call's actions
    actions.py       A supervisor's actions on a live call: ``POST /api/calls/{id}/hangup``, ``/whisper``,
                     ``/transfer``, and their audit (``GET /api/actions/audit``)
    api.py           the supervisor's HTTP API and console on ``callbridge serve`` (aiohttp)
    auth.py          who may use the supervisor API and console: accounts or demo tokens, roles, sessions in a
                     cookie, CSRF tokens
    board.py         the wallboard's tiles from live rows, ended hashes and refused INVITEs (pure)
    calls.py         the calls' routes: the live calls and one call, read once (JSON) or followed (server-sent
                     events, :mod:`.stream`)
    console.py       the console's page, its static files and its sign-in routes, and the security headers of every
                     response
    cors.py          cross-origin use of the ``/api`` routes from the web origins ``http_cors_origins`` lists
    ended.py         ended calls' routes: the retention window's ended calls, paged and searched, and one call as a
                     download
    errors.py        every error of serve's HTTP port as the one JSON body, whatever refused the request
    export.py        one call as a download (pure): JSON (its state, transcript, timeline and latency) or plain text
                     a person reads
    flags.py         what the console marks on a call, from the call's own stream entries and its hash (pure)
    gate.py          the door of serve's HTTP port: how many connections it holds, from whom, and for how long one
                     may take to ask
    http.py          what every route group of the supervisor's app shares: its state, JSON answers and bodies, and
                     who is asking
    kill_switch.py   who holds a rollout dialplan's kill switch, and who may turn it off (pure)
    idempotency.py   ``Idempotency-Key`` on the call actions: a retry within a day gets the first answer
    kinds.py         the console's copy of the report vocabulary (static/kinds.js), generated from bridge.events
    listen.py        listen-in, the console's side: one call's live audio, both sides mixed, to a supervisor's page
                     over a WebSocket
    listen_token.py  commands on Redis signed by the ``serve`` process that accepted them from the console, and
                     checked by the workers
    masking.py       what a viewer sees of a call: its caller and original called number masked
    monitoring.py    the routes for machines, without a credential: ``GET /metrics`` (Prometheus, merged across
                     worker processes), ``GET /healthz`` (readiness) and ``GET /livez`` (liveness)
    openapi.py       the API's OpenAPI 3.1 document (``GET /api/openapi.json``), drawn from the route table
    plan_stats.py    the console's per-plan strip: each dialplan's figures from the call hashes in Redis (pure)
    proxy.py         behind a TLS-terminating proxy: whose ``X-Forwarded-*`` headers the supervisor app believes
    ratelimit.py     the supervisor API's rate limit: requests a minute per token or session (pure)
    remote.py        the command line's client of the supervisor HTTP API: ``callbridge calls --api URL`` and
                     ``callbridge rollout
    rollout.py       the rollout's routes: each rollout dialplan's variants and flag, the console's panel, an
                     admin's change, and a supervisor's kill switch
    rollout_view.py  the console's rollout panel as JSON: the one place that knows the shape of the rollout flag
    routes.py        the route table: each route once, with the role it takes (enforced before its handler) and
                     what it answers
    schemas.py       JSON Schemas of the API's main bodies (the OpenAPI document's components)
    stream.py        what the console pushes to the browser with server-sent events (the WHATWG HTML "Server-sent
                     events" format)
    strip.py         the per-plan strip's route: ``GET /api/plans/stats?window_s=`` (:mod:`.plan_stats` says what
                     each figure is)
    takeover.py      take-over, the console's side: the supervisor's microphone to a taken-over call, over a
                     WebSocket
    targets.py       where a supervisor may transfer a call (the console's check and each call's inbox)
    timeline.py      latency of one call, measured between the entries of its Redis stream (pure)
    trace_link.py    a call's trace in the console: the link to the operator's trace UI (``tracing_ui_url``; pure)
    users_cli.py     ``callbridge users``: the console's accounts in the users file
                     (:mod:`bridge.supervisor.accounts`)
    users_watch.py   the users file, read again while ``serve`` runs: an account removed, or its role changed, is
                     signed out
    wall_rollout.py  the rollout's rows on the wallboard: each variant's calls and the verdict the flag applies
    wallboard.py     the wallboard's page and its tiles' route (``GET /api/wallboard``)
"""
