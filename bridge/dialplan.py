"""Dialplans: data files that map called numbers to an agent profile.

A dialplan is one YAML file in ``dialplans/``. Every error names the file and the dotted field path, and
``callbridge dialplan check DIR`` prints all of them (exit 1) or a one-line summary per plan (exit 0), with a
warning (file and field; the exit code stays) for what is valid but likely a mistake: a ``"*"`` catch-all.

A plan with ``dialect: rollout`` splits its calls between the variants of its ``rollout`` section
(:class:`bridge.rollout.policy.RolloutSpec`: each variant a dialect, a model, a voice and profile overrides; one of
them safe); without that section it has the two variants of the first rollouts, GA against beta
(:func:`bridge.rollout.policy.legacy_spec`). :meth:`Dialplan.variant_profile` is the profile a variant's call uses.
"""

from __future__ import annotations

import copy
import datetime as dt
import fnmatch
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from bridge.audio.wav import WavFormatError, read_wav
from bridge.errors import ConfigError
from bridge.events import TransferMode
from bridge.realtime.dialects import DIALECTS
from bridge.realtime.profile import AgentProfile, Tool
from bridge.rollout.attest import gate_line
from bridge.rollout.policy import RolloutSpec, Variant, legacy_spec
from bridge.rollout.probes import probe_line
from bridge.tools.guard import plan_errors
from bridge.tools.spec import Header, HttpTool, McpServer, ToolContext, check_schema
from bridge.webhooks.endpoints import WebhookSpec, unique_names

ROLLOUT = "rollout"  # a plan's dialect when its variants choose one per call
if TYPE_CHECKING:
    DialectChoice = str
else:
    DialectChoice = Literal[(*DIALECTS, ROLLOUT)]  # a dialect of the tables, or a rollout between them

# Tools the call session implements itself (bridge/call/builtin_tools.py); a dialplan names them.
BUILTIN_TOOLS: dict[str, Tool] = {
    "transfer_to_human": Tool(
        name="transfer_to_human",
        description="Transfer the caller to a human agent when they ask for a person or you cannot help.",
        parameters={
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "why the caller needs a human"}},
            "required": ["reason"],
        },
    ),
    "end_call": Tool(
        name="end_call",
        description="End the call after saying goodbye, when the caller is done.",
        parameters={"type": "object", "properties": {}},
    ),
}


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings are merged key by key, anything else is replaced (copied)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def builtin_tools(profile: Any) -> Any:
    """A raw profile's ``tools: [transfer_to_human, end_call]``: names of built-in tools become their definitions."""
    if isinstance(profile, dict) and isinstance(profile.get("tools"), list):
        tools = []
        for i, tool in enumerate(profile["tools"]):
            if isinstance(tool, str):
                if tool not in BUILTIN_TOOLS:
                    raise ValueError(f"tools[{i}]: unknown built-in tool {tool!r} (known: {sorted(BUILTIN_TOOLS)})")
                tools.append(BUILTIN_TOOLS[tool].model_dump())
            else:
                tools.append(tool)
        profile = {**profile, "tools": tools}
    return profile


class Recording(BaseModel):
    """Recording of the plan's calls (``bridge/call/recorder.py``) behind a consent prompt the bridge plays itself
    at the answer (``bridge/call/consent.py``): the recording starts only once it has played out."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = False
    # the recorded prompt (an 8 kHz mono WAV: PCM16, u-law or A-law); required when enabled
    consent_audio: str | None = None
    consent_prompt: str | None = None  # its words: the model is told the caller heard them (never says them itself)
    consent_barge_in: bool = False  # the caller's key or voice cuts the prompt short (that call is not recorded)


class Privacy(BaseModel):
    """What the call's stored and shown artifacts (Redis, the report, logs, the recording's events, the console)
    keep of the caller's personal data (bridge/call/privacy.py). Safe by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # a run of keys (each within 3 s of the last) keeps this many keys visible; every later key is shown as "*"
    dtmf_visible_digits: int = Field(1, ge=0, le=32)
    dtmf_to_model: bool = True  # the model hears every key (False: a masked key reaches it as "a hidden key")
    pause_recording_on_dtmf: bool = False  # the recording holds silence while keys are being entered
    caller_visible_digits: int | None = Field(4, ge=0, le=32)  # caller numbers in logs and Redis; None: in full
    # transcripts (both sides) as stored and shown: a run of more than this many digits, said as words ("four one
    # one one ...") or written, becomes "****" (a card, an account, a phone number; a year or a price stays); None: off
    transcript_visible_digits: int | None = Field(4, ge=0, le=32)


class Outage(BaseModel):
    """What the caller gets while the model is away (``bridge/call/outage.py``): reconnects with backoff for up to
    ``hold_s``; after ``hold_after_s`` without the model the hold message (``hold_audio``, or the one shipped in
    ``bridge/assets``); past ``hold_s`` the failover: ``transfer`` to the plan's ``transfer_target`` (a plan with
    none says goodbye instead), or ``goodbye``: a short apology, then a BYE with a ``Reason`` header (RFC 3326)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    hold_s: float = Field(30.0, gt=0, le=600)
    hold_after_s: float = Field(1.0, ge=0, le=10)
    hold_audio: str | None = None  # an 8 kHz mono WAV (PCM16, u-law or A-law), played in a loop
    apology_audio: str | None = None  # the goodbye failover's message (8 kHz mono WAV)
    failover: Literal["transfer", "goodbye"] = "transfer"


class Waiting(BaseModel):
    """No dead air while the call waits on a business tool (``bridge/call/waiting.py``): past ``filler_after_s``
    a line of ``fillers`` (never the one said last), then the outage hold message, softer, until the answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    filler_after_s: float = Field(1.0, ge=0.2, le=10)
    fillers: tuple[str, ...] = Field(
        ("One moment, let me check.", "Just a second, I'm looking into it.", "Bear with me a moment."), min_length=1
    )
    hold_gain_db: float = Field(-6.0, ge=-40, le=0)


class Watch(BaseModel):
    """What the console marks on this plan's calls (``bridge/supervisor/flags.py``, docs/operating.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    silence_ms: float = Field(3000.0, ge=100, le=60_000)  # a longest dead air above this: "long silence"
    reply_ms: float = Field(2500.0, ge=100, le=60_000)  # a reply (caller stops -> agent audio) slower: "slow agent"
    barge_ins: int = Field(3, ge=1, le=1000)  # this many barge-ins on one call: "barge-ins"


class WallboardThresholds(BaseModel):
    """When a wallboard tile turns red for this plan (``/wallboard?plan=NAME``; ``bridge/supervisor/board.py`` says
    what each tile counts). None: the tile never turns red by this plan (the console may still set a threshold)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    calls_now: int | None = Field(None, ge=1)  # live calls at or above
    service_level: float | None = Field(None, ge=0, le=1)  # target share answered within service_level_s, below
    service_level_s: float = Field(20.0, gt=0, le=3600)  # the service level's seconds from the ring to the answer
    refused: int | None = Field(None, ge=1)  # callers refused (486/503) in the last 15 minutes, at or above
    containment: float | None = Field(None, ge=0, le=1)  # share of the last hour's calls not transferred, at or below
    waiting: int | None = Field(None, ge=1)  # callers waiting for a human now, at or above
    longest_wait_s: float | None = Field(None, gt=0)  # the longest of those waits, at or above
    abandonment: float | None = Field(None, ge=0, le=1)  # share of the last hour's callers who hung up first
    handle_s: float | None = Field(None, gt=0)  # mean handle time of the last hour's calls, at or above
    trouble: int | None = Field(None, ge=1)  # live calls in trouble now, at or above


class PostCallPlan(BaseModel):
    """What the call's own model is asked once the call is over (``bridge/call/wrapup.py``): a short summary, one
    disposition of ``dispositions``, and the ``fields`` a JSON Schema (of an object) declares."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    summary: bool = True
    dispositions: tuple[Annotated[str, Field(min_length=1, max_length=64)], ...] = ()
    fields: dict[str, Any] | None = None  # JSON Schema (2020-12) of an object

    @field_validator("dispositions")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        dup = sorted({d for d in value if value.count(d) > 1})
        if dup:
            raise ValueError(f"dispositions must be unique: {dup}")
        return value

    @field_validator("fields")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") != "object":
            raise ValueError("the fields' schema must have type: object")
        return None if value is None else check_schema(value)

    @model_validator(mode="after")
    def _asks_something(self) -> PostCallPlan:
        if not self.summary and not self.dispositions and self.fields is None:
            raise ValueError("post_call asks for nothing: set summary, dispositions or fields")
        return self


class Disclosure(BaseModel):
    """A phrase the agent must say within ``within_s`` of the answer: ``text`` (case-insensitive, words in order)
    or ``pattern`` (a regular expression, case-insensitive)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    text: str | None = Field(None, min_length=1)
    pattern: str | None = Field(None, min_length=1)
    within_s: float = Field(30.0, gt=0, le=3600)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one(self) -> Disclosure:
        if (self.text is None) == (self.pattern is None):
            raise ValueError("name exactly one of text or pattern")
        return self


class VerifyBefore(BaseModel):
    """The tool ``tool`` (one that reads an account) runs only after the tool ``after`` (a verification) succeeded:
    enforced before a business tool runs (``bridge/tools/guard.py``), and checked on the call's report."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool: str = Field(min_length=1)
    after: str = Field(min_length=1)


class Checks(BaseModel):
    """QA's scorecard, checked on every call and every replay (``bridge/call/checks.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    disclosure: Disclosure | None = None
    never_say: tuple[Annotated[str, Field(min_length=1)], ...] = ()  # phrases (case-insensitive, whole words)
    verify_before: VerifyBefore | None = None
    max_dead_air_s: float | None = Field(None, gt=0, le=600)  # the call's longest dead air (report.longest_silence_ms)


class Orchestrator(BaseModel):
    """An orchestrated plan (``bridge/call/orchestration.py``, ``docs/orchestrator.md``): the model does not answer
    on its own; after each caller turn the bridge POSTs the turn to ``url`` and does what the answer says. Past
    ``timeout_ms`` the caller hears ``filler`` while the bridge waits on, up to ``give_up_ms``; then, or at once
    when the orchestrator cannot be reached, the plan's ``outage.failover``. A 5xx, a 4xx, invalid JSON or an
    answer that is not a decision is counted and logged, and ``on_error`` says what the call does instead."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = Field(pattern=r"^https?://[^\s/]+(/\S*)?$")
    timeout_ms: int = Field(1500, ge=50, le=30_000)
    give_up_ms: int = Field(6000, ge=100, le=60_000)
    filler: str = Field("One moment, please.", min_length=1)
    on_error: Literal["respond", "failover"] = "respond"

    @field_validator("give_up_ms")
    @classmethod
    def _after_timeout(cls, value: int, info: ValidationInfo) -> int:
        timeout = info.data.get("timeout_ms")
        if timeout is not None and value <= timeout:
            raise ValueError(f"must be more than timeout_ms ({timeout})")
        return value


class EchoGuardPlan(BaseModel):
    """The echo guard (``bridge/call/echo.py``, ``bridge/audio/echo.py``): the agent's own audio coming back down
    the caller's line is not the caller. On unless ``enabled: false``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    max_delay_ms: float = Field(600.0, ge=20, le=1000)  # the longest echo path: the line, jitter buffers, port queue
    speech_dbfs: float = Field(-40.0, ge=-70, le=-10)  # residual above this (not explained by the echo) is the caller
    erle_db: float = Field(10.0, ge=3, le=40)  # residual at least this far below the inbound level: explained
    temper: bool = True  # send the service the echo-suppressed residual while the agent speaks
    suppress_db: float = Field(30.0, ge=0, le=80)  # explained frames attenuated by this much
    confirm_ms: int = Field(300, ge=20, le=2000)  # a paused agent is cut once the caller spoke this long
    resume_ms: int = Field(700, ge=100, le=5000)  # ...and resumes where it paused if not within this


class TransferPlan(BaseModel):
    """How ``transfer_to_human`` hands the caller over (``bridge/call/warm.py`` for ``warm``).

    ``blind``: REFER (RFC 3515) to ``target``, the agent leaves. ``warm``: the caller hears the hold audio while the
    worker calls ``target`` on a second SIP leg; answered, the agent briefs the human in its own voice (``brief``, up
    to ``brief_timeout_s``); then (with ``accept: dtmf``, once "1" is pressed within ``accept_window_s``) the
    caller and the human are joined in pjsua2's conference bridge and the model session ends; busy, no answer
    (``ring_timeout_s``) or declined bring the agent back to say so."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: TransferMode = TransferMode.BLIND
    target: str = Field(pattern=r"^sips?:.+@.+")
    ring_timeout_s: float = Field(20.0, gt=0, le=120)
    brief: bool = True  # the agent briefs the human (who calls, what they asked, what was tried) before the join
    brief_timeout_s: float = Field(20.0, gt=0, le=120)  # no briefing played by then: the human takes the call as is
    accept: Literal["answer", "dtmf"] = "answer"
    accept_window_s: float = Field(10.0, gt=0, le=60)  # accept: dtmf: the human presses 1 within this


class Dialplan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    match: tuple[str, ...] = Field(min_length=1)  # called-number globs: "1000", "+1800555*", "*"
    # original-called-number globs (the number a forwarded call was first placed to: Diversion, History-Info;
    # bridge/sip/identity.py): a plan with them takes only such calls, before a plan matching the called number alone
    original_called: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    dialect: DialectChoice = "ga"
    greeting: str | None = None  # the agent speaks first with these instructions
    transfer_target: str | None = Field(None, pattern=r"^sips?:.+@.+")  # a blind transfer's target (or transfer.target)
    transfer: TransferPlan | None = None  # how transfer_to_human hands over (None: blind to transfer_target)
    # more targets a supervisor may transfer this plan's calls to (the console's Transfer; transfer_target is always
    # allowed)
    transfer_targets: tuple[Annotated[str, Field(pattern=r"^sips?:.+@.+")], ...] = ()
    answer_timeout_s: float = Field(3.0, gt=0, le=30)  # answer anyway if the Realtime session is not ready
    profile: AgentProfile = AgentProfile()
    recording: Recording = Recording()
    privacy: Privacy = Privacy()
    outage: Outage = Outage()  # the model unreachable: hold, reconnect, then fail over
    echo_guard: EchoGuardPlan = EchoGuardPlan()  # the line's echo of the agent is not a barge-in
    allowed_sources: tuple[str, ...] = ()  # CIDRs of trunks allowed to call this plan (empty: any); others get 403
    rollout: RolloutSpec | None = None  # dialect rollout: the variants (None: GA against beta, beta safe)
    orchestrator: Orchestrator | None = None  # the contact center's service decides what the agent says
    # the call's length bound (bridge/call/limit.py): the agent says goodbye max_call_goodbye_s before it, the BYE
    # follows once the goodbye has played out, and at max_call_s at the latest
    max_call_s: float = Field(3600.0, gt=0)
    max_call_goodbye_s: float = Field(15.0, gt=0, validate_default=True)
    # business tools the bridge calls over HTTP (bridge/tools/spec.py); the model sees them beside profile.tools
    http_tools: tuple[HttpTool, ...] = ()
    mcp_servers: tuple[McpServer, ...] = ()  # MCP servers whose tools are listed at each call's start
    # what a tool's server gets to authorize a call (bridge/tools/context.py): the signed call context of every tool
    # and MCP server without a context of its own
    tool_context: ToolContext = ToolContext()
    # the verifying tools: each one's name -> the fields of its answer the call's context keeps (verified.<field>)
    verifiers: dict[
        Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")],
        tuple[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")], ...],
    ] = Field(default_factory=dict)
    waiting: Waiting = Waiting()  # what the caller hears while a tool works
    watch: Watch = Watch()  # the console's marks: when a wait, a reply or barge-ins are trouble
    wallboard: WallboardThresholds = WallboardThresholds()  # when the plan's wallboard tiles turn red
    post_call: PostCallPlan | None = None  # the summary, disposition and fields asked of the model after the call
    checks: Checks = Checks()  # the compliance checks of every call
    # signed webhooks of this plan's calls (bridge/webhooks/endpoints.py): url, secret (env or file), events, caller
    webhooks: tuple[WebhookSpec, ...] = ()
    source_file: str = Field("", exclude=True)

    @field_validator("allowed_sources")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from bridge.sip.access import parse_networks  # pure (no pjsua2)

        parse_networks(value, "allowed_sources")
        return value

    @field_validator("max_call_goodbye_s")
    @classmethod
    def _goodbye_within_the_call(cls, value: float, info: ValidationInfo) -> float:
        limit = info.data.get("max_call_s")
        if limit is not None and value >= limit:
            raise ValueError(f"must be less than max_call_s ({limit:g}): the goodbye starts that long before it")
        return value

    @field_validator("profile", mode="before")
    @classmethod
    def _builtin_tools(cls, value: Any) -> Any:
        """``tools: [transfer_to_human, end_call]`` names built-in tools; dicts define custom ones."""
        return builtin_tools(value)

    @field_validator("rollout", mode="after")
    @classmethod
    def _rollout_only_for_rollout(cls, spec: RolloutSpec | None, info: ValidationInfo) -> RolloutSpec | None:
        dialect = info.data.get("dialect")
        if spec is not None and dialect != ROLLOUT:
            raise ValueError(f"a plan with variants has dialect: rollout (this one has {dialect})")
        return spec

    @model_validator(mode="after")
    def _offer_http_tools(self) -> Dialplan:
        """The model sees each HTTP tool as a function, after the profile's own tools; names are unique. (A plan
        validated again from its own dump already offers them: nothing is added twice.)"""
        offered = {t.name: t for t in self.profile.tools}
        for tool in self.http_tools:
            if tool.name in offered and offered[tool.name] != tool.definition():
                raise ValueError(f"http_tools: {tool.name!r} is also a tool of the profile; tool names are unique")
        names = [t.name for t in self.http_tools]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"http_tools: tool names must be unique: {dup}")
        if dup := unique_names(self.webhooks):
            raise ValueError(f"webhooks: names must be unique: {dup}")
        servers = [m.name for m in self.mcp_servers]
        if len(set(servers)) != len(servers):
            raise ValueError(f"mcp_servers: names must be unique: {servers}")
        extra = tuple(t.definition() for t in self.http_tools if t.name not in offered)
        if extra:
            profile = self.profile.model_copy(update={"tools": (*self.profile.tools, *extra)})
            object.__setattr__(self, "profile", profile)  # frozen: set once, while validating
        return self

    @field_validator("transfer")
    @classmethod
    def _one_transfer_target(cls, value: TransferPlan | None, info: ValidationInfo) -> TransferPlan | None:
        target = info.data.get("transfer_target")
        if value is not None and target is not None and target != value.target:
            raise ValueError(f"transfer.target ({value.target}) and transfer_target ({target}) differ: name one")
        return value

    @model_validator(mode="after")
    def _transfer_target_from_transfer(self) -> Dialplan:
        """``transfer.target`` is the plan's ``transfer_target`` (the blind paths and the console use that one)."""
        if self.transfer is not None:
            object.__setattr__(self, "transfer_target", self.transfer.target)  # frozen: set once, while validating
        return self

    @property
    def transfer_plan(self) -> TransferPlan | None:
        """How this plan transfers: its ``transfer``, or a blind transfer to ``transfer_target``, or None."""
        if self.transfer is not None:
            return self.transfer
        return TransferPlan(mode="blind", target=self.transfer_target) if self.transfer_target else None

    @property
    def rollout_spec(self) -> RolloutSpec | None:
        """The variants of a ``dialect: rollout`` plan (its own, or GA against beta); None for a pinned plan."""
        if self.dialect != ROLLOUT:
            return None
        return self.rollout if self.rollout is not None else legacy_spec()

    def variant_profile(self, variant: Variant) -> AgentProfile:
        """This plan's profile with ``variant``'s overrides, model and voice. Raises ValidationError."""
        over = builtin_tools(variant.profile)
        merged = deep_merge(self.profile.model_dump(), over)
        merged["model"] = variant.model
        merged["voice"] = variant.voice or merged.get("voice") or self.profile.voice
        return AgentProfile.model_validate(merged)

    def matches(self, called: str) -> bool:
        return any(fnmatch.fnmatchcase(called, pattern) for pattern in self.match)

    @property
    def tool_names(self) -> set[str]:
        return {t.name for t in self.profile.tools}

    @property
    def verify_first(self) -> dict[str, tuple[str, ...]]:
        """Each tool that waits for a verification -> the verifying tools it waits for (its ``verify_before``, and
        ``checks.verify_before``); an MCP server's own ``verify_before`` is applied as its tools are listed."""
        out: dict[str, tuple[str, ...]] = {}
        pairs = [(t.name, t.verify_before) for t in self.http_tools if t.verify_before is not None]
        if self.checks.verify_before is not None:
            pairs.append((self.checks.verify_before.tool, self.checks.verify_before.after))
        for tool, after in pairs:
            out[tool] = tuple(dict.fromkeys((*out.get(tool, ()), after)))
        return out


def field_path(loc: Iterable[int | str]) -> str:
    """A pydantic error's ``loc`` as the field's path in the file: ``profile.tools[2].name``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


def load_dialplan(path: Path) -> Dialplan:
    """Load and validate one file. Raises :class:`ConfigError` naming the file and the first bad field."""
    errors = check_file(path)
    if errors:
        raise errors[0]
    return _parse(path)


_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", None)  # None: PyYAML without libyaml


def _load_yaml(text: str) -> Any:
    """``yaml.safe_load``, through libyaml where PyYAML has it. A document libyaml refuses is read again by the pure
    Python loader, so what is accepted and each error's problem and line are the pure loader's."""
    if _FAST_LOADER is not None:
        try:
            return yaml.load(text, Loader=_FAST_LOADER)  # CSafeLoader: the safe loader in C
        except yaml.YAMLError:
            pass
    return yaml.safe_load(text)


def _parse(path: Path) -> Dialplan:
    data = _load_yaml(path.read_text(encoding="utf-8"))
    return Dialplan.model_validate({**data, "source_file": str(path)})


def check_file(path: Path) -> list[ConfigError]:
    """Every error in one dialplan file."""
    src = str(path)
    try:
        data = _load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return [ConfigError(src, "(file)", f"cannot read: {exc}")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        return [ConfigError(src, where, f"invalid YAML: {getattr(exc, 'problem', exc)}")]
    if not isinstance(data, dict):
        return [ConfigError(src, "(file)", "a dialplan must be a mapping")]
    try:
        plan = Dialplan.model_validate({**data, "source_file": src})
    except ValidationError as exc:
        return [ConfigError(src, field_path(e["loc"]), e["msg"]) for e in exc.errors()]
    out = _check_dialects(plan, src)
    if "transfer_to_human" in plan.tool_names and not plan.transfer_target:
        out.append(ConfigError(src, "transfer_target", "required when the transfer_to_human tool is enabled"))
    for audio_field in ("hold_audio", "apology_audio"):
        audio = getattr(plan.outage, audio_field)
        if audio is not None and not Path(audio).is_file():
            out.append(ConfigError(src, f"outage.{audio_field}", f"no such file: {audio}"))
    verify = plan.checks.verify_before
    if verify is not None and not plan.mcp_servers:  # an MCP server's tools are known only at a call's start
        for name in ("tool", "after"):
            if getattr(verify, name) not in plan.tool_names:
                message = f"{getattr(verify, name)!r} is not a tool of this plan (known: {sorted(plan.tool_names)})"
                out.append(ConfigError(src, f"checks.verify_before.{name}", message))
    for where, message in plan_errors(plan.http_tools, plan.mcp_servers, plan.verifiers, plan.tool_names):
        out.append(ConfigError(src, where, message))
    out += _consent_errors(plan.recording, src)
    for where, header in _secret_headers(plan):  # only the file's presence: its content is never read here
        if header.file is not None and not os.access(header.file, os.R_OK):
            out.append(ConfigError(src, f"{where}.file", f"no readable file: {header.file}"))
    return out


def _consent_errors(recording: Recording, src: str) -> list[ConfigError]:
    """A recorded plan's consent prompt: a WAV the bridge can play (``recording.consent_audio``)."""
    if not recording.enabled:
        return []
    where = "recording.consent_audio"
    if not recording.consent_audio:
        return [ConfigError(src, where, "required when recording is enabled (the WAV the bridge plays first)")]
    try:
        pcm = read_wav(recording.consent_audio)
    except FileNotFoundError:
        return [ConfigError(src, where, f"no such file: {recording.consent_audio}")]
    except (OSError, WavFormatError) as exc:
        return [ConfigError(src, where, f"not a playable 8 kHz mono WAV: {exc}")]
    if not pcm:
        return [ConfigError(src, where, f"no audio in {recording.consent_audio}")]
    return []


def _secret_headers(plan: Dialplan) -> list[tuple[str, Header]]:
    """(field, header) of every header of the plan's HTTP tools and MCP servers, its webhooks' secrets and its tools'
    call context secrets."""
    owners = [(f"http_tools[{i}]", t.headers) for i, t in enumerate(plan.http_tools)]
    owners += [(f"mcp_servers[{i}]", m.headers) for i, m in enumerate(plan.mcp_servers)]
    found = [(f"{where}.headers.{name}", header) for where, headers in owners for name, header in headers.items()]
    contexts: list[tuple[str, ToolContext | None]] = [("tool_context", plan.tool_context)]
    contexts += [(f"http_tools[{i}].context", t.context) for i, t in enumerate(plan.http_tools)]
    contexts += [(f"mcp_servers[{i}].context", m.context) for i, m in enumerate(plan.mcp_servers)]
    found += [(f"{where}.secret", c.secret) for where, c in contexts if c is not None and c.secret is not None]
    return found + [(f"webhooks[{i}].secret", w.secret) for i, w in enumerate(plan.webhooks)]


def plan_warnings(plan: Dialplan) -> list[ConfigError]:
    """What is valid but likely a mistake: a ``"*"`` pattern answers any number a caller dials (a misdialled or
    scanned number reaches this plan's agent and its model); a header's secret variable that is not set here (a
    call that needs it fails: an HTTP tool answers an error, an MCP server's tools are left out); ``post_call`` where
    a dialect of the plan cannot answer out of band (those calls are marked, never summarised)."""
    found = [
        ConfigError(plan.source_file, f"match[{i}]", 'catch-all "*": this plan answers any number a caller dials')
        for i, pattern in enumerate(plan.match)
        if pattern == "*" and not plan.original_called  # with original_called patterns, "*" is no catch-all
    ]
    found += [
        ConfigError(plan.source_file, f"{where}.env", f"the variable {header.env} is not set (the header's secret)")
        for where, header in _secret_headers(plan)
        if header.env is not None and not os.environ.get(header.env)
    ]
    spec = plan.rollout_spec
    dialects = [v.dialect for v in spec.variants] if spec is not None else [plan.dialect]
    mute = sorted({d for d in dialects if d in DIALECTS and not DIALECTS[d].capabilities.text_out_of_band})
    if plan.post_call is not None and mute:
        message = f"the {', '.join(mute)} dialect cannot answer out of band: its calls get no summary, only the reason"
        found.append(ConfigError(plan.source_file, "post_call", message))
    return found


def shutdown_errors(plan: Dialplan, today: dt.date) -> list[ConfigError]:
    """The model every call falls back on is past its announced shutdown date (``bridge/rollout/data/
    shutdowns.yaml``): the safe variant's model of a rollout plan (the kill switch, deny lists, rollbacks and refused
    variants send calls there), or a pinned plan's model (the dialect's default when it names none)."""
    from bridge.rollout.catalog import shutdown_dates

    dates = shutdown_dates()
    spec = plan.rollout_spec
    if spec is not None:
        i = spec.names.index(spec.safe)
        model, where = spec.variants[i].models()[0], f"rollout.variants[{i}].model"
    else:
        model, where = plan.profile.model or DIALECTS[plan.dialect].default_model, "profile.model"
    date = dates.get(model)
    if date is None or date > today:
        return []
    message = (
        f"the safe model {model} was shut down on {date.isoformat()}: the service refuses it; "
        "name a current model (gpt-realtime-2.1, gpt-realtime-2.1-mini)"
    )
    return [ConfigError(plan.source_file, where, message)]


def service_errors(plan: Dialplan, realtime_url: str | None, today: dt.date) -> list[ConfigError]:
    """Each dialect the plan's calls can use that OpenAI's service no longer takes (a dialect's ``openai_shutdown``),
    when ``realtime_url`` is that service's (None: the endpoint is not known; nothing refused)."""
    from bridge.config import OPENAI_URL

    if realtime_url is None or not realtime_url.startswith(OPENAI_URL):
        return []
    spec = plan.rollout_spec
    used = (
        [(plan.dialect, "dialect")]
        if spec is None
        else [(v.dialect, f"rollout.variants[{i}].dialect") for i, v in enumerate(spec.variants)]
    )
    found = []
    for name, where in used:
        end = DIALECTS[name].openai_shutdown if name in DIALECTS else None
        if end is not None and end <= today:
            message = (
                f"OpenAI's Realtime service has refused the {DIALECTS[name].label} interface since "
                f"{end.isoformat()} ({realtime_url}): use dialect ga, or a realtime_url that keeps the "
                f"{DIALECTS[name].label} shape"
            )
            found.append(ConfigError(plan.source_file, where, message))
    return found


def _check_dialects(plan: Dialplan, src: str) -> list[ConfigError]:
    """A dialect-specific field must build for the dialect(s) this plan can use: its own, or each variant's (with
    the variant's overrides)."""
    spec = plan.rollout_spec
    checks: list[tuple[str, str, AgentProfile]] = []  # (dialect, where its fields come from, profile)
    found: list[ConfigError] = []
    if spec is None:
        checks.append((plan.dialect, "profile", plan.profile))
    for i, variant in enumerate(spec.variants if spec is not None else ()):
        where = f"rollout.variants[{i}]"
        if variant.dialect not in DIALECTS:
            known = ", ".join(DIALECTS)
            found.append(ConfigError(src, f"{where}.dialect", f"unknown dialect {variant.dialect!r} ({known})"))
            continue
        try:
            profile = plan.variant_profile(variant)
        except ValidationError as exc:
            err = exc.errors()[0]
            found.append(ConfigError(src, f"{where}.profile.{field_path(err['loc'])}", err["msg"]))
            continue
        except ValueError as exc:  # a built-in tool the variant names does not exist
            found.append(ConfigError(src, f"{where}.profile", str(exc)))
            continue
        checks.append((variant.dialect, f"{where}.profile" if variant.profile else "profile", profile))
    for name, where, profile in checks:
        try:
            DIALECTS[name].build_session(profile)
        except ConfigError as exc:
            found.append(ConfigError(src, f"{where}.{exc.field}", f"{exc.message} (dialect {name})"))
    return found


RolloutPlans = Mapping[str, tuple[RolloutSpec, str]]  # rollout plan -> (its variants, its profile's voice)


def rollout_specs(plans: Iterable[Dialplan]) -> dict[str, RolloutSpec]:
    """Each rollout plan's name -> its variants."""
    return {p.name: spec for p in plans if (spec := p.rollout_spec) is not None}


def rollout_plans(plans: Iterable[Dialplan]) -> dict[str, tuple[RolloutSpec, str]]:
    """Each rollout plan's name -> its variants and its profile's voice (a variant without a voice of its own)."""
    return {p.name: (spec, p.profile.voice) for p in plans if (spec := p.rollout_spec) is not None}


def dialplan_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in {".yaml", ".yml"})


def require_folder(directory: Path) -> None:
    """ConfigError (setting ``dialplans``) naming ``directory`` when it is not a folder."""
    if not directory.is_dir():
        raise ConfigError(
            "settings",
            "dialplans",
            f"no folder {str(directory)!r} (from {Path.cwd()}): set --dialplans or CALLBRIDGE_DIALPLANS",
        )


def load_dialplans(directory: Path) -> list[Dialplan]:
    """All plans of a directory; raises on the first error (nothing starts half-configured)."""
    files = dialplan_files(directory)
    if not files:
        raise ConfigError(str(directory), "(directory)", "no dialplan files (*.yaml)")
    plans = [load_dialplan(f) for f in files]
    seen: dict[str, str] = {}
    for plan in plans:
        if plan.name in seen:
            raise ConfigError(plan.source_file, "name", f"duplicate dialplan name (also in {seen[plan.name]})")
        seen[plan.name] = plan.source_file
    return plans


def _specificity(pattern: str) -> tuple[bool, int]:
    literal = not any(c in pattern for c in "*?[")
    return literal, len(pattern.split("*", 1)[0].split("?", 1)[0])


def _best(patterns: Iterable[str], number: str) -> tuple[bool, int] | None:
    """The specificity of the most specific of ``patterns`` that ``number`` matches; None if none does."""
    found = [_specificity(p) for p in patterns if fnmatch.fnmatchcase(number, p)]
    return max(found) if found else None


def _rank(plan: Dialplan, called: str, original_called: str) -> tuple[bool, tuple[bool, int], tuple[bool, int]] | None:
    """How well ``plan`` fits a call (higher is better), None if it does not: a plan with ``original_called``
    patterns fits only a call whose original called number one matches, and then beats every plan without them."""
    by_called = _best(plan.match, called)
    if by_called is None:
        return None
    if not plan.original_called:
        return False, (False, -1), by_called
    by_original = _best(plan.original_called, original_called) if original_called else None
    return None if by_original is None else (True, by_original, by_called)


def route(plans: Sequence[Dialplan], called: str, original_called: str = "") -> Dialplan | None:
    """The plan with the most specific matching pattern: an exact number beats a pattern, a longer literal prefix
    beats a shorter one (so ``*`` is the catch-all whatever its file name). ``original_called`` (the number a
    forwarded call was first placed to; "" for none) first: a plan whose ``original_called`` patterns match it
    beats the plans that match the called number alone, the most specific of those patterns first."""
    best: tuple[tuple[bool, tuple[bool, int], tuple[bool, int]], Dialplan] | None = None
    for plan in plans:
        rank = _rank(plan, called, original_called)
        if rank is not None and (best is None or rank > best[0]):
            best = (rank, plan)
    return best[1] if best else None


def _variants(plan: Dialplan) -> list[str]:
    spec = plan.rollout_spec
    return [f"{v.name} ({v.dialect}, {v.model})" for v in spec.variants] if spec is not None else []


def _target_url() -> str | None:
    """The endpoint ``serve`` would reach from the environment alone (None: the emulator's or not known)."""
    import os

    from bridge.config import ENV_PREFIX, OPENAI_URL

    given = os.environ.get(f"{ENV_PREFIX}REALTIME_URL")
    return given or (OPENAI_URL if os.environ.get("OPENAI_API_KEY") else None)


def main(argv: list[str]) -> int:
    from bridge.cli import build_parser

    parser = build_parser("dialplan", "dialplan tools")
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser("check", help="validate every dialplan file; name the file and field of each error")
    check.add_argument("paths", nargs="+", type=Path, help="dialplan files or directories")
    check.add_argument("--json", action="store_true", help="{ok, errors, warnings} as JSON")
    check.add_argument(
        "--today", type=dt.date.fromisoformat, help="check the models' shutdown dates as of this day (YYYY-MM-DD)"
    )
    check.add_argument(
        "--realtime-url",
        help="the endpoint the plans' calls will reach (default: CALLBRIDGE_REALTIME_URL, else OpenAI's service "
        "when OPENAI_API_KEY is set, as serve derives it); a dialect that service refuses is an error",
    )
    args = parser.parse_args(argv)
    today = args.today or dt.datetime.now(dt.UTC).date()
    url = args.realtime_url or _target_url()
    files: list[Path] = []
    for p in args.paths:
        files += dialplan_files(p) if p.is_dir() else [p]
    errors: list[ConfigError] = []
    ok: list[Dialplan] = []
    for f in files:
        found = check_file(f)
        if not found:
            plan = _parse(f)
            found = shutdown_errors(plan, today) + service_errors(plan, url, today)
            if not found:
                ok.append(plan)
        errors += found
    warned = [w for p in ok for w in plan_warnings(p)]  # never an error: the exit code is the errors'
    if args.json:
        print(
            json.dumps(
                {
                    "ok": [
                        {
                            "file": p.source_file,
                            "name": p.name,
                            "dialect": p.dialect,
                            "variants": _variants(p),
                            "require_gate": None if p.rollout_spec is None else p.rollout_spec.require_gate,
                        }
                        for p in ok
                    ],
                    "errors": [{"file": e.source, "field": e.field, "message": e.message} for e in errors],
                    "warnings": [{"file": w.source, "field": w.field, "message": w.message} for w in warned],
                }
            )
        )
    else:
        for p in ok:
            spec = p.rollout_spec
            how = p.dialect if spec is None else f"rollout of {', '.join(_variants(p))}; safe {spec.safe}"
            diverted = f" originally to {', '.join(p.original_called)}" if p.original_called else ""
            print(f"ok     {p.source_file}: {p.name} ({how}; matches {', '.join(p.match)}{diverted})")
            if spec is not None:
                print(f"       {gate_line(spec.require_gate, p.name)}")
                print(f"       {probe_line(spec.probes, p.name)}")
        for w in warned:
            print(f"WARNING {w}", file=sys.stderr)
        for e in errors:
            print(f"ERROR  {e}", file=sys.stderr)
        if not files:
            print("no dialplan files found", file=sys.stderr)
    return 2 if errors or not files else 0  # a bad file is a configuration error (bridge/cli.py)
