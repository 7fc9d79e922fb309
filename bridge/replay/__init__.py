"""QA replays: call scripts through the real call session in every dialect or rollout variant, compared, with
a report (text, HTML, JSON, JUnit).

::

    cli.py             ``callbridge replay`` and ``callbridge scripts``
    compare.py         what one replayed call produced (:class:`DialectRun`), its expectations, and the verdict of
                       the runs compared (beta against GA, or each rollout variant against the safe one)
    direct.py          ``--via direct``: the real call session, a virtual phone and the emulator in one process, in
                       virtual time
    emulation.py       the emulator's settings per model and per rollout variant: a script's ``model_settings`` and
                       ``variant_settings``, ``replay --emulator-set [SCOPE:]NAME=VALUE``
    drift.py           each answer against the baseline's: a similarity, and the changes that flip meaning named
                       (a negation, a number, time, price, date or name); a changed pinned answer red unless declared
    echoset.py         the echo set (``call_scripts/echo/``) scored: callers on lines that return the agent's audio,
                       some of whom interrupt the agent
    gate.py            whether a run passes, each red reason in one line: a removed script, a prompt or voice change
                       the emulator cannot judge, and the accepts that let them through (recorded)
    from_recording.py  ``callbridge scripts from-recording REC --out call_scripts/NAME``: a recorded call becomes a
                       call script
    grader.py          ``replay --grader-model``: ``means``, ``must_not_mean`` and ``rubric`` judged by a text model
                       through the Responses API (against the emulator, its rule)
    history.py         replay over time: a run compared with an earlier one (``--baseline DIR``), and an index of
                       past runs (``--history DIR``)
    junit.py           ``replay --junit FILE``: the results as JUnit XML, for CI systems that show test reports
    orchestrator.py    the replay's orchestrator: a call script's ``orchestrator.answers``, served in order
                       (``call_scripts/README.md``)
    report.py          the replay report: ``report.json`` for tools and ``report.html`` for people
    script.py          the call-script format: one directory per script, ``script.yaml`` plus the caller's audio as
                       8 kHz G.711 WAVs
    sip.py             ``--via sip``: the same scripts as real phone calls into a running ``callbridge serve``
    timing.py          what a caller feels of a replayed call, in time: each turn's reply gap, the longest silence
    words.py           what the agent said aloud, answer by answer (JSON read out cut away), and the script's
                       expectations on it: per turn, the greeting, the closing line, never said
    variants.py        ``callbridge replay --variants DIALPLAN[,DIALPLAN]``: every script through each variant of a
                       rollout dialplan, each variant compared with the safe one
    virtual.py         virtual time for replays: an asyncio event loop whose clock jumps to the next timer when
                       nothing is ready

The scripts themselves live in ``call_scripts/`` (its README documents the format).
"""
