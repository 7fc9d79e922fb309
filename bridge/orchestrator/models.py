"""The orchestrator's protocol as data: the :class:`TurnRequest` the bridge POSTs after each caller turn, and the
:class:`Decision` it expects back. Both carry ``version`` (:data:`VERSION`); a field is only ever added with a
default, and a change that breaks a peer gets a new version.

Pure: pydantic only. :func:`schema` draws both as one JSON schema (``docs/orchestrator.schema.json``;
``python -m bridge.orchestrator.models --write FILE`` rewrites it, a unit test fails while it is stale).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

VERSION: Literal["1"] = "1"
DTMF_DIGITS = r"^[0-9*#A-D]{1,32}$"  # RFC 4733 telephone events 0-15

Action = Literal["say", "respond", "transfer", "hangup", "send_dtmf", "nothing"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Line(_Model):
    """One line of the call so far."""

    role: Literal["caller", "agent"]
    text: str


class Heard(_Model):
    """A ``say`` the caller spoke over: what the bridge asked to be said, and (an estimate by the share of its audio
    played) what the caller heard of it before they barged in."""

    text: str = Field(description="the text of the say that was interrupted")
    heard: str = Field(description="its first words, as far as the caller heard them")
    played_ms: int = Field(ge=0, description="how much of its audio the caller heard")


class TurnRequest(_Model):
    """What the bridge POSTs (``Content-Type: application/json``) after each final caller transcript, or a key."""

    version: Literal["1"] = VERSION
    call_id: str
    caller: str
    called: str
    dialplan: str
    variant: str = Field(description="the rollout variant of the call (the dialect's name on a pinned plan)")
    dialect: str = Field(description="beta, ga or live")
    event: Literal["turn", "dtmf"] = Field("turn", description="what prompted this request")
    turn: str = Field(description="the caller's words of this turn (empty for a key press)")
    transcript: list[Line] = Field(description="the call so far, this turn included, oldest first")
    dtmf: str = Field("", description="every key the caller pressed so far, in order")
    interrupted: Heard | None = Field(None, description="the say the caller spoke over since the last request")
    sequence: int = Field(ge=1, description="1 for the call's first request, then one more each time")


class Decision(_Model):
    """The orchestrator's answer: one action, with the fields it needs.

    - ``say``: ``text`` is spoken verbatim;
    - ``respond``: the model answers the caller itself, with ``instructions`` added if given;
    - ``transfer``: ``text`` (optional) is spoken, then the call goes to ``target`` (default: the dialplan's
      ``transfer_target``) by a blind transfer (REFER, RFC 3515);
    - ``hangup``: ``text`` (optional) is spoken, then the bridge hangs up;
    - ``send_dtmf``: ``digits`` go to the caller's side as RFC 4733 events;
    - ``nothing``: the bridge listens on.
    """

    version: Literal["1"] = VERSION
    action: Action
    text: str | None = Field(None, min_length=1, max_length=4000)
    instructions: str | None = Field(None, min_length=1, max_length=8000)
    digits: str | None = Field(None, pattern=DTMF_DIGITS)
    target: str | None = Field(None, pattern=r"^sips?:.+@.+")

    @model_validator(mode="after")
    def _fields_for_action(self) -> Decision:
        if self.action == "say" and self.text is None:
            raise ValueError("action 'say' needs 'text'")
        if self.action == "send_dtmf" and self.digits is None:
            raise ValueError("action 'send_dtmf' needs 'digits'")
        return self


def parse_decision(body: bytes) -> Decision:
    """An answer body as a :class:`Decision`. Raises ``ValueError`` (the message says what is wrong, without the
    body): ``invalid JSON ...`` or ``invalid answer: FIELD: ...``."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    try:
        return Decision.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(body)"
        raise ValueError(f"invalid answer: {where}: {err['msg']}") from None


def schema() -> dict[str, Any]:
    """The JSON schema of both messages (``docs/orchestrator.schema.json``)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"callbridge orchestrator protocol, version {VERSION}",
        "description": "TurnRequest: what the bridge POSTs after each caller turn. Decision: what it expects back.",
        "oneOf": [{"$ref": "#/$defs/TurnRequest"}, {"$ref": "#/$defs/Decision"}],
        "$defs": {
            **TurnRequest.model_json_schema(ref_template="#/$defs/{model}")["$defs"],
            "TurnRequest": _own(TurnRequest),
            "Decision": _own(Decision),
        },
    }


def _own(model: type[BaseModel]) -> dict[str, Any]:
    out = model.model_json_schema(ref_template="#/$defs/{model}")
    out.pop("$defs", None)
    return out


def render() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser("python -m bridge.orchestrator.models", description="The protocol's schema.")
    parser.add_argument("--write", type=Path, help="write it to this file (docs/orchestrator.schema.json)")
    args = parser.parse_args(argv)
    if args.write is None:
        sys.stdout.write(render())
    else:
        args.write.write_text(render(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
