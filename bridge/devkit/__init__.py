"""For developers, tests, the demo and the benches, never for production: real Redis, the emulator and a worker
pool on private ports, the softphone's command line, the lab of several hosts.

::

    constraints.py    ``deploy/constraints.txt``: the versions of every runtime dependency the test suite ran with,
                      for operators (``pip install callbridge-*.whl -c deploy/constraints.txt``)
    demo.py           ``callbridge demo``: everything on embedded defaults, then one real SIP call per dialect
    lab.py            several hosts on one machine: Linux network namespaces joined by veth pairs to one bridge,
                      with real addresses and no traffic leaving the machine (needs root: ``ip netns add``)
    labstack.py       callbridge on several hosts of a lab: the front, a serve node per host, Redis, callers
    native_check.py   ``python -m bridge.devkit.native_check``: load every C part now (the package's, else built)
                      and check it against its Python twin, saying where each came from
    netem.py          a network line's impairments for RTP, decided packet by packet from a seeded generator
    ports.py          free loopback ports for the development harness and the tests: one port, or a block of
                      consecutive ones
    process.py        stopping a child process the harness started: SIGTERM, a grace period, then SIGKILL
    redis_cluster.py  a real Redis Cluster of six private redis-server processes (three primaries, three replicas)
    redis_count.py    what a process costs its Redis, counted on a private ``redis-server`` (measuring, never for
                      production)
    redis_server.py   A real, private ``redis-server`` for the demo and the tests (never a mock)
    rtprelay.py       an impairment relay between a caller and the side it calls: a small userspace stand-in for
                      ``tc netem``
    sentinel.py       A real Redis primary, its replica and one sentinel (quorum 1) on private loopback ports, for
                      the tests of a failover (Debian's ``redis-server`` and ``redis-sentinel``)
    softphone.py      the softphone's command line and one-call helpers, for tests, QA and the demo: place a call
                      (play a WAV, record, send DTMF, hang up) or listen
    stack.py          the whole bridge on embedded defaults, in one context: a private Redis, the emulator and a
                      worker pool
    timeline.py       A call's timeline as the caller's side prints it (``callbridge demo``, ``callbridge call
                      --timeline``): pure
    tlscert.py        self-signed certificates for the development harness and the tests (``bench calls --srtp``,
                      the TLS tests)
"""
