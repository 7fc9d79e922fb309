"""QA replays: call scripts through the real call session in both dialects, compared, with a report.

::

    script.py          the call-script format (pydantic), loading with errors naming file and dotted field
    virtual.py         an asyncio event loop on a virtual clock (jumps to the next timer when nothing is ready)
    direct.py          --via direct: CallSession + a virtual phone + the sans-I/O emulator in memory, virtual time
    sip.py             --via sip: softphone calls into `callbridge serve`, the worker's per-call reports
    compare.py         one dialect's run, its expectations, the beta-vs-GA comparison and the verdict
    report.py          report.json and a self-contained report.html
    recorder.py        RecordingLeg: stereo WAV (caller | agent) + the session's notes, aligned
    from_recording.py  a recording becomes a call script (turns by voice activity, timing, annotations)
    cli.py             `callbridge replay` (main) and `callbridge scripts` (scripts_main)

The scripts themselves live in ``call_scripts/`` (its README documents the format).
"""
