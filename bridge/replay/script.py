"""The call-script format: one directory per script, ``script.yaml`` plus the caller's audio as 8 kHz G.711 WAVs.

A script says what the caller does, turn by turn and in time (wait for the agent to start or finish, pause, barge
in after N ms of agent audio, speak a WAV, press keys, hang up), what the bridge must have done by the end
(expectations), how beta and GA are expected to compare, and, for deterministic runs against the emulator, what
the emulator "hears" in each spoken turn and how it replies. ``call_scripts/README.md`` documents every field.

Loading validates everything up front, and every error names the file and the dotted field::

    call_scripts/transfer/script.yaml: turns[2].barge_in_after_ms: Input should be greater than 0

Caller audio must be 8 kHz mono G.711 (WAVE format tag 7, μ-law, or 6, A-law; ITU-T G.711, RFC 3551 §4.5.14):
what a phone line carries, so a script replays the same bytes through the direct runner and through real SIP.
"""

from __future__ import annotations

import copy
import json
import re
import struct
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bridge.audio.frames import SAMPLE_RATE
from bridge.dialplan import Dialplan, deep_merge, field_path, load_dialplan
from bridge.emulator.annotations import Annotations
from bridge.emulator.faults import Settings as EmulatorSettings
from bridge.errors import ConfigError
from bridge.orchestrator.models import Action, Decision
from bridge.realtime.dialects import DIALECTS, Service
from bridge.rollout.policy import RolloutSpec, Variant, compatible_voice

SCRIPT_FILE: Final = "script.yaml"
DIALECT_NAMES: Final = tuple(DIALECTS)  # a script builds a plan for each
# What a replay runs unless told otherwise: the dialects of the Realtime shape, where a script's turns are the
# service's turns (Live takes turns itself).
DEFAULT_DIALECTS: Final = tuple(name for name, d in DIALECTS.items() if isinstance(d.service, Service))
G711_TAGS: Final = {6: "A-law", 7: "μ-law"}  # WAVE_FORMAT_ALAW, WAVE_FORMAT_MULAW
WAVE_FORMAT_EXTENSIBLE: Final = 0xFFFE
DTMF_PATTERN: Final = r"^[0-9*#A-Da-d]+$"  # RFC 4733 §3.2 events 0-15
if TYPE_CHECKING:
    DialectName = str
else:
    DialectName = Literal[DIALECT_NAMES]  # pydantic checks a script's dialect keys against the tables


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------------------------
# Emulator annotations (bridge/emulator/annotations.py), as the script spells them


class ToolCallSpec(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    arguments: dict[str, Any] = Field(default_factory=dict)


class ReplySpec(_Strict):
    """How the emulator answers a turn: spoken text (a tone as long as the text, unless ``wav``), a tool call."""

    text: str | None = None
    tone_hz: float | None = Field(None, gt=0, lt=4000)
    duration_ms: float | None = Field(None, gt=0, le=60_000)
    silence: bool = False
    wav: str | None = None  # mono PCM16 WAV, relative to the script directory
    tool_call: ToolCallSpec | None = None
    after_tool: str | None = None  # with tool_call: what the model says once the tool's result is back

    @model_validator(mode="after")
    def _after_a_tool(self) -> ReplySpec:
        if self.after_tool is not None and self.tool_call is None:
            raise ValueError("after_tool is said once a tool's result is back: it needs tool_call")
        return self

    @model_validator(mode="before")
    @classmethod
    def _text_shorthand(cls, value: Any) -> Any:
        return {"text": value} if isinstance(value, str) else value


class EmulatorSpec(_Strict):
    settings: dict[str, Any] = Field(default_factory=dict)  # names of bridge.emulator.faults.Settings / Faults
    greeting: ReplySpec | None = None  # the reply to a response.create before any caller turn
    # the same for each reconnected session (the bridge may ask the model to resume a cut-off answer)
    reconnect_greeting: ReplySpec | None = None
    faults_on_reconnect: bool = False  # faults apply to the first connection only, unless this is set
    # settings for the runs in one dialect only, over ``settings`` (e.g. ga: {delay_first_delta_ms: 2000})
    dialect_settings: dict[DialectName, dict[str, Any]] = Field(default_factory=dict)
    # settings for the runs of one model (a name or fnmatch pattern) or rollout variant, over the dialect's
    # (bridge/replay/emulation.py): e.g. model_settings: {gpt-realtime-2.1-mini: {response_latency_ms: 8150}}
    model_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    variant_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("settings")
    @classmethod
    def _known_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        EmulatorSettings().with_values(value)  # raises ValueError naming the setting
        return value

    @field_validator("dialect_settings", "model_settings", "variant_settings")
    @classmethod
    def _known_scoped_settings(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from bridge.replay.emulation import check_settings

        check_settings(value)  # raises ValueError naming the scope and the setting
        return value


# --------------------------------------------------------------------------------------------------------------
# What the agent says (bridge/replay/words.py matches it on what was said aloud)


class Said(_Strict):
    """A phrase (its words in order, whole words, case and punctuation aside) or a ``pattern`` (a regular
    expression, case-insensitive); a plain string is a phrase."""

    phrase: str | None = None
    pattern: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _phrase_shorthand(cls, value: Any) -> Any:
        return {"phrase": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one(self) -> Said:
        if (self.phrase is None) == (self.pattern is None):
            raise ValueError("give a phrase (a string) or {pattern: REGEX}")
        if self.phrase is not None and not re.search(r"\w", self.phrase):
            raise ValueError(f"a phrase needs a word, not {self.phrase!r}")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a regular expression: {exc}") from None
        return self

    def __str__(self) -> str:
        return repr(self.phrase) if self.phrase is not None else f"/{self.pattern}/"


def _statement(value: Any) -> str:
    """A statement a grader judges (``means``, ``must_not_mean``, ``rubric``): one line of words."""
    if not isinstance(value, str):
        raise ValueError(f"a statement is a string, not {type(value).__name__}")
    text = " ".join(value.split())
    if not re.search(r"\w", text):
        raise ValueError(f"a statement needs a word, not {value!r}")
    if len(text) > MAX_STATEMENT:
        raise ValueError(f"a statement is at most {MAX_STATEMENT} characters, not {len(text)}")
    return text


MAX_STATEMENT: Final = 300
Statement = Annotated[str, BeforeValidator(_statement)]


def _one_or_more(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Statements = Annotated[list[Statement], BeforeValidator(_one_or_more)]


class AgentSays(_Strict):
    """What the agent must say (each of ``says``) and must never say (any of ``never_says``) in one answer, what
    it must mean (each of ``means``) and must not mean (any of ``must_not_mean``: judged by the grader,
    ``bridge/replay/grader.py``); ``changed``: why this answer differs from the baseline's on purpose
    (``bridge/replay/drift.py``)."""

    says: list[Said] = Field(default_factory=list)
    never_says: list[Said] = Field(default_factory=list)
    means: Statements = Field(default_factory=list)
    must_not_mean: Statements = Field(default_factory=list)
    changed: str | None = Field(None, min_length=1)

    @property
    def pinned(self) -> bool:
        return bool(self.says)


# --------------------------------------------------------------------------------------------------------------
# The caller's turns

Wait = Literal["agent_start", "agent_done", "none"]


class Turn(_Strict):
    """One thing the caller does. Order inside a turn: wait, pause, then speak / press keys, then hang up."""

    wait: Wait = "agent_done"
    timeout_ms: int = Field(20_000, gt=0)  # a wait that is not met by then fails the run (the agent never spoke)
    pause_ms: int = Field(0, ge=0)
    barge_in_after_ms: int | None = Field(None, gt=0)  # with wait agent_start: after this much agent audio heard
    say: str | None = None  # 8 kHz G.711 WAV, relative to the script directory
    dtmf: str | None = Field(None, pattern=DTMF_PATTERN)
    dtmf_gap_ms: int = Field(120, gt=0)  # between digits
    hangup: bool = False
    max_reply_gap_ms: float | None = Field(None, gt=0)  # the agent's first audio at most this long after ``say``
    hears: str | None = None  # annotation: what the emulator transcribes for ``say``
    reply: ReplySpec | None = None  # annotation: how the emulator answers ``say``
    expect: AgentSays | None = None  # what the agent says in answer to this turn (before the caller acts again)
    note: str = ""  # for people: what this turn is about

    @model_validator(mode="before")
    @classmethod
    def _barge_in_waits_for_start(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and value.get("barge_in_after_ms") is not None and "wait" not in value:
            return {**value, "wait": "agent_start"}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Turn:
        if self.say is None and self.dtmf is None and not self.hangup:
            raise ValueError("a turn needs at least one of say, dtmf, hangup")
        if self.barge_in_after_ms is not None and self.wait != "agent_start":
            raise ValueError("barge_in_after_ms needs wait: agent_start")
        if self.say is None and (self.hears is not None or self.reply is not None):
            raise ValueError("hears and reply annotate spoken audio: they need say")
        if self.say is None and self.max_reply_gap_ms is not None:
            raise ValueError("max_reply_gap_ms bounds the answer to spoken audio: it needs say")
        if self.expect is not None and self.say is None and self.dtmf is None:
            raise ValueError("expect is about the answer to this turn: a hang-up gets none (expect.closing_line)")
        return self


# --------------------------------------------------------------------------------------------------------------
# Expectations and the comparison


class ToolExpect(_Strict):
    name: str
    arguments: dict[str, Any] | None = None  # these keys with these values (others may be present)
    output: dict[str, Any] | None = None  # same, for the function_call_output the bridge sent


PhaseName = Literal["IDLE", "LISTENING", "THINKING", "SPEAKING", "CANCELLING", "RECOVERING", "ENDED"]


class Expect(_Strict):
    """What must hold at the end of the call. Every field is optional; an unset field is not checked."""

    tool_calls: list[ToolExpect] | None = None  # exactly these calls, in order ([] = no tool call)
    transfer_target: str | None = None
    max_first_audio_ms: float | None = Field(None, gt=0)  # the answer -> the agent's first audio, whatever it was
    max_greeting_ms: float | None = Field(None, gt=0)  # the greeting (an agent-first plan's; none fails)
    max_first_reply_ms: float | None = Field(None, gt=0)  # the first reply: the caller stops -> the agent answers
    max_reply_gap_ms: float | None = Field(None, gt=0)  # every spoken turn answered (first audio heard) within this
    caller_keywords: list[str] = Field(default_factory=list)  # case-insensitive, in the caller transcript
    agent_keywords: list[str] = Field(default_factory=list)  # case-insensitive, in the agent transcript
    barge_ins: int | None = Field(None, ge=0)
    truncates: int | None = Field(None, ge=0)
    phases_visited: list[PhaseName] = Field(default_factory=list)
    end_reason: str | None = None  # substring of the session's end reason
    ended_by: Literal["caller", "agent", "transfer"] | None = None  # who ended the call, as the caller's phone saw it
    dtmf: str | None = Field(None, pattern=DTMF_PATTERN)  # digits the session received, in order
    reconnects: int | None = Field(None, ge=0)
    max_errors: int | None = Field(None, ge=0)
    greeting: AgentSays | None = None  # the agent's lines before the caller first acts
    closing_line: AgentSays | None = None  # the agent's last line of the call
    agent_never_says: list[Said] = Field(default_factory=list)  # in any line of the agent's

    def merged(self, other: Expect | None) -> Expect:
        """``self`` with the fields ``other`` sets replaced (lists of keywords and phases are added)."""
        if other is None:
            return self
        data = self.model_dump()
        for key in other.model_fields_set:
            value = getattr(other, key)
            if key in {"caller_keywords", "agent_keywords", "phases_visited", "agent_never_says"}:
                data[key] = [*data[key], *(v.model_dump() if isinstance(v, BaseModel) else v for v in value)]
            else:
                data[key] = value.model_dump() if isinstance(value, BaseModel) else copy.deepcopy(value)
                if key == "tool_calls" and value is not None:
                    data[key] = [t.model_dump() for t in value]
        return Expect.model_validate(data)


class CompareSpec(_Strict):
    """How beta and GA are expected to compare: ``same``, or ``differs`` for a known, documented difference."""

    verdict: Literal["same", "differs"] = "same"
    reasons: list[str] = Field(default_factory=list)  # substrings that some difference must contain
    because: str = ""  # for people: why the dialects differ here
    timing_tolerance_ms: float | None = Field(None, ge=0)  # timing figures closer than this are alike
    # per dialect, what differs by design in its runs against the first dialect's: a substring of the difference ->
    # the reason (listed by design with it, not compared; runs per dialect only, not per variant)
    by_design: dict[DialectName, dict[str, str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _reasons_need_differs(self) -> CompareSpec:
        if self.reasons and self.verdict != "differs":
            raise ValueError("reasons name expected differences: they need verdict: differs")
        return self


class ScriptedAnswer(_Strict):
    """One answer of the replay's orchestrator (``bridge/replay/orchestrator.py``), to the request of the same rank:
    a decision (the fields of ``bridge.orchestrator.models.Decision``), sent ``delay_ms`` after the request, and
    optionally what that request must be about."""

    action: Action
    text: str | None = None
    instructions: str | None = None
    digits: str | None = None
    target: str | None = None
    delay_ms: int = Field(0, ge=0, le=60_000)  # past the plan's timeout_ms: the filler; past give_up_ms: the failover
    expect_turn: str | None = None  # the request's turn (the caller's words) must be exactly this
    expect_event: Literal["turn", "dtmf"] | None = None  # the request must be prompted by this

    @model_validator(mode="after")
    def _a_decision(self) -> ScriptedAnswer:
        try:
            self.decision()
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"{where + ': ' if where else ''}{err['msg'].removeprefix('Value error, ')}") from None
        return self

    def decision(self) -> Decision:
        fields = self.model_dump(include={"action", "text", "instructions", "digits", "target"}, exclude_none=True)
        return Decision.model_validate(fields)


class OrchestratorSpec(_Strict):
    """The orchestrator of an orchestrated plan, as the replay plays it: its answers, in order."""

    answers: list[ScriptedAnswer] = Field(min_length=1)


class TransferSpec(_Strict):
    """How the (virtual) phone network answers the bridge's REFER: NOTIFY 100 Trying, then this final status."""

    status: int = Field(200, ge=200, le=699)
    delay_ms: int = Field(300, ge=0)


class LineSpec(_Strict):
    """The caller's line returns what the caller hears (a hybrid, a speakerphone): ``echo_db`` down (the echo
    return loss), ``echo_delay_ms`` late, with white noise at ``noise_dbfs`` (None: a quiet line)."""

    echo_db: float = Field(ge=-60, le=0)
    echo_delay_ms: float = Field(ge=0, le=1000)
    noise_dbfs: float | None = Field(None, ge=-90, le=-20)


class ScriptModel(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    description: str = ""
    dialplan: str | dict[str, Any]  # a dialplan's name (in dialplans/) or an inline dialplan
    dialect_overrides: dict[DialectName, dict[str, Any]] = Field(default_factory=dict)  # merged into the dialplan
    caller: str = "+15550100"
    called: str | None = None  # default: the dialplan's first literal pattern, else "1000"
    emulator: EmulatorSpec = EmulatorSpec()
    transfer: TransferSpec = TransferSpec()
    line: LineSpec | None = None  # None: the line returns nothing of what the caller hears
    orchestrator: OrchestratorSpec | None = None  # an orchestrated plan: the answers of the replay's orchestrator
    turns: list[Turn] = Field(min_length=1)
    expect: Expect = Expect()
    expect_by_dialect: dict[DialectName, Expect] = Field(default_factory=dict)
    compare: CompareSpec = CompareSpec()
    rubric: Statements = Field(default_factory=list)  # each must hold of the whole call (the grader judges them)
    max_duration_s: float = Field(60.0, gt=0, le=600)  # the caller hangs up at this point whatever happens
    settle_ms: int = Field(500, gt=0)  # silence after agent audio that counts as "the agent is done"
    seed: int = 1  # emulator ids


# --------------------------------------------------------------------------------------------------------------
# A loaded script


def g711_tag(path: Path) -> int:
    """The WAVE format tag of ``path`` (the sub-format's for WAVE_FORMAT_EXTENSIBLE). Raises ValueError."""
    blob = path.read_bytes()
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    offset = 12
    while offset + 8 <= len(blob):
        chunk, size = struct.unpack_from("<4sI", blob, offset)
        if chunk == b"fmt ":
            if size < 16:
                break
            tag, channels, rate = struct.unpack_from("<HHI", blob, offset + 8)
            if tag == WAVE_FORMAT_EXTENSIBLE and size >= 26:
                tag = struct.unpack_from("<H", blob, offset + 8 + 24)[0]
            if channels != 1 or rate != SAMPLE_RATE:
                raise ValueError(f"{channels} channel(s) at {rate} Hz, expected mono {SAMPLE_RATE} Hz")
            return int(tag)
        offset += 8 + size + (size & 1)
    raise ValueError("no fmt chunk")


class CallScript:
    """A validated script: the model, its directory, and the per-dialect dialplans and annotations."""

    def __init__(
        self,
        model: ScriptModel,
        directory: Path,
        source: Path,
        plans: Mapping[str, Dialplan],
        unbuildable: Mapping[str, ConfigError] | None = None,
        rollout: RolloutSpec | None = None,
    ) -> None:
        self.model = model
        self.directory = directory
        self.source = source
        self.plans = dict(plans)
        self.unbuildable = dict(unbuildable or {})  # dialect -> why the script cannot run in it
        self.rollout = rollout  # the variants of the rollout plan the script names (None: a pinned or inline plan)
        self.named: Dialplan | None = None  # the dialplan the script names, as production loads it (None: inline)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def turns(self) -> list[Turn]:
        return self.model.turns

    def plan(self, dialect: str) -> Dialplan:
        """The script's dialplan in ``dialect``; the ConfigError that kept it from building, if one did."""
        if dialect in self.unbuildable:
            raise self.unbuildable[dialect]
        return self.plans[dialect]

    def variant_plan(self, variant: Variant, spec: RolloutSpec) -> Dialplan:
        """The script's plan as a call on ``variant`` has it: the plan of the variant's dialect with the variant's
        profile overrides, model and voice (made compatible with the model from the rollout's fallback voice, as a
        live call's)."""
        base = self.plan(variant.dialect)
        model, _ = variant.models()
        profile = base.variant_profile(variant)
        voice = compatible_voice(profile.voice, model, spec.fallback_voice)
        return base.model_copy(update={"profile": profile.model_copy(update={"model": model, "voice": voice})})

    def on_safe_variant(self) -> CallScript:
        """This script with its rollout plan's safe variant in that variant's dialect (the model, voice and profile
        overrides production falls back on), the other dialects as they are; itself if it names no rollout plan."""
        spec = self.rollout
        if spec is None:
            return self
        safe = spec.variant(spec.safe)
        if safe.dialect not in self.plans:
            return self
        plans = {**self.plans, safe.dialect: self.variant_plan(safe, spec)}
        out = CallScript(self.model, self.directory, self.source, plans, self.unbuildable, spec)
        out.named = self.named
        return out

    @property
    def production(self) -> dict[str, str]:
        """Where the named plan's calls go in production: the dialect and model of its safe variant (a rollout
        plan: where every call falls back), else its own ({} for an inline plan)."""
        plan = self.named
        if plan is None:
            return {}
        spec = plan.rollout_spec
        if spec is not None:
            safe = spec.variant(spec.safe)
            return {"dialect": safe.dialect, "model": safe.models()[0]}
        return {"dialect": plan.dialect, "model": plan.profile.model or DIALECTS[plan.dialect].default_model}

    def expect(self, dialect: str) -> Expect:
        return self.model.expect.merged(self.model.expect_by_dialect.get(dialect))

    @property
    def called(self) -> str:
        if self.model.called:
            return self.model.called
        plan = next(iter(self.plans.values()))
        literal = [p for p in plan.match if not any(c in p for c in "*?[")]
        return literal[0] if literal else "1000"

    def audio_path(self, name: str) -> Path:
        return audio_file(self.directory, name).resolve()

    @cached_property
    def caller_audio(self) -> dict[int, bytes]:
        """Turn index -> the turn's audio as 8 kHz PCM16 (decoded from G.711)."""
        from bridge.audio.wav import read_wav  # pure module: no pjsua2

        return {i: read_wav(self.audio_path(t.say)) for i, t in enumerate(self.turns) if t.say is not None}

    def _reply(self, spec: ReplySpec | None) -> dict[str, Any] | None:
        if spec is None:
            return None
        out: dict[str, Any] = spec.model_dump(exclude_none=True, exclude={"tool_call", "silence"})
        if spec.silence:
            out["silence"] = True
        if spec.wav is not None:
            out["wav"] = str(self.audio_path(spec.wav))
        if spec.tool_call is not None:
            out["tool_call"] = {"name": spec.tool_call.name, "arguments": spec.tool_call.arguments}
        return out

    def annotations_json(self) -> dict[str, Any]:
        """The emulator annotations: the greeting and one entry per spoken turn, in order."""
        turns = [
            {k: v for k, v in (("hears", t.hears), ("reply", self._reply(t.reply))) if v is not None}
            for t in self.turns
            if t.say is not None
        ]
        out: dict[str, Any] = {"turns": turns}
        greeting = self._reply(self.model.emulator.greeting)
        if greeting is not None:
            out["greeting"] = greeting
        return out

    def annotations(self) -> Annotations:
        return Annotations.parse(self.annotations_json())

    def reconnect_greeting(self) -> dict[str, Any] | None:
        """The annotation greeting a reconnected emulator session answers its first response.create with."""
        return self._reply(self.model.emulator.reconnect_greeting)

    def emulator_settings(
        self,
        connection: int,
        dialect: str = "",
        model: str = "",
        variant: str = "",
        more: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Settings of the emulator's ``connection``-th connection (0 = first) in ``dialect`` on ``model`` (as the
        rollout ``variant``), ``more`` over the script's: faults only on the first, unless ``faults_on_reconnect``.
        Ids are seeded per connection, so a replay is deterministic."""
        from bridge.emulator.faults import for_model

        fault_names = set(EmulatorSettings().faults.__dataclass_fields__)
        spec = self.model.emulator
        merged = {**spec.settings, **spec.dialect_settings.get(dialect, {})}
        merged.update(
            {**for_model(spec.model_settings, model), **spec.variant_settings.get(variant, {}), **(more or {})}
        )
        values = {
            k: v for k, v in merged.items() if connection == 0 or spec.faults_on_reconnect or k not in fault_names
        }
        return {"seed": self.model.seed * 1000 + connection, **values}

    def digest(self) -> str:
        """A short fingerprint of the script and its audio (reports name what exactly was replayed)."""
        import hashlib

        h = hashlib.sha256(json.dumps(self.model.model_dump(mode="json"), sort_keys=True).encode())
        for i in sorted(self.caller_audio):
            h.update(self.caller_audio[i])
        return h.hexdigest()[:12]


# --------------------------------------------------------------------------------------------------------------
# Loading


def default_dialplans_dir() -> Path:
    """``./dialplans`` if it exists, else the repository's ``dialplans/``."""
    here = Path.cwd() / "dialplans"
    return here if here.is_dir() else Path(__file__).resolve().parents[2] / "dialplans"


def find_dialplan(name: str, directory: Path) -> Path | None:
    for path in sorted(directory.glob("*.y*ml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and data.get("name") == name:
            return path
    return None


def _plans(
    model: ScriptModel, src: str, dialplans_dir: Path
) -> tuple[dict[str, Dialplan], dict[str, ConfigError], RolloutSpec | None, Dialplan | None]:
    """The script's dialplan in every dialect, and the variants of a named rollout plan. One that does not build is
    an error at load time in a default dialect, and in the others only when the script is run there (apart)."""
    rollout: RolloutSpec | None = None
    named: Dialplan | None = None
    if isinstance(model.dialplan, str):
        path = find_dialplan(model.dialplan, dialplans_dir)
        if path is None:
            raise ConfigError(src, "dialplan", f"no dialplan named {model.dialplan!r} in {dialplans_dir}")
        try:
            named = load_dialplan(path)
        except ConfigError as exc:
            raise ConfigError(src, "dialplan", f"{exc}") from None
        base = named.model_dump(mode="json", exclude={"source_file", "rollout"})
        rollout = named.rollout_spec
        field = "dialplan"
    else:
        base = {"name": model.name, "match": ["*"], **model.dialplan}
        field = "dialplan"
    plans: dict[str, Dialplan] = {}
    unbuildable: dict[str, ConfigError] = {}
    for dialect in DIALECT_NAMES:
        try:
            plans[dialect] = _plan(model, src, base, field, dialect)
        except ConfigError as exc:
            if dialect in DEFAULT_DIALECTS:
                raise
            unbuildable[dialect] = exc
    return plans, unbuildable, rollout, named


def _for_dialect(base: dict[str, Any], dialect: str) -> dict[str, Any]:
    """What a plan written for Realtime needs to run in ``dialect``, from its capabilities: where the service takes
    turns itself, the plan's turn detection means nothing there and is left to it, and the model is the dialect's
    (a Realtime model is refused on another endpoint)."""
    d = DIALECTS[dialect]
    if d.capabilities.turn_detection != "none":
        return base
    profile = {k: v for k, v in (base.get("profile") or {}).items() if k != "turn_detection"}
    return {**base, "profile": {**profile, "model": d.default_model}}


def _plan(model: ScriptModel, src: str, base: dict[str, Any], field: str, dialect: str) -> Dialplan:
    over = model.dialect_overrides.get(dialect)
    where = f"dialect_overrides.{dialect}" if over else field
    data = deep_merge(_for_dialect(base, dialect), over or {})
    data["dialect"] = dialect
    try:
        plan = Dialplan.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(src, f"{where}.{field_path(err['loc'])}", err["msg"]) from None
    try:
        DIALECTS[dialect].build_session(plan.profile)
    except ConfigError as exc:
        raise ConfigError(src, f"{where}.profile.{exc.field}", f"{exc.message} (dialect {dialect})") from None
    if "transfer_to_human" in plan.tool_names and not plan.transfer_target:
        raise ConfigError(src, f"{where}.transfer_target", "required when the transfer_to_human tool is enabled")
    return plan


def _check_audio(model: ScriptModel, src: str, directory: Path) -> None:
    for i, turn in enumerate(model.turns):
        checks: list[tuple[str, str | None, bool]] = [(f"turns[{i}].say", turn.say, True)]
        if turn.reply is not None:
            checks.append((f"turns[{i}].reply.wav", turn.reply.wav, False))
        for field, name, g711 in checks:
            if name is None:
                continue
            path = audio_file(directory, name)
            if not path.is_file():
                raise ConfigError(src, field, f"no such file: {path}")
            if g711:
                try:
                    tag = g711_tag(path)
                except (OSError, ValueError) as exc:
                    raise ConfigError(src, field, f"{name}: {exc}") from None
                if tag not in G711_TAGS:
                    raise ConfigError(src, field, f"{name}: WAVE format tag {tag}, expected G.711 (7 μ-law, 6 A-law)")


ASSETS: Final = "assets:"  # a WAV of the bridge's own (bridge/assets/), wherever the script directory is


def audio_file(directory: Path, name: str) -> Path:
    """A script's WAV: ``assets:NAME`` is the bridge's own ``bridge/assets/NAME`` (a script copied anywhere still
    finds it), any other name is relative to the script directory."""
    if name.startswith(ASSETS):
        return Path(__file__).resolve().parents[1] / "assets" / name.removeprefix(ASSETS)
    return directory / name


def script_file(path: Path) -> Path:
    return path / SCRIPT_FILE if path.is_dir() else path


def load_script(path: str | Path, dialplans_dir: Path | None = None) -> CallScript:
    """Load and validate one script (its directory or its ``script.yaml``). Raises :class:`ConfigError`."""
    file = script_file(Path(path))
    src = str(file)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(src, "(file)", f"cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        raise ConfigError(src, where, f"invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(src, "(file)", "a call script must be a mapping")
    data.setdefault("name", file.parent.name.lower().replace(" ", "-"))
    try:
        model = ScriptModel.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(src, field_path(loc), msg) from None
    plans, unbuildable, rollout, named = _plans(model, src, dialplans_dir or default_dialplans_dir())
    orchestrated = next(iter(plans.values())).orchestrator is not None
    if model.orchestrator is not None and not orchestrated:
        raise ConfigError(src, "orchestrator", "the dialplan has no orchestrator section: nobody would ask for these")
    if model.orchestrator is None and orchestrated:
        raise ConfigError(src, "orchestrator", "required: the dialplan is orchestrated (orchestrator.answers)")
    _check_audio(model, src, file.parent)
    if model.emulator.model_settings or model.emulator.variant_settings:
        from bridge.replay.emulation import check_scopes, known

        names = known(dialplans_dir or default_dialplans_dir(), plans.values())
        check_scopes(model.emulator.model_settings, model.emulator.variant_settings, src, names)
    script = CallScript(model, file.parent, file, plans, unbuildable, rollout)
    script.named = named
    return script


def find_scripts(paths: Iterable[str | Path]) -> list[Path]:
    """Script directories under ``paths``: each path is a script directory, a ``script.yaml``, or a directory
    of script directories (searched one level deep, sorted). In the order given, without duplicates."""
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found[path.parent.resolve()] = None
        elif (path / SCRIPT_FILE).is_file():
            found[path.resolve()] = None
        elif path.is_dir():
            for sub in sorted(path.iterdir()):
                if (sub / SCRIPT_FILE).is_file():
                    found[sub.resolve()] = None
        else:
            raise ConfigError(str(path), "(path)", "no such script, script directory or directory of scripts")
    return list(found)
