"""``callbridge scripts from-recording REC --out call_scripts/NAME``: a recorded call becomes a call script.

The recording (``bridge.call.recorder``) holds both sides of the call as stereo audio and the session's notes
with times aligned to that audio. From it:

* **Turns**: the caller channel is split by voice activity, with the emulator's energy VAD and its default
  ``server_vad`` knobs (threshold 0.5, 500 ms of silence ends a turn), so each turn WAV is heard as exactly one turn
  when replayed. Each becomes ``turn_NN.wav`` (8 kHz μ-law). Keys pressed (``dtmf`` notes) become DTMF turns, and a
  caller hangup the final turn.
* **Timing**, read off the agent channel: a turn that starts while the agent is talking is a barge-in
  (``barge_in_after_ms`` = agent audio heard in that utterance so far); a turn after the agent spoke waits for it to
  finish (``wait: agent_done`` and the remaining pause); otherwise ``wait: none`` and the pause since the previous
  turn.
* **Annotations**: what the emulator "hears" is the caller transcript of the turn; its reply is the agent transcript
  that followed (spoken for as long as the recorded agent audio), plus the tool call the model made there; the
  agent's first words before any caller turn are the greeting (a greeting the caller spoke over: as far as it went,
  played long enough to be cut again, as an interrupted reply is). A response of several message items (a
  ``gpt-realtime-2`` or later model's preamble, then the answer) replies with its last, the answer: the preamble is
  the recorded model's turn shape, which the replay's model says in its own words or not at all (:func:`preambles`).
  A dropped Realtime socket becomes the emulator fault that drops the same response.
* **The dialplan**, by name: the recorded plan's name where ``dialplans/`` has a plan of that name (what the
  recorded call did differently, e.g. a GA-only field, in ``dialect_overrides`` of the recorded dialect); a plan
  that has no file of its name is written inline (its dialect-only fields moved to ``dialect_overrides``).
* **Expectations**, what the call did: the tool calls with their arguments, the transfer target, DTMF, barge-ins,
  reconnects, who ended the call, and a keyword from each transcript line that is real speech (a placeholder such
  as the emulator's ``[caller speech 1.4 s]``, or a line holding one, gives none) and that the script makes its
  replay say: a turn's ``hears``, the greeting, a reply, the resumed answer. A line the replay's model words its
  own way (a preamble, an idle timeout's prompt, the read-out of a tool's result) gives none: the script replays
  green against the emulator it was written for. What merely happened to hold in this call (no tool call, no
  barge-in, no error, the phases visited, the end reason's words) is left out unless asked (``keep_expectations``,
  ``--keep-expectations``): the script should fail when the call goes wrong, not when it goes otherwise.
"""

from __future__ import annotations

import copy
import enum
import json
import math
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import yaml

from bridge import events as ev
from bridge.audio.frames import FRAME_MS, SAMPLE_RATE
from bridge.audio.vad import EnergyVad, VadKind
from bridge.call.recorder import read_recording, recorded_plan
from bridge.call.state import Phase
from bridge.emulator.faults import Settings as EmulatorSettings
from bridge.errors import ConfigError
from bridge.replay.script import SCRIPT_FILE, load_script
from bridge.replay.sip import heard_spans

SILENCE_MS: Final = 500  # ends a caller turn: the emulator's default silence_duration_ms
LEAD_MS: Final = 100  # audio kept before a turn's onset
TAIL_MS: Final = 150  # and after its last voiced frame
SETTLE_MS: Final = 500  # the script's settle_ms: silence after agent audio that counts as "done"
UTTERANCE_GAP_MS: Final = 200  # as the virtual phone judges an agent utterance
DTMF_MERGE_MS: Final = 600  # digits closer than this are one DTMF turn
INTERRUPTED_MS: Final = 3000  # added to an agent line the caller cut short: it went on past what was heard
# what the header's plan holds beside the plan's own fields: the dialect it ran in and the recorder's digest of it
HEADER_ONLY: Final = frozenset({"dialect", "version"})
WORD: Final = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
PLACEHOLDER: Final = re.compile(r"\[[^\]]*\]")  # "[caller speech 1.4 s]": text standing in for words nobody heard
R = TypeVar("R", bound=ev.Report)


class Act(enum.StrEnum):
    """What the caller did in one stretch of the recording."""

    SAY = "say"
    DTMF = "dtmf"
    HANGUP = "hangup"


@dataclass
class _Segment:
    start: float  # ms in the recording
    end: float
    kind: Act
    digits: str = ""


def caller_segments(pcm: bytes, silence_ms: int = SILENCE_MS) -> list[tuple[float, float]]:
    """Voiced stretches of the caller channel, (start_ms, end_ms) of the speech itself."""
    vad = EnergyVad(SAMPLE_RATE, threshold=0.5, prefix_padding_ms=0, silence_duration_ms=silence_ms)
    events = vad.feed(pcm + bytes(2 * SAMPLE_RATE * (silence_ms + 100) // 1000))
    out: list[tuple[float, float]] = []
    start: float | None = None
    for e in events:
        if e.kind is VadKind.START:
            start = e.ms
        elif start is not None:
            out.append((start, e.ms - silence_ms))
            start = None
    return out


def _keyword(text: str) -> str | None:
    """The longest of the first few words (an interrupted answer still has its first words on replay); none from a
    line that holds a placeholder (:data:`PLACEHOLDER`), nor from an echo of one."""
    if PLACEHOLDER.search(text):
        return None
    words = WORD.findall(text)[:4]
    return max(words, key=len) if words else None


def preambles(notes: Sequence[Note]) -> frozenset[str]:
    """The item ids of agent lines said before another message item of the same response: a preamble
    (``gpt-realtime-2`` and later answer a caller's turn with a short preamble, then the answer, as two message items
    of one response). Whether a replay says one is its model's trait (the emulator's ``preamble_models``), not the
    script's: a reply is the answer alone, and a preamble gives no keyword."""
    out: set[str] = set()
    current: list[str] | None = None  # the agent lines of the response under way
    for note in notes:
        report = note.report
        if isinstance(report, ev.ResponseBegan):
            current = []
        elif isinstance(report, ev.AgentSaid) and current is not None:
            current.append(report.item_id)
        elif isinstance(report, ev.ResponseEnded) and current is not None:
            out.update(current[:-1])
            current = None
    return frozenset(out)


def _tool_args(call: ev.ToolCalled) -> dict[str, Any]:
    """A tool call's arguments object (none: {})."""
    try:
        args = json.loads(call.arguments or "{}")
    except json.JSONDecodeError:
        return {}
    return args if isinstance(args, dict) else {}


def _delta(base: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    """What ``other`` sets differently from ``base`` (nested mappings compared key by key)."""
    out: dict[str, Any] = {}
    for key, value in other.items():
        mine = base.get(key)
        if isinstance(value, Mapping) and isinstance(mine, Mapping):
            inner = _delta(mine, value)
            if inner:
                out[key] = inner
        elif key not in base or value != mine:
            out[key] = copy.deepcopy(value)
    return out


def plan_reference(
    plan: Mapping[str, Any], dialect: str | None, dialplans_dir: Path
) -> tuple[str | dict[str, Any], dict[str, dict[str, Any]]]:
    """A recorded dialplan as a script names it: (its name, and what the recorded call set differently as overrides
    of the recorded dialect) where ``dialplans_dir`` has a plan of that name; else (the plan inline, its dialect-only
    fields as overrides: :func:`split_dialects`)."""
    from bridge.dialplan import load_dialplan
    from bridge.replay.script import DEFAULT_DIALECTS, find_dialplan

    recorded = {k: v for k, v in plan.items() if k not in ("dialect", "rollout")}
    name = recorded.get("name")
    path = find_dialplan(str(name), dialplans_dir) if name else None
    if path is None:
        return split_dialects(recorded)
    # masked as the recorder masked the recorded one: a secret it hid is the named plan's, not a difference
    named = recorded_plan(load_dialplan(path).model_dump(mode="json", exclude={"source_file", "rollout", "dialect"}))
    delta = _delta({k: v for k, v in named.items() if k not in HEADER_ONLY}, recorded)
    if not delta:
        return str(name), {}
    return str(name), {d: delta for d in ([dialect] if dialect in DEFAULT_DIALECTS else DEFAULT_DIALECTS) if d}


def _dialplan(header: Mapping[str, Any], notes: Sequence[Note]) -> str | dict[str, Any] | None:
    """The recorded dialplan: all of it when the recorder stored it (see :func:`plan_reference`), else its name."""
    plan = header.get("dialplan")
    if isinstance(plan, dict):
        return {k: v for k, v in plan.items() if k not in HEADER_ONLY}
    if plan:
        return str(plan)
    return next((r.dialplan for _, r in _notes(notes, ev.Ringing) if r.dialplan), None)


def split_dialects(plan: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A recorded dialplan that one dialect cannot run (a GA-only field such as ``idle_timeout_ms``): the field
    moves out of the shared plan into ``dialect_overrides`` of the dialects that have it."""
    from bridge.errors import DialectFieldError
    from bridge.realtime.dialects import get_dialect
    from bridge.realtime.profile import AgentProfile
    from bridge.replay.script import DEFAULT_DIALECTS

    dialects = {name: get_dialect(name) for name in DEFAULT_DIALECTS}  # the dialects a recorded call replays in

    base: dict[str, Any] = copy.deepcopy(dict(plan))
    overrides: dict[str, dict[str, Any]] = {}
    for _ in range(16):  # each pass moves one field
        failed: tuple[str, list[str]] | None = None
        for name, dialect in dialects.items():
            try:
                dialect.build_session(AgentProfile.model_validate(base.get("profile", {})))
            except DialectFieldError as exc:
                field = exc.field
                path = ["extra", field.removeprefix("session.")] if field.startswith("session.") else field.split(".")
                failed = (name, path)
                break
        if failed is None:
            break
        lacking, path = failed
        node: Any = base.setdefault("profile", {})
        for key in path[:-1]:
            node = node[key]
        value = node.pop(path[-1])
        for name in dialects:
            if name != lacking:
                tree = overrides.setdefault(name, {}).setdefault("profile", {})
                for key in path[:-1]:
                    tree = tree.setdefault(key, {})
                tree[path[-1]] = value
    return base, overrides


def _name(text: str) -> str:
    name = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")[:63]
    return name if name and name[0].isalnum() else f"rec-{name}".strip("-")[:63]


@dataclass(frozen=True, slots=True)
class Note:
    """One line of a recording's event log: when (ms in its audio), and the report it keeps."""

    t_ms: float
    report: ev.Report


def notes_of(lines: Sequence[Mapping[str, Any]]) -> list[Note]:
    """A recording's lines as the reports they keep (:func:`bridge.events.decode`); a line that keeps none is left
    out."""
    out: list[Note] = []
    for line in lines:
        try:
            out.append(Note(float(line.get("t_ms", 0.0)), ev.decode(line)))
        except (ev.UndecodableEntry, TypeError, ValueError):
            continue
    return out


def _notes(notes: Sequence[Note], report: type[R]) -> list[tuple[float, R]]:
    """(ms, report) of each recorded report of one type."""
    return [(n.t_ms, n.report) for n in notes if isinstance(n.report, report)]


def _in(notes: Sequence[Note], report: type[R], start: float, end: float) -> list[tuple[float, R]]:
    return [(t, r) for t, r in _notes(notes, report) if start <= t < end]


def script_from_recording(
    recording: str | Path,
    out: str | Path,
    *,
    name: str | None = None,
    dialplan: str | None = None,
    overwrite: bool = False,
    dialplans_dir: Path | None = None,
    keep_expectations: bool = False,
) -> Path:
    """Write ``out/script.yaml`` and ``out/turn_NN.wav`` from a recording; returns the script file.
    ``keep_expectations``: also what merely held in this call (see the module docstring).

    The new script is loaded back before this returns, so what it writes is a valid script.
    """
    from bridge.replay.script import default_dialplans_dir

    rec, target = Path(recording), Path(out)
    caller, agent, header, lines = read_recording(rec)
    notes = notes_of(lines)
    script_path = target / SCRIPT_FILE
    if script_path.exists() and not overwrite:
        raise ConfigError(str(script_path), "(file)", "exists; pass --force to overwrite")
    plan_name = dialplan or _dialplan(header, notes)
    if plan_name is None:
        raise ConfigError(str(rec), "events.jsonl", "no dialplan in the recording; pass --dialplan")
    agent_spans = heard_spans(agent)
    ended = next(reversed(_notes(notes, ev.CallEnded)), None)
    end_ms = ended[0] if ended else len(caller) / 2 / SAMPLE_RATE * 1000.0
    bridge_hung_up = bool(_notes(notes, ev.LegHungUp))
    transferred = any(r.final and 200 <= r.status_code < 300 for _, r in _notes(notes, ev.TransferUpdate))
    segments = _what_the_caller_did(caller, notes, end_ms, bridge_hung_up)
    data: dict[str, Any] = {
        "name": _name(name or target.name),
        "description": f"Recorded call {header.get('call_id', '')} ({header.get('dialect', '?')}), "
        f"turned into a script from {rec.name}.",
        "dialplan": plan_name,
    }
    if isinstance(plan_name, dict):
        dialect = header.get("dialect")
        plans = dialplans_dir or default_dialplans_dir()
        data["dialplan"], overrides = plan_reference(plan_name, str(dialect) if dialect else None, plans)
        if overrides:
            data["dialect_overrides"] = overrides
    if header.get("called"):
        data["called"] = str(header["called"])
    emulator = _emulator(notes, agent_spans, segments, segments[0].start if segments else end_ms)
    if emulator:
        data["emulator"] = emulator

    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and loaded back there: only a script that loads is moved into place, and a script
    # that does not load leaves nothing behind.
    with tempfile.TemporaryDirectory(prefix=f".{target.name}-", dir=target.parent) as tmp:
        draft = Path(tmp)
        data["turns"] = _turns(segments, caller, notes, agent_spans, end_ms, draft)
        # turns before expectations, as a person writes a script; keywords only from the lines the script scripts
        data["expect"] = _expectations(notes, bridge_hung_up, transferred, keep_expectations, _scripted(data))
        (draft / SCRIPT_FILE).write_text(
            "# Generated by `callbridge scripts from-recording`; edit freely.\n"
            + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110),
            encoding="utf-8",
        )
        try:
            load_script(draft, dialplans_dir)
        except ConfigError as exc:  # something this wrote is invalid: named as the file it would have been
            raise ConfigError(exc.source.replace(str(draft), str(target)), exc.field, exc.message) from None
        target.mkdir(exist_ok=True)
        for file in sorted(draft.iterdir(), key=lambda f: f.name == SCRIPT_FILE):  # the script itself last
            file.replace(target / file.name)
    return script_path


def _what_the_caller_did(caller: bytes, notes: Sequence[Note], end_ms: float, bridge_hung_up: bool) -> list[_Segment]:
    """The caller's speech, keys (pressed close together: one segment) and hang-up, in time order."""
    segments = [_Segment(s, e, Act.SAY) for s, e in caller_segments(caller)]
    for t, key in _notes(notes, ev.KeyPressed):
        digit = key.digit
        last = next((s for s in reversed(segments) if s.kind is Act.DTMF), None)
        if last is not None and t - last.end <= DTMF_MERGE_MS:
            last.digits += digit
            last.end = t
        else:
            segments.append(_Segment(t, t, Act.DTMF, digit))
    if not bridge_hung_up:
        segments.append(_Segment(end_ms, end_ms, Act.HANGUP))
    segments.sort(key=lambda s: (s.start, s.kind is not Act.SAY))
    return segments


def _turns(
    segments: Sequence[_Segment],
    caller: bytes,
    notes: Sequence[Note],
    agent_spans: Sequence[tuple[float, float]],
    end_ms: float,
    target: Path,
) -> list[dict[str, Any]]:
    """One turn per segment; each spoken one's audio written to ``target/turn_NN.wav``."""
    from bridge.audio.wav import write_wav

    caller_texts = [r.text for _, r in _notes(notes, ev.CallerSaid)]
    turns: list[dict[str, Any]] = []
    previous_end = 0.0
    said = 0
    for i, seg in enumerate(segments):
        nxt = segments[i + 1].start if i + 1 < len(segments) else end_ms
        turn: dict[str, Any] = _timing(seg.start, previous_end, agent_spans)
        if seg.kind is Act.SAY:
            file = f"turn_{len(turns) + 1:02d}.wav"
            lo = max(0.0, seg.start - LEAD_MS)
            hi = seg.end + TAIL_MS
            a = round(lo * SAMPLE_RATE / 1000) * 2
            b = round(hi * SAMPLE_RATE / 1000) * 2
            write_wav(target / file, caller[a:b], "ulaw")
            turn["say"] = file
            if said < len(caller_texts) and caller_texts[said]:
                turn["hears"] = caller_texts[said]
            said += 1
            following = segments[i + 1] if i + 1 < len(segments) else None
            reply = _reply(notes, agent_spans, seg.end, nxt, following)
            if reply:
                turn["reply"] = reply
            previous_end = hi
        elif seg.kind is Act.DTMF:
            turn["dtmf"] = seg.digits
            previous_end = seg.end
        else:
            turn["hangup"] = True
        turns.append(turn)
    return turns


def _emulator(
    notes: Sequence[Note],
    agent_spans: Sequence[tuple[float, float]],
    segments: list[_Segment],
    first_start: float,
) -> dict[str, Any]:
    """The script's ``emulator`` section: the greeting the agent said before the caller's first act, and the
    dropped session (with what the agent said on the new one) if the recording lost one."""
    emulator: dict[str, Any] = {}
    first = _greeting_line(notes, first_start)
    if first is not None:
        spans = [(s, e) for s, e in agent_spans if s < first_start]
        greeting: dict[str, Any] = {"text": first.text}
        if spans:
            duration = spans[0][1] - spans[0][0]
            if first_start < spans[0][1] + FRAME_MS:
                duration += INTERRUPTED_MS  # cut short by the caller: it went on; long enough to be cut again
            greeting["duration_ms"] = round(duration)
        emulator["greeting"] = greeting
    drop = _drop_fault(notes)
    if drop:
        emulator["settings"] = drop
        resumed = _resumed(notes, segments)
        if resumed:
            emulator["reconnect_greeting"] = resumed
    return emulator


def _greeting_line(notes: Sequence[Note], first_start: float) -> ev.AgentSaid | None:
    """The agent's first line if it began before the caller's first act: said before it, or said by a response
    that began before it (a line's transcript is noted when the line ends, so a greeting the caller spoke over is
    noted after the caller began)."""
    said = _notes(notes, ev.AgentSaid)
    if not said:
        return None
    began = [t for t, _ in _notes(notes, ev.ResponseBegan)]
    t, line = said[0]
    if t < first_start:
        return line
    if began and began[0] < first_start and t < (began[1] if len(began) > 1 else math.inf):
        return line  # the first response's line, cut short by the caller
    return None


def _timing(start: float, previous_end: float, agent_spans: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """How the caller waited before acting at ``start``: barge-in, after the agent, or a plain pause."""
    talking = [(s, e) for s, e in agent_spans if s <= start < e + FRAME_MS]
    if talking:
        # the utterance: agent spans back to the last gap longer than the virtual phone's utterance gap
        spans = [sp for sp in agent_spans if sp[0] <= start]
        first = len(spans) - 1
        while first > 0 and spans[first][0] - spans[first - 1][1] <= UTTERANCE_GAP_MS:
            first -= 1
        heard = max(FRAME_MS, round(start - spans[first][0]))
        return {"wait": "agent_start", "barge_in_after_ms": int(heard)}
    spoke = [(s, e) for s, e in agent_spans if e > previous_end and e <= start]
    if spoke:
        # agent_done is met at the first silence of SETTLE_MS after agent audio, as the virtual phone judges it
        done = next(
            (e for (_, e), nxt in zip(spoke, [*spoke[1:], (start, start)], strict=True) if nxt[0] - e >= SETTLE_MS),
            spoke[-1][1],
        )
        pause = max(0, round((start - done - SETTLE_MS) / 10) * 10)
        return {"wait": "agent_done", "pause_ms": int(pause)}
    return {"wait": "none", "pause_ms": int(max(0, round((start - previous_end) / 10) * 10))}


def _reply(
    notes: Sequence[Note],
    agent_spans: Sequence[tuple[float, float]],
    start: float,
    end: float,
    nxt: _Segment | None,
) -> dict[str, Any]:
    """The emulator's answer to a spoken turn: what the agent said next, how long, and its tool call."""
    tools = _in(notes, ev.ToolCalled, start, end)
    # An answer cut short by a barge-in is noted when it is cancelled, just after the next turn began.
    late = min(nxt.end, nxt.start + 1500) if nxt is not None and nxt.kind is Act.SAY else end
    cut = tools[0][0] if tools else late
    lost = _in(notes, ev.SessionLost, start, cut)
    if lost:  # the answer died with the socket: its words never arrived (the resumed answer is not this reply)
        cut = lost[0][0] - 1
    said = _in(notes, ev.AgentSaid, start, cut + 1)
    skipped = preambles(notes)
    answers = [(t, r) for t, r in said if r.item_id not in skipped]
    reply: dict[str, Any] = {}
    if said:
        reply["text"] = (answers or said)[0][1].text  # the answer after a preamble: the replay's model says its own
        spans = [(s, e) for s, e in agent_spans if start <= s < end]
        if spans:
            duration = spans[0][1] - spans[0][0]
            if nxt is not None and nxt.kind is Act.SAY and nxt.start < spans[0][1] + FRAME_MS:
                duration += INTERRUPTED_MS  # interrupted: the original answer went on; long enough to interrupt
            reply["duration_ms"] = round(duration)
    if tools:
        call = tools[0][1]
        reply["tool_call"] = {"name": call.name, "arguments": _tool_args(call)}
        after = [(t, r) for t, r in _in(notes, ev.AgentSaid, tools[0][0], end) if r.item_id not in skipped]
        if after:  # what the model said once the tool's result was back
            reply["after_tool"] = after[0][1].text
    return reply


def _resumed(notes: Sequence[Note], segments: Sequence[_Segment]) -> dict[str, Any] | None:
    """What the agent said on the new session before the caller's next turn: the resumed answer."""
    lost = _notes(notes, ev.SessionLost)
    if not lost:
        return None
    t = lost[0][0]
    nxt = next((s.start for s in segments if s.start > t), math.inf)
    said = _in(notes, ev.AgentSaid, t, nxt)
    return {"text": said[0][1].text} if said else None


def _drop_fault(notes: Sequence[Note]) -> dict[str, Any]:
    """A socket lost mid-response, as the emulator fault that reproduces it.

    The number of deltas the lost response delivered is read off the time between its first audio and the loss, at
    the emulator's default pace (audio arrives faster than it plays, so the audio heard cannot tell).
    """
    index = next((i for i, n in enumerate(notes) if isinstance(n.report, ev.SessionLost)), None)
    if index is None:
        return {}
    before = list(notes[:index])
    t = notes[index].t_ms
    started = [i for i, n in enumerate(before) if isinstance(n.report, ev.ResponseBegan)]
    if not started:
        return {"drop_after_s": round(t / 1000.0, 2)}
    # the lost response's first audio: the call's phase turned SPEAKING after it began
    first_audio = next(
        (at for at, r in _notes(before[started[-1] :], ev.PhaseChanged) if r.new == Phase.SPEAKING), None
    )
    if first_audio is None:
        return {"drop_mid_response": len(started), "fault_after_deltas": 1}
    pace = EmulatorSettings()
    sent = int((t - first_audio) * max(pace.speed, 1e-9) / pace.delta_ms) + 1
    return {"drop_mid_response": len(started), "fault_after_deltas": max(1, sent)}


@dataclass(frozen=True, slots=True)
class _Lines:
    """The transcript lines a script makes its replay say: what the emulator hears (each turn's ``hears``) and
    what it answers (the greeting, each reply's text, the resumed answer)."""

    caller: frozenset[str]
    agent: frozenset[str]


def _scripted(data: Mapping[str, Any]) -> _Lines:
    """The lines of a script's ``emulator`` section and turns (:class:`_Lines`)."""
    emulator = data.get("emulator", {})
    agent = [(emulator.get(key) or {}).get("text") for key in ("greeting", "reconnect_greeting")]
    agent += [(turn.get("reply") or {}).get(key) for turn in data.get("turns", []) for key in ("text", "after_tool")]
    caller = [turn.get("hears") for turn in data.get("turns", [])]
    return _Lines(frozenset(t for t in caller if t), frozenset(t for t in agent if t))


def _expectations(
    notes: Sequence[Note], bridge_hung_up: bool, transferred: bool, keep: bool = False, lines: _Lines | None = None
) -> dict[str, Any]:
    """What the call did (always), and with ``keep`` what merely held in it (see the module docstring). Keywords
    come from the transcript lines in ``lines`` (all lines without it): a line the script does not make the replay
    say (a preamble, an idle timeout's prompt, the read-out of a tool's result: the replay's model words those its
    own way) is no expectation of the script's."""
    expect: dict[str, Any] = {}
    tools = _notes(notes, ev.ToolCalled)
    if tools or keep:
        expect["tool_calls"] = [{"name": r.name, "arguments": _tool_args(r)} for _, r in tools]
    targets = [r.target for _, r in _notes(notes, ev.TransferStarted)]
    if targets:
        expect["transfer_target"] = targets[0]
    said = {
        "caller_keywords": [r.text for _, r in _notes(notes, ev.CallerSaid) if lines is None or r.text in lines.caller],
        "agent_keywords": [r.text for _, r in _notes(notes, ev.AgentSaid) if lines is None or r.text in lines.agent],
    }
    for key, texts in said.items():
        words = [w for w in map(_keyword, texts) if w]
        if words:
            expect[key] = list(dict.fromkeys(words))
    barge_ins = len(_notes(notes, ev.BargeIn))
    if barge_ins or keep:
        expect["barge_ins"] = barge_ins
    digits = "".join(r.digit for _, r in _notes(notes, ev.KeyPressed))
    if digits:
        expect["dtmf"] = digits
    reconnects = len(_notes(notes, ev.Recovered))
    if reconnects:
        expect["reconnects"] = reconnects
    phases = {r.new for _, r in _notes(notes, ev.PhaseChanged)}
    if keep:
        expect["phases_visited"] = [str(p) for p in Phase if p in phases and p not in (Phase.IDLE, Phase.ENDED)]
    expect["ended_by"] = ("transfer" if transferred else "agent") if bridge_hung_up else "caller"
    if keep and not bridge_hung_up:
        expect["end_reason"] = "caller hung up"
    elif keep and transferred:
        expect["end_reason"] = "transferred"
    errors: list[tuple[float, ev.Report]] = [
        (t, r) for t, r in _notes(notes, ev.ServiceError) if r.code != "response_cancel_not_active"
    ]
    errors += _notes(notes, ev.SessionLost)
    if keep and not errors:
        expect["max_errors"] = 0
    return expect
