"""The guarded rollout: which variant a call gets (a flag per dialplan, sealed), each call's outcome record,
and the engine that promotes or rolls a candidate back on evidence. Everything but :mod:`.store`,
:mod:`.records`, :mod:`.refusals`, :mod:`.backup` and :mod:`.arming` is pure.

::

    arming.py      the gate before the rollout, against Redis: green replay reports registered for a plan
                   (``callbridge rollout attest``), and every change that arms a candidate checked against them
    attest.py      the gate's rules (pure): a variant's configuration digest, a green report's, a signed attestation
    backup.py      A backup of the rollout state that lives only in Redis, and its restore: ``callbridge rollout
                   export`` and ``callbridge rollout import``
    catalog.py     what the rollout knows about models, kept as data: a dated price table and the announced shutdown
                   dates
    engine.py      the guarded rollout's decisions: promoted on evidence, rolled back on evidence or by its breaker
    evidence.py    what a guarded rollout counts (pure): the stream's entries as evidence, each in its place
    experiment.py  the guarded rollout as people see it (``rollout show``, the console, ``/metrics``)
    guardrails.py  the guardrails a candidate is held to: each metric's value, kind, margin and floor
    health.py      health, quality and cost of each rollout variant: one call's numbers, a window's, and the
                   rollback rule
    outcomes.py    one outcome record per finished rollout call, and their replay through the guarded rollout
    policy.py      the rollout as pure decisions: which variant a call gets, and why
    probes.py      active probes of the safe variant's model (pure): the setting, a probe's stream entry, and how
                   the breaker reads it
    records.py     A rollout plan's outcome records in Redis, and the guarded rollout the worker runs on them after
                   every call
    refusals.py    variants whose model the service refuses, kept in Redis beside the flags
    seal.py        the rollout flag's seal: which stored flag a call obeys (pure: no I/O but the process's own user)
    srm.py         the sample-ratio test (pure): one loss parameter per variant shared by every epoch
    stats.py       the guarded rollout's statistics: always-valid tests and intervals, a stratified difference, the
                   breaker's run and the sample-ratio test
    store.py       the rollout flags in Redis: read fresh for every call, changed with an audit trail, rolled back
                   automatically
    watch.py       the watch that never ends: a change detector on each guardrail's recent evidence at the last step
"""
