"""Dialplans: data files that map called numbers to an agent profile.

A dialplan is one YAML file in ``dialplans/``. Every error names the file and the dotted field path, and
``callbridge dialplan check DIR`` prints all of them (exit 1) or a one-line summary per plan (exit 0).

A plan with ``dialect: rollout`` splits its calls between the variants of its ``rollout`` section
(:class:`bridge.rollout.policy.RolloutSpec`: each variant a dialect, a model, a voice and profile overrides; one of
them safe); without that section it has the two variants of the first rollouts, GA against beta
(:func:`bridge.rollout.policy.legacy_spec`). :meth:`Dialplan.variant_profile` is the profile a variant's call uses.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from bridge.errors import ConfigError
from bridge.realtime.profile import AgentProfile, Tool
from bridge.rollout.policy import RolloutSpec, Variant, legacy_spec

# Tools the call session implements itself (bridge/call/tools.py); a dialplan names them.
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
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = False
    consent_prompt: str | None = None  # spoken before recording starts; required when enabled


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


class Dialplan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    match: tuple[str, ...] = Field(min_length=1)  # called-number globs: "1000", "+1800555*", "*"
    dialect: Literal["beta", "ga", "live", "rollout"] = "ga"
    greeting: str | None = None  # the agent speaks first with these instructions
    transfer_target: str | None = Field(None, pattern=r"^sips?:.+@.+")
    answer_timeout_s: float = Field(3.0, gt=0, le=30)  # answer anyway if the Realtime session is not ready
    profile: AgentProfile = AgentProfile()
    recording: Recording = Recording()
    outage: Outage = Outage()  # the model unreachable: hold, reconnect, then fail over
    allowed_sources: tuple[str, ...] = ()  # CIDRs of trunks allowed to call this plan (empty: any); others get 403
    rollout: RolloutSpec | None = None  # dialect rollout: the variants (None: GA against beta, beta safe)
    orchestrator: Orchestrator | None = None  # the contact center's service decides what the agent says
    source_file: str = Field("", exclude=True)

    @field_validator("allowed_sources")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from bridge.sip.access import parse_networks  # pure (no pjsua2)

        parse_networks(value, "allowed_sources")
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
        if spec is not None and dialect != "rollout":
            raise ValueError(f"a plan with variants has dialect: rollout (this one has {dialect})")
        return spec

    @property
    def rollout_spec(self) -> RolloutSpec | None:
        """The variants of a ``dialect: rollout`` plan (its own, or GA against beta); None for a pinned plan."""
        if self.dialect != "rollout":
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


def _loc(loc: Iterable[int | str]) -> str:
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


def _parse(path: Path) -> Dialplan:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return Dialplan.model_validate({**data, "source_file": str(path)})


def check_file(path: Path) -> list[ConfigError]:
    """Every error in one dialplan file."""
    src = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
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
        return [ConfigError(src, _loc(e["loc"]), e["msg"]) for e in exc.errors()]
    out = _check_dialects(plan, src)
    if "transfer_to_human" in plan.tool_names and not plan.transfer_target:
        out.append(ConfigError(src, "transfer_target", "required when the transfer_to_human tool is enabled"))
    for audio_field in ("hold_audio", "apology_audio"):
        audio = getattr(plan.outage, audio_field)
        if audio is not None and not Path(audio).is_file():
            out.append(ConfigError(src, f"outage.{audio_field}", f"no such file: {audio}"))
    if plan.recording.enabled and not plan.recording.consent_prompt:
        out.append(ConfigError(src, "recording.consent_prompt", "required when recording is enabled"))
    return out


def _check_dialects(plan: Dialplan, src: str) -> list[ConfigError]:
    """A dialect-specific field must build for the dialect(s) this plan can use: its own, or each variant's (with
    the variant's overrides)."""
    from bridge.realtime.dialects import DIALECTS

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
            found.append(ConfigError(src, f"{where}.profile.{_loc(err['loc'])}", err["msg"]))
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


def route(plans: Sequence[Dialplan], called: str) -> Dialplan | None:
    """The plan with the most specific matching pattern: an exact number beats a pattern, a longer literal prefix
    beats a shorter one (so ``*`` is the catch-all whatever its file name)."""
    best: tuple[tuple[bool, int], Dialplan] | None = None
    for plan in plans:
        for pattern in plan.match:
            if fnmatch.fnmatchcase(called, pattern) and (best is None or _specificity(pattern) > best[0]):
                best = (_specificity(pattern), plan)
    return best[1] if best else None


def _variants(plan: Dialplan) -> list[str]:
    spec = plan.rollout_spec
    return [f"{v.name} ({v.dialect}, {v.model})" for v in spec.variants] if spec is not None else []


def main(argv: list[str]) -> int:
    from bridge.cli import build_parser

    parser = build_parser("dialplan", "dialplan tools")
    sub = parser.add_subparsers(dest="action", required=True)
    check = sub.add_parser("check", help="validate every dialplan file; name the file and field of each error")
    check.add_argument("paths", nargs="+", type=Path)
    check.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    files: list[Path] = []
    for p in args.paths:
        files += dialplan_files(p) if p.is_dir() else [p]
    errors: list[ConfigError] = []
    ok: list[Dialplan] = []
    for f in files:
        found = check_file(f)
        errors += found
        if not found:
            ok.append(_parse(f))
    if args.json:
        print(
            json.dumps(
                {
                    "ok": [
                        {"file": p.source_file, "name": p.name, "dialect": p.dialect, "variants": _variants(p)}
                        for p in ok
                    ],
                    "errors": [{"file": e.source, "field": e.field, "message": e.message} for e in errors],
                }
            )
        )
    else:
        for p in ok:
            spec = p.rollout_spec
            how = p.dialect if spec is None else f"rollout of {', '.join(_variants(p))}; safe {spec.safe}"
            print(f"ok     {p.source_file}: {p.name} ({how}; matches {', '.join(p.match)})")
        for e in errors:
            print(f"ERROR  {e}", file=sys.stderr)
        if not files:
            print("no dialplan files found", file=sys.stderr)
    return 1 if errors or not files else 0
