"""What every process of the bridge runs on: its beat, its logs, its secrets, its children and its memory.

::

    callcount.py  the event loop's Python and builtin calls per beat per call, counted under a profiler (``bench calls
                  --count-calls``)
    calltrace.py  one call's trace (OpenTelemetry spans) made from its reports: the call, its model sessions, turns,
                  answers, tool calls and holds; nothing private in it
    failures.py   one failure counter: failures counted per key, each for ``window_s`` seconds (``None``: until the
                  key succeeds), and a key over its ``limit`` once that many are counted
    lifetime.py   child processes end with the process that started them: Linux's parent-death signal
    logs.py       the log's format (``log_format``): plain text or JSON lines naming the process and the call
    memory.py     A worker's memory policy: what keeps its RSS flat over hours of calls
    metronome.py  one 20 ms beat per event loop, for every periodic chore of a worker (call-session ticks, the SIP
                  poll)
    sched.py      real-time scheduling for a SIP worker: its 20 ms wake-ups are served before ordinary work (opt-
                  in); and the front's niceness (:func:`renice_group`)
    sdnotify.py   systemd's readiness and watchdog protocol, in a few lines (sd_notify(3), no libsystemd)
    secrets.py    secrets out of sight of other processes: out of the environment and the kernel's copies
    service.py    something that is started and closed, used as ``async with`` (:class:`Service`) or, started and
                  closed by blocking calls, as ``with`` (:class:`SyncService`)
    tracecontext.py  W3C ``traceparent`` for a call's requests (no OpenTelemetry import)
    traces.py     tracing's switch: the ``tracing`` setting; off, nothing of OpenTelemetry is imported
    tracing.py    the OpenTelemetry SDK set up from the ``OTEL_*`` variables, exported over OTLP/HTTP off the call's
                  way: a bounded queue, drops counted, one log line a minute
"""
