"""Orchestrated calls: the model listens and speaks, the contact center's own service (the orchestrator) decides
what is said.

::

    models.py   the request the bridge POSTs after each caller turn and the answer it expects (pure, versioned);
                ``python -m bridge.orchestrator.models --write docs/orchestrator.schema.json`` draws their schema
    client.py   the HTTP side: one aiohttp session per worker, time limits, faults classified by kind

The call's side (what each decision does to the call) is ``bridge/call/orchestration.py``; the protocol is
described in ``docs/orchestrator.md``.
"""
