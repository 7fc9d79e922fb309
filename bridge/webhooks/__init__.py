"""Signed webhooks (Standard Webhooks, standardwebhooks.com): each call's result reaches the contact center's systems.

=================  ====================================================================================================
``signing``        pure: the ``whsec_`` secret, the ``v1,`` signature over ``id.timestamp.body``, the three headers
``body``           pure: the event types, the body ``{"type", "timestamp", "data"}``, each call event's data, the cut
                   of a long string (the schema of every body: ``docs/webhooks.schema.json``)
``schedule``       pure: the retry schedule (at once, 5 s, 30 s, 5 min, ... over more than 24 h) and status classes
``limits``         pure: what an endpoint may hold (count, bytes), dead letters' time, a string's length, memory
``endpoints``      pure: the endpoints (``webhook_url``; each dialplan's ``webhooks``) by name, which get which event
``scripts``        the Lua scripts of the queue: queue, claim, settle, retry (one endpoint, one slot, atomic)
``queue``          Redis: each endpoint's queue (due set, pending set, a call's chain in order, dead letters, caps,
                   one ``call.ended`` per call), the lease a deliverer claims with, the wake list it blocks on
``outbox``         the emitting side: :func:`emit` never blocks; events wait in memory (bounded; and a spool file at
                   stop) while Redis is away
``lane``           one endpoint's sending: claims its due deliveries, a few at once, never held up by another's
``delivery``       the sending side: a lane per endpoint, woken by what is queued (no endpoint: no Redis command);
                   POSTs signed, settles
``cli``            ``callbridge webhooks list|retry``
=================  ====================================================================================================

``bridge.serve.webhooks`` wires them: ``serve`` runs the deliverer; each worker emits its calls' events
(``call.started``, ``call.transferred``, ``call.ended``).

Nothing but an endpoint's name is stored with a pending delivery: its URL and secret are looked up in the settings
and dialplans when it is sent, so no data in Redis or in a call can send a request anywhere else, and no secret is
ever stored or logged.
"""
