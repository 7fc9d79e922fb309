"""What one replayed call produced (:class:`DialectRun`), its expectations, and the verdict of the runs compared
(beta against GA, or each rollout variant against the safe one).

The comparison looks only at what the bridge made of each dialect, in the bridge's own vocabulary
(``bridge.events``): the decoded event sequence with ids, timestamps and audio bytes left out, the phase sequence,
both transcripts, the tool calls, barge-ins and truncates, DTMF, reconnects, errors and how the call ended. Two
dialects that the bridge handles alike give the same normalized call; a dialect table that maps one wire event
wrongly shows up as a named difference, for example::

    event sequence differs at #41: beta AgentTranscript(final) vs GA UnknownEvent(response.output_audio_transcript.done)
    GA: AgentTranscript(final) x0 (beta x2)

Verdicts, per script:

* ``failed``: an expectation failed in either dialect (each named), or the script's declared comparison
  (``compare.verdict`` / ``compare.reasons``) did not hold;
* ``differs``: every expectation holds, but the normalized calls differ (each difference named);
* ``same``: every expectation holds and the normalized calls are equal.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

from bridge import events as ev
from bridge.audio.frames import BEAT_FRAMES, PERIOD_S
from bridge.call.report import noted, noted_all
from bridge.call.state import Phase
from bridge.realtime.dialects import DIALECTS, Capabilities
from bridge.replay.script import CallScript, CompareSpec, Expect
from bridge.replay.timing import DEFAULT_TOLERANCE_MS, CallTiming, call_timing, timing_checks, timing_differences
from bridge.replay.words import answers, word_checks

# Events that carry bookkeeping one dialect has and the other lacks, and that the call session does not act on.
# GA acknowledges every conversation item twice (conversation.item.added, then .done: ItemDone), beta once; GA sends
# rate_limits.updated after response.done, beta after response.created. Both are documented dialect differences
# (docs/protocol.md), not behaviour, so the event comparison leaves them out; the report still shows them.
NEUTRAL_IGNORED: Final = frozenset({"RateLimits", "ItemDone"})
# Notes that are not behaviour: the ringing line (it names the run's own plan) and figures (a latency sample, the
# longest silence growing), whose timing decides when they come. A SIP run's comparable sequence leaves them out.
MEASUREMENTS: Final = frozenset({ev.Latency.kind, ev.LongestSilence.kind, ev.LongestWait.kind, ev.Ringing.kind})
MAX_COUNTS: Final = 6  # count differences listed in one reason
# Real-time runs: barge-ins landing a few frames apart count as equal. Over SIP a worker reads the socket once per
# media beat, so the caller's speech_started is handled up to a beat late in either run, and the truncate says how
# much had played then: two runs can differ by two beats (seen: 120 ms at the default 60 ms beat), plus a frame.
SIP_TRUNCATE_TOLERANCE_MS: Final = float((2 * BEAT_FRAMES + 1) * round(PERIOD_S * 1000))


@dataclass(frozen=True)
class ByDesign:
    """A difference the protocols make, not the bridge: where exactly one of two dialects ``has`` the capability,
    these event kinds (a whole token, or its name before the parenthesis) and, if ``phases`` or ``truncates``, the
    phase sequence or the truncates sent are compared no further; the report names the difference with its
    ``reason``, apart from what differs."""

    has: Callable[[Capabilities], bool]
    kinds: frozenset[str]
    reason: str
    phases: bool = False
    truncates: bool = False  # the truncates the bridge sent are compared no further
    cut_answers: bool = False  # agent transcripts: a cut answer may stop elsewhere, or be only on one side
    agent_lines: bool = False  # agent transcripts: where lines said back to back split is not compared
    timing: frozenset[str] = frozenset()  # caller-felt figures compared no further (bridge/replay/timing.py)
    reply_allowance_ms: float = 0.0  # reply gaps may differ by this much more than the tolerance


_STREAM_KINDS: Final = (
    *("AudioChunk", "AudioDone", "OutputItemAdded", "ResponseStarted", "ResponseDone"),
    *("AgentTranscript", "CallerTranscript", "UsageUpdated", "Closed"),
)
# The one place where the protocols' differences are declared (docs/protocol.md has the capabilities they read).
BY_DESIGN: Final[tuple[ByDesign, ...]] = (
    ByDesign(
        lambda c: c.turn_detection == "none",
        frozenset(
            {"SpeechStarted", "SpeechStopped", "InputCommitted", "InputCleared", "IdleTimeout", "ItemAdded", "ItemDone"}
        ),
        "no speech events: the service marks no turns and keeps no conversation items (turns from transcripts, so "
        "two agent lines said back to back are one turn; with no speech stop marked, no first reply is measured); "
        "no input buffer either, so nothing is cleared of the agent's echo (the model hears it tempered)",
        phases=True,  # the phase machine does not pretend to know when the model will answer
        agent_lines=True,
        timing=frozenset({"first_reply"}),
    ),
    ByDesign(
        lambda c: c.says == "commentary",
        frozenset(),
        "the bridge's own lines (a greeting, an orchestrator's say) are commentary, heard about 0.85 s after they are "
        "sent, where a Realtime response starts at once",
        timing=frozenset({"greeting"}),
        reply_allowance_ms=1000.0,  # a reply the bridge says (an orchestrator's) comes that much later
    ),
    ByDesign(
        lambda c: not c.cancel or not c.truncate,
        frozenset({"ItemTruncated", "ErrorEvent(response_cancel_not_active)"}),
        "no cancel and no truncate: the model stops itself when the caller speaks; the bridge only flushes",
        truncates=True,
    ),
    ByDesign(
        lambda c: c.continuous_output,
        frozenset(_STREAM_KINDS),
        "one continuous output stream (silence included) with transcript deltas only; responses belong to the "
        "delegated backend; usage is session time; the session ends with session.close; an answer cut short (a "
        "barge-in, a lost session, the hang-up) is in the transcript as far as it was said, where a Realtime "
        "response has the text it had generated, or none if it never finished; the stream is never silent, so the "
        "bridge measures no longest silence",
        cut_answers=True,
        timing=frozenset({"longest_silence"}),
    ),
    ByDesign(
        lambda c: c.text_out_of_band,
        frozenset({"AgentText"}),
        "a text answer out of band: a plan's post-call question (summary, disposition, fields) is answered only "
        "where the dialect has one; elsewhere the call's post_call says why there is none",
    ),
)


def by_design(a: str, b: str) -> list[ByDesign]:
    """The declared protocol differences between dialects ``a`` and ``b``."""
    ca, cb = DIALECTS[a].capabilities, DIALECTS[b].capabilities
    return [d for d in BY_DESIGN if d.has(ca) != d.has(cb)]


# The models' own difference, declared once: gpt-realtime-2 and later answer a caller's turn with a short preamble
# and then the answer, two message items in one response, where earlier models say the answer alone. Where one
# run's model says a preamble (DialectRun.preamble, as the emulator plays it) and the other's does not, the
# preamble lines are left out of the agent transcripts, the message stream's events are compared no further, and
# neither are the truncates, nor where an answer was cut (a barge-in lands later in an answer said after a preamble).
# A response with a preamble streams longer, so a caller who speaks a given time into it may find it still streaming
# (the barge-in cancels it) where the same words found the shorter one complete: where a response ends among the
# caller's events and how (completed or cancelled) is compared no further either (how many began still is).
# Between dialects only (each runs its own model); between rollout variants the models are what is compared.
TURN_SHAPE_KINDS: Final = frozenset(
    {"AgentTranscript", "AudioChunk", "AudioDone", "ItemAdded(assistant,message)", "OutputItemAdded(message)"}
    | {"ItemTruncated"}  # a barge-in in a preamble truncates it, and the answer queued after it at 0 ms
    | {ev.OutputItem.kind, ev.AgentSaid.kind}  # the same over SIP, in the session's notes
    | {"ResponseDone", ev.ResponseEnded.kind}  # where a response ends, and how (decoded; in the notes over SIP)
)


def turn_shape(a: DialectRun, b: DialectRun) -> str | None:
    """The by-design reason when the two runs' models shape a turn differently (one says a preamble); else None.
    Runs of two dialects only: where rollout variants are compared, their models are what is compared."""
    if a.preamble == b.preamble or a.variant or b.variant:
        return None
    says, plain = (a, b) if a.preamble else (b, a)
    other = (
        f"{plain.model} a preamble of its own ({plain.preamble!r})"
        if plain.preamble
        else f"{plain.model} the answer alone"
    )
    return (
        f"the model's turn shape: {says.model} answers a caller's turn with a short preamble ({says.preamble!r}) and "
        f"then the answer, two message items in one response; {other}"
    )


def preamble_of(script: CallScript, run: DialectRun) -> str:
    """What the emulator says before each answer of ``run`` (its model, the script's settings for its dialect):
    the emulator's ``preamble`` where the model matches ``preamble_models`` on a Realtime-shaped dialect."""
    from fnmatch import fnmatchcase

    from bridge.emulator.faults import Settings as EmulatorSettings
    from bridge.realtime.dialects import Service

    if (
        run.target != "emulator"
        or run.dialect not in DIALECTS
        or not isinstance(DIALECTS[run.dialect].service, Service)
    ):
        return ""
    told = run.config.get("emulator") if run.config else None  # the run's own, the options' included
    own = script.emulator_settings(0, run.dialect, run.model, run.variant) if told is None else told
    settings = EmulatorSettings().with_values(own)
    patterns = [p.strip() for p in settings.preamble_models.split(",") if p.strip()]
    return settings.preamble if any(fnmatchcase(run.model, p) for p in patterns) else ""


Verdict = Literal["same", "differs", "failed", "error"]
# What a person and a CI gate read per script, worst first: the script could not be loaded (error), an expectation
# failed, the runs differ where nobody said they would, differ only as the script declares, differ only as the
# dialects' capabilities declare, or do not differ.
Status = Literal["error", "failed", "unexpected", "expected", "by_design", "same"]
STATUSES: Final[tuple[Status, ...]] = ("error", "failed", "unexpected", "expected", "by_design", "same")


def label(dialect: str) -> str:
    """How people write a dialect's name ("GA"); a name the tables lack, as it is."""
    return DIALECTS[dialect].label if dialect in DIALECTS else dialect


# --------------------------------------------------------------------------------------------------------------
# Normalized events


# What matters about an event beside its kind, by its type (never ids, times or audio).
_DETAILS: Final[tuple[tuple[Any, Callable[[Any], str]], ...]] = (
    (ev.AgentTranscript | ev.AgentText | ev.CallerTranscript, lambda e: "final" if e.final else "delta"),
    (ev.FunctionCall, lambda e: e.name),
    (ev.ResponseDone, lambda e: str(e.status)),
    (ev.ErrorEvent, lambda e: e.code),
    (ev.UnknownEvent, lambda e: e.type),
    (ev.Closed, lambda e: str(e.error_class or "clean")),
    (ev.ItemAdded, lambda e: f"{e.role},{e.item_type}"),
    (ev.OutputItemAdded, lambda e: str(e.item_type)),
)


def token(event: ev.Event) -> str:
    """The dialect-neutral name of an event: its kind, plus what matters about it (``ResponseDone(completed)``)."""
    detail = next((d for types, d in _DETAILS if isinstance(event, types)), None)
    return event.kind if detail is None else f"{event.kind}({detail(event)})"


def kind_of(tok: str) -> str:
    return tok.split("(", 1)[0]


def collapse(tokens: Sequence[str]) -> list[str]:
    """Runs of the same token as one entry: ``AudioChunk x12``."""
    out: list[str] = []
    run = 0
    for i, tok in enumerate(tokens):
        run += 1
        if i + 1 == len(tokens) or tokens[i + 1] != tok:
            out.append(tok if run == 1 else f"{tok} x{run}")
            run = 0
    return out


# --------------------------------------------------------------------------------------------------------------
# One dialect's run


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


def run_config(plan: Any, dialect: str, model: str, emulator: Mapping[str, Any]) -> dict[str, Any]:
    """What a run was told, as a baseline compares it (``bridge/replay/history.py``): the dialect, model, voice,
    instructions (their text and a digest), greeting, tools and the emulator's settings. ``plan``: its dialplan."""
    instructions = str(plan.profile.instructions or "")
    return {
        "dialect": dialect,
        "model": model,
        "voice": str(plan.profile.voice or ""),
        "instructions": instructions,
        "instructions_sha": hashlib.sha256(instructions.encode()).hexdigest()[:12],
        "greeting": str(plan.greeting or ""),
        "tools": sorted(plan.tool_names),
        "emulator": {k: v for k, v in sorted(emulator.items()) if k != "seed"},
    }


@dataclass
class DialectRun:
    """Everything the report shows and the comparison reads about one script in one dialect.

    Times are milliseconds from the start of the call session (virtual time for ``via: direct``).
    """

    script: str
    dialect: str
    variant: str = ""  # a rollout variant's run (``replay --variants``): its name; else ""
    model: str = ""
    via: str = "direct"
    target: str = "emulator"
    report: dict[str, Any] = field(default_factory=dict)  # CallReport.to_json()
    events: list[tuple[float, str]] = field(default_factory=list)  # decoded bridge events (direct runs)
    caller_spans: list[tuple[float, float, str]] = field(default_factory=list)  # caller speech, keys, hangup
    agent_spans: list[tuple[float, float]] = field(default_factory=list)  # agent audio the caller heard
    reply_gaps_ms: list[float] = field(default_factory=list)  # end of caller speech -> agent audio heard
    runner_failures: list[str] = field(default_factory=list)  # turns whose wait never came true, crashes
    ended_by: str = ""  # caller | agent | transfer, from the phone side
    turns_done: int = 0
    turns_total: int = 0
    duration_ms: float = 0.0
    wall_s: float = 0.0
    checks: list[Check] = field(default_factory=list)
    preamble: str = ""  # what the emulated model says before each answer on this run's model ("": nothing)
    config: dict[str, Any] = field(default_factory=dict)  # what the run was told (:func:`run_config`)
    answers: dict[str, str] = field(default_factory=dict)  # the agent's words by answer (bridge/replay/words.py)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def name(self) -> str:
        """What the run is called in reasons and reports: the variant, else the dialect."""
        return self.variant or self.dialect

    @property
    def tokens(self) -> list[str]:
        """The comparable event sequence: decoded events (direct), else the session's notes (SIP)."""
        if self.events:
            return [t for _, t in self.events if kind_of(t) not in NEUTRAL_IGNORED]
        return [kind for _, kind, _ in self.timeline if kind not in MEASUREMENTS]

    @property
    def timeline(self) -> list[tuple[float, str, str]]:
        """The call's reports as people read them: (ms, kind, summary)."""
        return [(float(t), str(k), str(s)) for t, k, s in self.report.get("timeline", [])]

    def noted(self, cls: type[ev.R]) -> list[tuple[float, ev.R]]:
        """The call's reports of type ``cls``, typed, with their times (ms)."""
        return noted(self.report, cls)

    def noted_all(self, *types: type[ev.Report]) -> list[tuple[float, ev.Report]]:
        """The call's reports of these types (all of them if none is named), typed, in order, with their times."""
        return noted_all(self.report, types)

    @property
    def transfer_targets(self) -> list[str]:
        return [r.target for _, r in self.noted(ev.TransferStarted)]

    @property
    def timing(self) -> CallTiming:
        """What the caller felt, in time (``bridge/replay/timing.py``)."""
        return call_timing(self.caller_spans, self.agent_spans, self.report)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        out["timing"] = self.timing.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DialectRun:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["checks"] = [Check(**c) for c in data.get("checks", [])]
        fields["events"] = [tuple(e) for e in data.get("events", [])]
        fields["caller_spans"] = [tuple(s) for s in data.get("caller_spans", [])]
        fields["agent_spans"] = [tuple(s) for s in data.get("agent_spans", [])]
        return cls(**fields)


# --------------------------------------------------------------------------------------------------------------
# Expectations


def _subset(want: Mapping[str, Any], got: Any) -> bool:
    return isinstance(got, Mapping) and all(k in got and got[k] == v for k, v in want.items())


def _json(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError:
        return text


# A script's bounds on the call's figures (docs/operating.md, *what each figure means*): (bound, report field, name).
FIGURE_BOUNDS: Final = (
    ("max_first_audio_ms", "first_audio_ms", "first audio"),  # the answer -> the agent's first audio, whatever it was
    ("max_greeting_ms", "greeting_ms", "greeting"),  # none (a plan whose caller speaks first) fails the bound
    ("max_first_reply_ms", "first_reply_ms", "first reply"),
)


def check_expectations(expect: Expect, run: DialectRun) -> list[Check]:
    """One :class:`Check` per expectation the script sets, plus the runner's own (turns reached, no crash)."""
    r = run.report
    checks: list[Check] = []
    add = checks.append
    add(Check("turns", not run.runner_failures, "; ".join(run.runner_failures) or f"{run.turns_done} turns"))
    if expect.tool_calls is not None:
        calls = r.get("tool_calls", [])
        names = [c.get("name") for c in calls]
        wanted = [t.name for t in expect.tool_calls]
        problems = [] if names == wanted else [f"called {names or 'nothing'}, expected {wanted or 'nothing'}"]
        for want, got in zip(expect.tool_calls, calls, strict=False):
            if want.arguments is not None and not _subset(want.arguments, _json(got.get("arguments"))):
                problems.append(f"{want.name} arguments {got.get('arguments')} lack {json.dumps(want.arguments)}")
            if want.output is not None and not _subset(want.output, got.get("output")):
                problems.append(f"{want.name} output {json.dumps(got.get('output'))} lacks {json.dumps(want.output)}")
        add(Check("tool_calls", not problems, "; ".join(problems) or ", ".join(map(str, names)) or "none"))
    if expect.transfer_target is not None:
        targets = run.transfer_targets
        add(Check("transfer_target", expect.transfer_target in targets, f"transferred to {targets or 'nobody'}"))
    for bound, figure, what in FIGURE_BOUNDS:
        limit: float | None = getattr(expect, bound)
        if limit is not None:
            value = r.get(figure)
            ok = value is not None and value <= limit
            add(Check(bound, ok, f"{what} {'none' if value is None else f'{value} ms'} (max {limit:g})"))
    for key, transcript in (("caller_keywords", "caller_transcript"), ("agent_keywords", "agent_transcript")):
        words: list[str] = getattr(expect, key)
        if words:
            text = " ".join(r.get(transcript, [])).lower()
            missing = [w for w in words if w.lower() not in text]
            detail = f"missing {missing} in {transcript}" if missing else f"found {words}"
            add(Check(key, not missing, detail))
    if expect.barge_ins is not None:
        got = r.get("barge_ins", 0)
        add(Check("barge_ins", got == expect.barge_ins, f"{got} barge-in(s), expected {expect.barge_ins}"))
    if expect.truncates is not None:
        got = len(r.get("truncates", []))
        add(Check("truncates", got == expect.truncates, f"{got} truncate(s), expected {expect.truncates}"))
    if expect.phases_visited:
        phases = set(r.get("phases", []))
        missing = [p for p in expect.phases_visited if p not in phases]
        add(Check("phases_visited", not missing, f"never {missing}" if missing else f"visited {expect.phases_visited}"))
    if expect.end_reason is not None:
        reason = str(r.get("end_reason", ""))
        ok = expect.end_reason.lower() in reason.lower()
        add(Check("end_reason", ok, f"ended: {reason!r}, expected {expect.end_reason!r}"))
    if expect.ended_by is not None:
        add(
            Check(
                "ended_by",
                run.ended_by == expect.ended_by,
                f"ended by {run.ended_by or '?'}, expected {expect.ended_by}",
            )
        )
    if expect.dtmf is not None:
        got = "".join(r.get("dtmf", []))
        add(Check("dtmf", got == expect.dtmf, f"received {got!r}, expected {expect.dtmf!r}"))
    if expect.reconnects is not None:
        got = r.get("reconnects", 0)
        add(Check("reconnects", got == expect.reconnects, f"{got} reconnect(s), expected {expect.reconnects}"))
    if expect.max_errors is not None:
        errors = r.get("errors", [])
        codes = [e.get("code") for e in errors]
        add(Check("max_errors", len(errors) <= expect.max_errors, f"{len(errors)} error(s) {codes}"))
    return checks


# --------------------------------------------------------------------------------------------------------------
# Beta vs GA


def _short(value: Any, n: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= n else text[: n - 1] + "…"


def _list_diff(what: str, a: Sequence[Any], b: Sequence[Any], la: str, lb: str) -> list[str]:
    if list(a) == list(b):
        return []
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return [f"{what} differs at #{i + 1}: {la} {_short(x)!s} vs {lb} {_short(y)!s}"]
    if len(a) > len(b):
        return [f"{lb}: {what} missing {_short(a[len(b)])} ({la} had {len(a)}, {lb} {len(b)})"]
    return [f"{lb}: {what} has extra {_short(b[len(a)])} ({la} had {len(a)}, {lb} {len(b)})"]


def _tool_diff(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], la: str, lb: str) -> list[str]:
    out: list[str] = []
    na, nb = [c.get("name") for c in a], [c.get("name") for c in b]
    for name in sorted(set(na) | set(nb), key=str):
        ca, cb = na.count(name), nb.count(name)
        if ca > cb:
            out.append(f"{lb}: FunctionCall missing ({la} had {name})" + (f" x{ca - cb}" if ca - cb > 1 else ""))
        elif cb > ca:
            out.append(f"{lb}: extra FunctionCall {name} ({la} had {ca})")
    if not out:
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if _json(x.get("arguments")) != _json(y.get("arguments")):
                out.append(
                    f"tool call #{i + 1} ({x.get('name')}) arguments differ: {la} {x.get('arguments')} vs {lb} "
                    f"{y.get('arguments')}"
                )
            elif x.get("output") != y.get("output"):
                out.append(f"tool call #{i + 1} ({x.get('name')}) output differs")
    return out


def _checks_diff(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], la: str, lb: str) -> list[str]:
    """The plan's compliance checks (``bridge/call/checks.py``) that ``b`` fails and ``a`` passed: newly failed."""
    passed = {c.get("name") for c in a if c.get("passed")}
    return [
        f"{lb}: compliance check {c.get('name')} newly failed: {c.get('detail')} ({la} passed it)"
        for c in b
        if not c.get("passed") and c.get("name") in passed
    ]


def check_rows(runs: Mapping[str, DialectRun]) -> list[dict[str, Any]]:
    """One row per compliance check per run (variant or dialect): check, run, passed, detail."""
    return [
        {"check": c.get("name"), "run": name, "passed": bool(c.get("passed")), "detail": c.get("detail", "")}
        for name, run in runs.items()
        for c in run.report.get("checks", [])
    ]


def _event_diff(a: Sequence[str], b: Sequence[str], la: str, lb: str) -> list[str]:
    """The first position where the sequences part, events only one side has, and count differences."""
    if list(a) == list(b):
        return []
    first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    x = a[first] if first < len(a) else "(end)"
    y = b[first] if first < len(b) else "(end)"
    out = [f"event sequence differs at #{first + 1}: {la} {x} vs {lb} {y}"]
    ca, cb = Counter(a), Counter(b)
    counts: list[str] = []
    for tok in sorted(set(ca) | set(cb)):
        if ca[tok] and not cb[tok]:
            out.append(f"{lb}: {tok} missing ({la} x{ca[tok]})")
        elif cb[tok] and not ca[tok]:
            out.append(f"{lb}: {tok} x{cb[tok]} ({la} had none)")
        elif ca[tok] != cb[tok]:
            counts.append(f"{tok} {ca[tok]}/{cb[tok]}")
    if counts:
        more = f", … ({len(counts) - MAX_COUNTS} more)" if len(counts) > MAX_COUNTS else ""
        out.append(f"event counts differ ({la}/{lb}): " + ", ".join(counts[:MAX_COUNTS]) + more)
    return out


def _cut_alike(a: Sequence[str], b: Sequence[str]) -> list[str]:
    """``b`` with each entry that merely stops earlier or later than ``a``'s (one a prefix of the other: an answer
    interrupted a few words apart) replaced by ``a``'s."""
    out = list(b)
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y and (x.startswith(y.rstrip()) or y.startswith(x.rstrip())):
            out[i] = x
    return out


def _cuts(run: DialectRun) -> int:
    """How many answers of a run may have been cut short: one per barge-in and per lost session, and one if the
    call ended while the agent spoke."""
    r = run.report
    phases = r.get("phases", [])
    ended_speaking = phases[-2:] == [Phase.SPEAKING, Phase.ENDED]
    return int(r.get("barge_ins", 0)) + int(r.get("reconnects", 0)) + int(ended_speaking)


def _spoken_alike(a: Sequence[str], b: Sequence[str], cuts_a: int, cuts_b: int) -> tuple[list[str], list[str]] | None:
    """Agent transcripts compared as what was said (:attr:`ByDesign.cut_answers`). Each side may have up to its
    number of cuts (:func:`_cuts`) of answers that stop earlier than the other side's (a prefix of it) or that the
    other side lacks; anything else is a difference. None: they are alike so; else the two lists, each alike entry
    written as ``a``'s and the extra answers left out, for the usual difference."""

    def cut_of(x: str, y: str) -> bool:  # x stops where y goes on
        return x != y and y.startswith(x.rstrip())

    out_a: list[str] = []
    out_b: list[str] = []
    i = j = 0
    while i < len(a) or j < len(b):
        x, y = (a[i] if i < len(a) else None), (b[j] if j < len(b) else None)
        if x is not None and x == y:
            out_a.append(x)
            out_b.append(x)
            i, j = i + 1, j + 1
        elif y is not None and cuts_b and (x is None or x in b[j + 1 :]):
            cuts_b, j = cuts_b - 1, j + 1  # an answer only b has
        elif x is not None and cuts_a and (y is None or y in a[i + 1 :]):
            cuts_a, i = cuts_a - 1, i + 1
        elif x is not None and y is not None and ((cuts_b and cut_of(y, x)) or (cuts_a and cut_of(x, y))):
            if cut_of(y, x):
                cuts_b -= 1
            else:
                cuts_a -= 1
            out_a.append(x)
            out_b.append(x)
            i, j = i + 1, j + 1
        else:
            return [*out_a, *a[i:]], [*out_b, *b[j:]]
    return None


def _joined(lines: Sequence[str]) -> str:
    return " ".join(" ".join(lines).split())


def compare_runs(a: DialectRun, b: DialectRun, tolerance_ms: float = DEFAULT_TOLERANCE_MS) -> list[str]:
    """Named differences between two runs of the same script (empty: the same call); positions count from 1,
    as the report's lists do. Caller-felt timing (reply gaps,
    barge-in cuts, the longest silence) further apart than ``tolerance_ms`` is a difference too.

    Direct runs are deterministic and compared exactly. A run over real SIP has real-time jitter (one 20 ms frame
    more or less before a barge-in lands, a media beat more or less before it is read), so there a truncate within
    :data:`SIP_TRUNCATE_TOLERANCE_MS` and an interrupted answer cut a few words apart count as equal.
    """
    la, lb = label(a.name), label(b.name)
    ra, rb = a.report, b.report
    realtime = "sip" in (a.via, b.via)
    out: list[str] = []
    designed = by_design(a.dialect, b.dialect) if a.dialect in DIALECTS and b.dialect in DIALECTS else []
    shaped = turn_shape(a, b) is not None
    skip = frozenset().union(*(d.kinds for d in designed), TURN_SHAPE_KINDS if shaped else ())
    ea, eb = ([t for t in run.tokens if t not in skip and t.split("(")[0] not in skip] for run in (a, b))
    out += _event_diff(ea, eb, la, lb)
    if not any(d.phases for d in designed):
        out += _list_diff("phase sequence", ra.get("phases", []), rb.get("phases", []), la, lb)
    out += _list_diff("caller transcript", ra.get("caller_transcript", []), rb.get("caller_transcript", []), la, lb)
    agent_a, agent_b = ra.get("agent_transcript", []), rb.get("agent_transcript", [])
    if shaped:
        preambles = {a.preamble, b.preamble} - {""}
        agent_a, agent_b = ([x for x in lines if x not in preambles] for lines in (agent_a, agent_b))
    if realtime:
        agent_b = _cut_alike(agent_a, agent_b)
    if any(d.agent_lines for d in designed) and _joined(agent_a) == _joined(agent_b):
        agent_b = agent_a  # the same words, split into lines elsewhere
    if shaped or any(d.cut_answers for d in designed):  # a preamble moves where a barge-in cuts the answer
        spoken = _spoken_alike(agent_a, agent_b, _cuts(a), _cuts(b))
        agent_a, agent_b = spoken if spoken is not None else (agent_a, agent_a)
    out += _list_diff("agent transcript", agent_a, agent_b, la, lb)
    out += _tool_diff(ra.get("tool_calls", []), rb.get("tool_calls", []), la, lb)
    out += _checks_diff(ra.get("checks", []), rb.get("checks", []), la, lb)
    for key, what in (("barge_ins", "barge-ins"), ("reconnects", "reconnects"), ("end_reason", "end reason")):
        if ra.get(key) != rb.get(key):
            out.append(f"{what} differ: {la} {ra.get(key)!r} vs {lb} {rb.get(key)!r}")
    if a.ended_by != b.ended_by:
        out.append(f"the call was ended by: {la} {a.ended_by} vs {lb} {b.ended_by}")
    ta = [t.get("audio_end_ms") for t in ra.get("truncates", [])]
    tb = [t.get("audio_end_ms") for t in rb.get("truncates", [])]
    close = len(ta) == len(tb) and all(
        abs(float(x or 0) - float(y or 0)) <= SIP_TRUNCATE_TOLERANCE_MS for x, y in zip(ta, tb, strict=True)
    )
    if ta != tb and not (realtime and close) and not shaped and not any(d.truncates for d in designed):
        out.append(f"truncates (audio_end_ms) differ: {la} {ta} vs {lb} {tb}")
    if ra.get("dtmf", []) != rb.get("dtmf", []):
        out.append(f"DTMF differs: {la} {ra.get('dtmf')} vs {lb} {rb.get('dtmf')}")
    if a.transfer_targets != b.transfer_targets:
        out.append(f"transfer differs: {la} {a.transfer_targets} vs {lb} {b.transfer_targets}")
    ea = [e.get("code") for e in ra.get("errors", [])]
    eb = [e.get("code") for e in rb.get("errors", [])]
    if ea != eb:
        out.append(f"errors differ: {la} {ea} vs {lb} {eb}")
    skip_timing = frozenset().union(*(d.timing for d in designed))
    allowance = max((d.reply_allowance_ms for d in designed), default=0.0)
    out += timing_differences(a.timing, b.timing, la, lb, tolerance_ms, skip=skip_timing, reply_allowance_ms=allowance)
    return out


@dataclass
class ScriptResult:
    """One script across the dialects (or variants) it ran in, with its verdict and its status (:data:`Status`)."""

    script: str
    description: str
    source: str
    digest: str
    runs: dict[str, DialectRun]
    verdict: Verdict = "same"
    comparison: Literal["same", "differs", "n/a"] = "same"
    expected_comparison: str = "same"
    because: str = ""
    failures: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    by_design: list[str] = field(default_factory=list)  # protocol differences declared in BY_DESIGN, not compared
    expected: list[str] = field(default_factory=list)  # the differences the script declares (compare.reasons)
    tolerance_ms: float = DEFAULT_TOLERANCE_MS
    errors: list[str] = field(default_factory=list)  # the script could not be loaded or run: why (file and field)
    pinned: dict[str, str] = field(default_factory=dict)  # answer held to a ``says`` -> its declared change ("")

    @property
    def reasons(self) -> list[str]:
        return [*self.errors, *self.failures, *self.differences]

    @property
    def unexpected(self) -> list[str]:
        return [d for d in self.differences if d not in self.expected]

    @property
    def status(self) -> Status:
        if self.errors:
            return "error"
        if self.failures:
            return "failed"
        if self.unexpected:
            return "unexpected"
        if self.expected:
            return "expected"
        return "by_design" if self.by_design else "same"

    def to_json(self) -> dict[str, Any]:
        return {
            "script": self.script,
            "description": self.description,
            "source": self.source,
            "digest": self.digest,
            "status": self.status,
            "verdict": self.verdict,
            "comparison": self.comparison,
            "expected_comparison": self.expected_comparison,
            "because": self.because,
            "reasons": self.reasons,
            "errors": self.errors,
            "failures": self.failures,
            "differences": self.differences,
            "expected": self.expected,
            "unexpected": self.unexpected,
            "by_design": self.by_design,
            "tolerance_ms": self.tolerance_ms,
            "runs": {d: r.to_json() for d, r in self.runs.items()},
            "compliance": check_rows(self.runs),
            "pinned": dict(self.pinned),
        }


def error_result(source: str, message: str) -> ScriptResult:
    """The row of a script that could not be loaded: its directory's name, the error naming file and field."""
    from pathlib import Path

    path = Path(source)
    name = path.parent.name if path.name.endswith((".yaml", ".yml")) else path.name
    return ScriptResult(name, "", source, "", {}, verdict="error", comparison="n/a", errors=[message])


def _declared(differences: Sequence[str], spec: CompareSpec, explicit: bool) -> list[str]:
    """The differences the script declares: those naming one of ``compare.reasons``, or every one where the script
    says ``differs`` without naming any."""
    if not explicit or spec.verdict != "differs":
        return []
    if not spec.reasons:
        return list(differences)
    return [d for d in differences if any(w.lower() in d.lower() for w in spec.reasons)]


def verdict(
    script: str,
    runs: Mapping[str, DialectRun],
    spec: CompareSpec,
    *,
    description: str = "",
    source: str = "",
    digest: str = "",
    spec_explicit: bool = False,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
) -> ScriptResult:
    """Expectation failures first, then the comparison of every run against the first one (GA against beta, or each
    variant against the safe one, which comes first); each difference is declared by the script (expected) or not
    (unexpected), and the dialects' declared protocol differences are listed apart (by design), with those the
    script declares by design for a dialect (``compare.by_design``, a substring -> the reason; runs per dialect
    only, ``spec_explicit``)."""
    failures = [f"{label(d)}: {c.name}: {c.detail}" for d, run in runs.items() for c in run.checks if not c.ok]
    names = list(runs)
    differences: list[str] = []
    designed: list[str] = []
    for other in names[1:]:
        a, b = runs[names[0]], runs[other]
        mine = spec.by_design.get(b.dialect, {}) if spec_explicit else {}
        for d in compare_runs(a, b, tolerance_ms):
            why = next((reason for words, reason in mine.items() if words.lower() in d.lower()), None)
            if why is None:
                differences.append(d)
            elif (line := f"{label(a.name)}/{label(b.name)}: {why} (the script)") not in designed:
                designed.append(line)
        if a.dialect in DIALECTS and b.dialect in DIALECTS:
            designed += [f"{label(a.name)}/{label(b.name)}: {d.reason}" for d in by_design(a.dialect, b.dialect)]
        shape = turn_shape(a, b)
        if shape is not None:
            designed.append(f"{label(a.name)}/{label(b.name)}: {shape}")
    comparison: Literal["same", "differs", "n/a"] = "n/a" if len(names) < 2 else ("differs" if differences else "same")
    if spec_explicit and comparison != "n/a":
        if comparison != spec.verdict:
            why = f" ({spec.because})" if spec.because else ""
            failures.append(f"compare: expected {spec.verdict}{why}, but beta and GA are {comparison}")
        for wanted in spec.reasons:
            if comparison == "differs" and not any(wanted.lower() in d.lower() for d in differences):
                failures.append(f"compare: no difference names {wanted!r}")
    result: Verdict = "failed" if failures else ("differs" if comparison == "differs" else "same")
    return ScriptResult(
        script=script,
        description=description,
        source=source,
        digest=digest,
        runs=dict(runs),
        verdict=result,
        comparison=comparison,
        expected_comparison=spec.verdict if spec_explicit else "same",
        because=spec.because,
        failures=failures,
        differences=differences,
        by_design=designed,
        expected=_declared(differences, spec, spec_explicit),
        tolerance_ms=tolerance_ms,
    )


def summarize(results: Iterable[ScriptResult]) -> dict[str, int]:
    """Scripts per verdict (same / differs / failed / error) and per status (:data:`STATUSES`)."""
    results = list(results)
    counts = Counter(r.verdict for r in results)
    statuses = Counter(r.status for r in results)
    out = {"same": counts["same"], "differs": counts["differs"], "failed": counts["failed"], "error": counts["error"]}
    out |= {f"status_{s}": statuses[s] for s in STATUSES}
    out["unexpected_differences"] = sum(len(r.unexpected) for r in results)
    out["expected_differences"] = sum(len(r.expected) for r in results)
    out["by_design_differences"] = sum(len(r.by_design) for r in results)
    return out


def _with_timing_bounds(script: CallScript, run: DialectRun) -> None:
    """``run``'s checks with the script's reply-gap bounds (``max_reply_gap_ms`` for all turns or per turn)."""
    bounds = {i: t.max_reply_gap_ms for i, t in enumerate(script.turns) if t.max_reply_gap_ms is not None}
    found = timing_checks(run.timing, script.expect(run.dialect).max_reply_gap_ms, bounds)
    run.checks = [c for c in run.checks if not c.name.endswith("max_reply_gap_ms")]
    run.checks += [Check(name, ok, detail) for name, ok, detail in found]


def _with_word_checks(script: CallScript, run: DialectRun) -> None:
    """``run``'s checks with those of the agent's words (``bridge/replay/words.py``), and its answers by turn."""
    expect = script.expect(run.dialect)
    found = answers(run.report, script.turns, run.caller_spans)
    run.answers = found.to_json()
    checks = word_checks(found, script.turns, expect.greeting, expect.closing_line, expect.agent_never_says)
    names = {name for name, _, _ in checks}
    run.checks = [c for c in run.checks if c.name not in names] + [Check(n, ok, d) for n, ok, d in checks]


def judge(
    script: CallScript, runs: Mapping[str, DialectRun], *, name: str | None = None, tolerance_ms: float | None = None
) -> ScriptResult:
    """The verdict of one script's runs (see :func:`verdict`). A script's declared comparison is about its dialects:
    it applies to runs per dialect only, not to runs per variant (``name`` set: the result's name). The timing
    tolerance: the script's ``compare.timing_tolerance_ms``, else ``tolerance_ms``, else the default."""
    for run in runs.values():
        _with_timing_bounds(script, run)
        _with_word_checks(script, run)
        if run.config and script.production:  # where the plan's calls go in production (a baseline names a move)
            run.config["production"] = script.production
        run.preamble = preamble_of(script, run)
    own = script.model.compare.timing_tolerance_ms
    result = verdict(
        name or script.name,
        runs,
        script.model.compare,
        description=script.model.description,
        source=str(script.source),
        digest=script.digest(),
        spec_explicit="compare" in script.model.model_fields_set and name is None,
        tolerance_ms=own if own is not None else (tolerance_ms if tolerance_ms is not None else DEFAULT_TOLERANCE_MS),
    )
    result.pinned = pinned_answers(script)
    return result


def pinned_answers(script: CallScript) -> dict[str, str]:
    """The answers the script holds to a ``says`` (``greeting``, ``turns[N]``, ``closing``), each with the change
    it declares (its ``changed``, else "")."""
    expect = script.model.expect
    held = {"greeting": expect.greeting, "closing": expect.closing_line}
    held |= {f"turns[{i}]": t.expect for i, t in enumerate(script.turns)}
    return {name: want.changed or "" for name, want in held.items() if want is not None and want.pinned}
