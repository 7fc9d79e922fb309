"""Signed webhooks (Standard Webhooks, standardwebhooks.com): each call's result reaches the contact center's systems.

=================  ====================================================================================================
``signing``        pure: the ``whsec_`` secret, the ``v1,`` signature over ``id.timestamp.body``, the three headers
``body``           pure: the event types, the body ``{"type", "timestamp", "data"}``, each call event's data
``schedule``       pure: the retry schedule (at once, 5 s, 30 s, 5 min, ... over more than 24 h) and status classes
``endpoints``      pure: the endpoints (``webhook_url``; each dialplan's ``webhooks``) by name, which get which event
``queue``          Redis: pending deliveries (due set, records, ages), the lease a deliverer claims them with, dead
                   letters
``outbox``         the emitting side: :func:`emit` never blocks; events wait in memory (and a spool file at stop)
                   while Redis is away
``delivery``       the sending side: claims due deliveries, POSTs them signed, settles them
``cli``            ``callbridge webhooks list|retry``
=================  ====================================================================================================

``bridge.serve.webhooks`` wires them: ``serve`` runs the deliverer; each worker emits its calls' events
(``call.started``, ``call.transferred``, ``call.ended``).
=================  ====================================================================================================

Nothing but an endpoint's name is stored with a pending delivery: its URL and secret are looked up in the settings
and dialplans when it is sent, so no data in Redis or in a call can send a request anywhere else, and no secret is
ever stored or logged.
"""
