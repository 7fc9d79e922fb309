"""One call, from the answer to its record: the session (one asyncio task a call) that joins the phone leg,
the audio path and the model's session, and the parts it is made of. The phases are a table (:mod:`.core`,
:mod:`.state`); the parts get one frozen record (:mod:`.parts`). ``docs/call.md`` draws it.

::

    acts.py           the call's own acts, as its parts see them (the collaborators each part uses)
    bargein.py        barge-in: the caller speaks (or presses a key) over the agent
    builtin_tools.py  tools the call session carries out itself: what each one answers the model, and what it does
                      to the call
    changes.py        when a call's model session changes: lost and recovered, capped and swapped, failed over
    checks.py         the plan's compliance checks (QA's scorecard, ``checks:`` in a dialplan) evaluated on one
                      call's report, pure
    closing.py        the call's end: its sessions, tools and orchestrator closed, the post-call questions asked,
                      the usage and the playout totalled, the checks reported and ``CallEnded`` emitted, in that
                      order
    consent.py        a recorded call's consent prompt, played by the bridge at the answer: the recording starts
                      at its end, and the call's report says what became of it
    core.py           the call's sans-I/O core: everything a call can be doing, and one table of how each changes
    echo.py           the echo guard at work on one call: the agent's own audio coming back down the caller's line
                      is not a barge-in
    flow.py           the asyncio side of the call's core: each trigger in with its time, each effect carried out
    inbox.py          the call's one queue of events (Realtime and telephone), with the caller's interrupts first,
                      and the table of their handlers
    latency.py        the latency budget of one call, sampled as it goes (the segments are listed in
                      ``bridge.metrics``)
    leg.py            the telephone leg as the call session sees it
    limit.py          A dialplan's bound on a call's length (``max_call_s``): the caller hears a goodbye, then the
                      bridge hangs up
    link.py           the call's link to its current Realtime session: which session it is, how its events reach the
                      call, and the caller's audio sent to it
    media.py          which way a call's audio goes, both directions, chosen once per call (drawn in
                      ``docs/media.md``)
    opening.py        the call as it is answered: the model's session opened while the phone rings, the media
                      started
    options.py        what a call session is told beyond its leg, plan, dialect and connector: its clock, its
                      listeners, how it reconnects, and what its worker wants to hear of it
    orchestration.py  an orchestrated call (a dialplan with ``orchestrator``): the model is the ears and the voice,
                      the contact center's own service decides what is said (``docs/orchestrator.md``)
    outage.py         an outage: the model is away (its session lost, or never opened at the answer)
    parts.py          the parts of one call, built once and handed as one frozen record to what acts on the call
    peer.py           how the caller's side ended the call when its BYE or CANCEL said more (its Reason, RFC 3326)
    perform.py        what the call does on each action of its table and on each beat of its media clock
    playback.py       the agent's side of a call: the response under way, its audio converted into the playout
                      buffer (which the media clock thread drains every 20 ms), and the cut of a barge-in
    postcall.py       the post-call question and its answer, pure: summary, disposition, the plan's fields
    privacy.py        personal data out of stored and shown artifacts (a dialplan's ``privacy`` section,
                      :class:`bridge.dialplan.Privacy`)
    reactions.py      how a call reacts to what the model and the caller's telephone tell it: speech, transcripts,
                      responses, tool calls, keys, errors and hang-ups
    recorder.py       call recording: a :class:`RecordingLeg` around any phone leg writes what both sides said,
                      aligned with the events
    recovery.py       recovery: a call whose Realtime session was lost gets a new one, and the caller is not left in
                      dead air
    report.py         what happened on one call (:class:`CallReport`): the demo prints it, replays compare it, Redis
                      keeps a summary of it
    retry.py          reconnect policy as pure functions: how long to wait, and what to do next
    rollover.py       rollover: the service caps one session's length (``session_expired``, then a close); a long
                      call moves to a new session before that, at a turn boundary, without the caller noticing
    session.py        one call's orchestration: the phone leg, the audio path and one Realtime session, as one
                      asyncio task
    state.py          the phases of one call, as a transition table with one logged setter (like h11's
                      ``_state.py``)
    supervision.py    A supervisor's actions on a live call (:class:`bridge.events.SupervisorAction`, from the
                      console or the API through ``bridge.serve.actions``), carried out by the call's session
    takeover.py       take-over's leg: a :class:`TakeOverLeg` around the phone leg puts a supervisor's voice in
                      place of the agent's
    tap.py            listen-in's tap: a :class:`ListenTap` around any phone leg copies both sides of the call while
                      a supervisor listens
    toolcalls.py      the call session's side of tool calls (``bridge.call.builtin_tools`` says what each tool
                      answers and does)
    transcripts.py    both sides' transcripts of a call, and the caller turns still waiting for theirs
    turns.py          caller and agent turns rebuilt from transcript deltas, for a dialect whose service marks none
    usage.py          what one call used of the model service, for its cost: audio time or tokens, per the dialect
    waiting.py        no dead air while the call waits on something (a business tool, an orchestrator): a filler
                      line, then soft hold audio
    warm.py           A warm transfer (the plan's ``transfer: {mode: warm}``): the agent stays until a human has
                      taken the call
    wrapup.py         after the call: the post-call question to the call's own model session
                      (``bridge/call/postcall.py`` says what is asked and how the answer is read)

The call imports no pjsua2 (the leg is :mod:`bridge.sip`'s) and no Redis client (the worker hands it a writer).
"""
